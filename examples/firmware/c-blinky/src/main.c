/*
 * c-blinky: prints its stamped firmware version over semihosting, "blinks"
 * an LED a few times, then exits with code 0.
 */
#include <stdint.h>

#ifndef AJOUR_FIRMWARE_VERSION
#error "AJOUR_FIRMWARE_VERSION must be defined at build time (see Makefile)"
#endif

void semihosting_write0(const char *s);

/* MPS2 FPGA IO block (FPGAIO): LED register at 0x40028000, bits 0-1 = LEDs. */
#define FPGAIO_LED (*(volatile uint32_t *)0x40028000u)

#define BLINKS 4u
#define DELAY_LOOPS 100000u

static const char version_line[] =
    "AJOUR_FIRMWARE_VERSION=" AJOUR_FIRMWARE_VERSION "\n";

static void delay(void)
{
    for (volatile uint32_t i = 0; i < DELAY_LOOPS; i++) {
    }
}

int main(void)
{
    semihosting_write0(version_line);

    for (uint32_t n = 0; n < BLINKS * 2u; n++) {
        FPGAIO_LED ^= 1u;
        delay();
    }
    FPGAIO_LED = 0u;

    return 0;
}
