/* Cortex-M3 startup shared by the bootloader and the test application: vector table,
 * .data/.bss set-up, main(); its return value is the semihosting exit code. */
#include <stdint.h>

#include "semihosting.h"

extern uint32_t _estack;
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;

int main(void);
void reset_handler(void);
void default_handler(void);

/* An unexpected exception (HardFault, ...) ends the run with 0x7f, never a hang. */
void default_handler(void)
{
    sh_write0("fault\n");
    sh_exit(0x7f);
}

void reset_handler(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;

    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; dst++) {
        *dst = 0u;
    }
    sh_exit(main());
}

__attribute__((section(".vectors"), used)) void (*const vector_table[16])(void) = {
    (void (*)(void))(&_estack), reset_handler, default_handler, default_handler,
    default_handler, default_handler, default_handler, 0, 0, 0, 0, default_handler,
    default_handler, 0, default_handler, default_handler,
};
