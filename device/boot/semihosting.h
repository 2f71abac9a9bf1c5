#ifndef AJOUR_BOOT_SEMIHOSTING_H
#define AJOUR_BOOT_SEMIHOSTING_H
#include <stdint.h>

#define SH_MODE_RB 1u  /* fopen "rb" */
#define SH_MODE_RWB 3u /* fopen "r+b" */

void sh_write0(const char *s);
void sh_exit(int code) __attribute__((noreturn));
int sh_open(const char *name, uint32_t mode);
uint32_t sh_read(int fd, void *buf, uint32_t len);
int32_t sh_flen(int fd);
void sh_close(int fd);
uint32_t sh_write(int fd, const void *buf, uint32_t len);
int sh_seek(int fd, uint32_t pos);
void sh_write_hex(uint32_t v);
void sh_write_dec(uint32_t v);
#endif
