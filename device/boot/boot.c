/*
 * The bootloader for QEMU's mps2-an385: load the emulated flash from the host file; revert
 * an update that ran on trial without confirming, or try a pending one from slot B (checked
 * first), swapping the slots; then check slot A's MCUboot image (header, TLVs, SHA-256),
 * print its version and jump to it; built with a key, images must carry its ED25519
 * signature. Not yet: a power-safe swap (device/README.md).
 */
#include <stdint.h>
#include <string.h>

#include "image.h"
#include "layout.h"
#include "semihosting.h"
#include "state.h"

/* The key images must be signed with (imgtool getpub, raw 32 bytes): built in with
 * BOOT_PUBKEY=0x..,0x.. (make). Without it only the SHA-256 is checked. */
#ifdef BOOT_PUBKEY
static const uint8_t pubkey[32] = {BOOT_PUBKEY};
#define PUBKEY pubkey
#define CHECKED "SHA-256 and ED25519 ok"
#else
#define PUBKEY 0
#define CHECKED "SHA-256 ok"
#endif

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

/* Write the whole emulated flash back to the host file: one write (not power-safe yet). */
static int persist(const uint8_t *flash)
{
    int fd = sh_open(FLASH_FILE, SH_MODE_RWB);
    int ok;

    if (fd < 0) {
        return -1;
    }
    ok = sh_seek(fd, 0u) == 0 && sh_write(fd, flash, FLASH_SIZE) == FLASH_SIZE;
    sh_close(fd);
    return ok ? 0 : -1;
}

static void swap_slots(uint8_t *flash)
{
    uint32_t i;

    for (i = 0u; i < SLOT_SIZE; i++) {
        uint8_t t = flash[i];
        flash[i] = flash[SLOT_SIZE + i];
        flash[SLOT_SIZE + i] = t;
    }
}

/* Revert an unconfirmed trial, or start the trial of a pending update. */
static int update_slots(uint8_t *flash)
{
    boot_state st;
    image_info info;
    image_result r;

    memcpy(&st, flash + (STATE_PAGE - FLASH_BASE), sizeof st);
    if (st.magic != STATE_MAGIC || (st.trial == 0u && st.pending == 0u)) {
        return 0;
    }
    if (st.trial != 0u) {
        swap_slots(flash);
        st.trial = 0u;
        sh_write0("boot: the update on trial was not confirmed: reverted\n");
    } else {
        r = image_check(flash + SLOT_SIZE, SLOT_SIZE, PUBKEY, &info);
        if (r == IMAGE_OK) {
            swap_slots(flash);
            st.trial = 1u;
            sh_write0("boot: slot B ");
            print_version(&info);
            sh_write0(" swapped in, on trial\n");
        } else {
            sh_write0("boot: slot B refused: ");
            sh_write0(image_reason(r));
            sh_write0("\n");
        }
    }
    st.pending = 0u;
    memcpy(flash + (STATE_PAGE - FLASH_BASE), &st, sizeof st);
    return persist(flash);
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
    if (update_slots(flash) != 0) {
        sh_write0("boot: cannot write " FLASH_FILE "\n");
        return 2;
    }
    r = image_check(flash, SLOT_SIZE, PUBKEY, &info);
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
    sh_write0(" bytes, " CHECKED ")\n");
    jump(vectors);
}
