/*
 * The emulated flash of the mps2-an385 device (see device/README.md, "The bootloader").
 *
 * QEMU reloads -kernel images on every reset and has no pflash on this machine, so the
 * bootloader is the loaded image (like a ROM) and the slots are RAM after it, mirrored in a
 * host file through semihosting: flash.bin in QEMU's working directory, FLASH_BASE onward.
 * A new QEMU process on the same file is a power cycle.
 */
#ifndef AJOUR_BOOT_LAYOUT_H
#define AJOUR_BOOT_LAYOUT_H

#define BOOT_BASE 0x00000000u /* the bootloader, 64 KiB */
#define FLASH_BASE 0x00010000u
#define SLOT_SIZE 0x00040000u /* 256 KiB each */
#define SLOT_A (FLASH_BASE)                /* primary: the image that boots */
#define SLOT_B (FLASH_BASE + SLOT_SIZE)    /* secondary: where updates are written */
#define STATE_PAGE (FLASH_BASE + 2u * SLOT_SIZE) /* trial/confirm state (4 KiB) */
#define STATE_SIZE 0x00001000u
#define FLASH_SIZE (2u * SLOT_SIZE + STATE_SIZE)
#define HEADER_SIZE 0x200u /* imgtool -H: the application is linked at SLOT_A + this */
#define FLASH_FILE "flash.bin"

#endif
