/* ARM semihosting (bkpt 0xAB): console, exit and host files. QEMU: -semihosting-config
 * enable=on,target=native. */
#include <stdint.h>

#include "semihosting.h"

static uint32_t call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;

    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void sh_write0(const char *s)
{
    (void)call(0x04u, s);
}

void sh_exit(int code)
{
    static uint32_t block[2];

    block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)code;
    (void)call(0x20u, block);
    for (;;) {
    }
}

int sh_open(const char *name, uint32_t mode)
{
    uint32_t block[3];
    uint32_t len = 0u;

    while (name[len] != '\0') {
        len++;
    }
    block[0] = (uint32_t)(uintptr_t)name;
    block[1] = mode;
    block[2] = len;
    return (int)call(0x01u, block);
}

/* Bytes read (the call itself returns the bytes not read). */
uint32_t sh_read(int fd, void *buf, uint32_t len)
{
    uint32_t block[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, len};
    return len - call(0x06u, block);
}

int32_t sh_flen(int fd)
{
    uint32_t block[1] = {(uint32_t)fd};
    return (int32_t)call(0x0Cu, block);
}

void sh_close(int fd)
{
    uint32_t block[1] = {(uint32_t)fd};
    (void)call(0x02u, block);
}

void sh_write_hex(uint32_t v)
{
    char s[11];
    int i;

    s[0] = '0';
    s[1] = 'x';
    for (i = 0; i < 8; i++) {
        s[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xFu];
    }
    s[10] = '\0';
    sh_write0(s);
}

void sh_write_dec(uint32_t v)
{
    char s[11];
    int i = 10;

    s[i] = '\0';
    do {
        s[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    sh_write0(&s[i]);
}

/* Bytes written. */
uint32_t sh_write(int fd, const void *buf, uint32_t len)
{
    uint32_t block[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, len};
    return len - call(0x05u, block);
}

int sh_seek(int fd, uint32_t pos)
{
    uint32_t block[2] = {(uint32_t)fd, pos};
    return (int)call(0x0Au, block);
}
