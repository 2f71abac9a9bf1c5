/*
 * The bootloader for QEMU's mps2-an385: load the emulated flash from the host file, check
 * slot A's MCUboot image (header, TLVs, SHA-256), print its version and jump to it.
 * Signature check, trial boot, swap and revert: not yet (device/README.md).
 */
#include <stdint.h>
#include <string.h>

#include "image.h"
#include "layout.h"
#include "semihosting.h"

#define VTOR (*(volatile uint32_t *)0xE000ED08u)
#define RAM_START 0x20000000u
#define RAM_END 0x20400000u

static void print_version(const image_info *info)
{
    sh_write_dec(info->major);
    sh_write0(".");
    sh_write_dec(info->minor);
    sh_write0(".");
    sh_write_dec(info->revision);
    sh_write0("+");
    sh_write_dec(info->build);
}

/* Power-on: the slots come from the host file; what it lacks reads as erased (0xff). */
static int load_flash(uint8_t *flash)
{
    int fd = sh_open(FLASH_FILE, SH_MODE_RB);
    uint32_t got = 0u;

    if (fd < 0) {
        return -1;
    }
    got = sh_read(fd, flash, FLASH_SIZE);
    sh_close(fd);
    memset(flash + got, 0xFF, FLASH_SIZE - got);
    return 0;
}

static void __attribute__((noreturn)) jump(uint32_t vectors)
{
    uint32_t sp = ((const uint32_t *)vectors)[0];
    uint32_t pc = ((const uint32_t *)vectors)[1];

    VTOR = vectors;
    __asm__ volatile("msr msp, %0\n\tbx %1" : : "r"(sp), "r"(pc) : "memory");
    for (;;) {
    }
}

int main(void)
{
    uint8_t *flash = (uint8_t *)FLASH_BASE;
    image_info info;
    image_result r;
    uint32_t vectors, sp, pc;

    if (load_flash(flash) != 0) {
        sh_write0("boot: cannot open " FLASH_FILE "\n");
        return 2;
    }
    r = image_check(flash, SLOT_SIZE, &info);
    if (r != IMAGE_OK) {
        sh_write0("boot: slot A refused: ");
        sh_write0(image_reason(r));
        sh_write0("\n");
        return 1;
    }
    vectors = SLOT_A + info.hdr_size;
    sp = ((const uint32_t *)vectors)[0];
    pc = ((const uint32_t *)vectors)[1];
    if (sp <= RAM_START || sp > RAM_END || (pc & 1u) == 0u || pc < vectors ||
        pc - vectors >= info.img_size || (vectors & 0x7Fu) != 0u) {
        sh_write0("boot: slot A refused: bad vector table\n");
        return 1;
    }
    sh_write0("boot: slot A ");
    print_version(&info);
    sh_write0(" (");
    sh_write_dec(info.img_size);
    sh_write0(" bytes, SHA-256 ok)\n");
    jump(vectors);
}
