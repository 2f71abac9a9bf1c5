/*
 * The state page (layout.h: STATE_PAGE, 4 KiB; the first 56 bytes are used), little-endian:
 *   magic    0x54534a41 ("AJST"); anything else reads as "nothing pending"
 *   pending  1: slot B holds a complete update, try it at the next boot
 *   trial    1: slot A runs an update on trial, slot B holds the image before it
 *   reserved 0
 *   progress, version_len, version[32]: slot B holds `progress` bytes of `version` (the
 *            updater's resume point; the application's, the bootloader ignores them)
 * The updater's write/swap callbacks set `pending`; the application clears `trial` when it
 * confirms; the bootloader does the rest (boot.c).
 */
#ifndef AJOUR_BOOT_STATE_H
#define AJOUR_BOOT_STATE_H
#include <stdint.h>

#define STATE_MAGIC 0x54534a41u

typedef struct {
    uint32_t magic;
    uint32_t pending;
    uint32_t trial;
    uint32_t reserved;
    uint32_t progress;
    uint32_t version_len;
    uint8_t version[32];
} boot_state;

/* Write the state page of the emulated flash through to the host file; 0 on success. */
int state_save(const boot_state *st);
#endif
