/*
 * ARM semihosting calls (bkpt 0xAB on M-profile): r0 = operation, r1 = argument.
 * QEMU handles them with -semihosting-config enable=on,target=native.
 */
#include <stdint.h>

#define SYS_WRITE0 0x04u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

void semihosting_write0(const char *s);
void semihosting_exit(int code);

static uint32_t semihosting_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;

    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* Write a NUL-terminated string to the host's console. */
void semihosting_write0(const char *s)
{
    (void)semihosting_call(SYS_WRITE0, s);
}

/* Stop the program and hand `code` to the host as its exit status. */
void semihosting_exit(int code)
{
    /* SYS_EXIT_EXTENDED takes a pointer to {reason, subcode}. */
    static uint32_t block[2];

    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)code;
    (void)semihosting_call(SYS_EXIT_EXTENDED, block);
}
