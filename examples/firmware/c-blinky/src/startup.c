/*
 * Minimal Cortex-M3 startup for QEMU mps2-an385: vector table and reset
 * handler, no libc. The reset handler sets up .data/.bss and calls main().
 */
#include <stdint.h>

extern uint32_t _estack;
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;

int main(void);
void semihosting_exit(int code);

void reset_handler(void);
void default_handler(void);

/* Any unexpected exception (HardFault, ...) ends the run with a failure code
 * instead of hanging QEMU forever. */
void default_handler(void)
{
    semihosting_exit(0x7f);
    for (;;) {
    }
}

void reset_handler(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;

    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0;
    }

    semihosting_exit(main());
    for (;;) {
    }
}

/* The first 16 entries of the Cortex-M vector table; external IRQs are unused. */
__attribute__((section(".vectors"), used))
void (*const vector_table[16])(void) = {
    (void (*)(void))(&_estack), /* 0: initial stack pointer */
    reset_handler,              /* 1: reset */
    default_handler,            /* 2: NMI */
    default_handler,            /* 3: HardFault */
    default_handler,            /* 4: MemManage */
    default_handler,            /* 5: BusFault */
    default_handler,            /* 6: UsageFault */
    0, 0, 0, 0,                 /* 7-10: reserved */
    default_handler,            /* 11: SVCall */
    default_handler,            /* 12: DebugMonitor */
    0,                          /* 13: reserved */
    default_handler,            /* 14: PendSV */
    default_handler,            /* 15: SysTick */
};
