/*
 * A device application: the updater (device/src) over the CMSDK UART (UART0, frames of a
 * 4-byte big-endian length and the CBOR), writing updates to slot B through to the flash
 * file, recording its progress in the state page, and on Swap marking slot B pending and
 * resetting (SYSRESETREQ) into the bootloader. On trial it confirms after Sync.
 * For tests it stops (semihosting exit) once synced: 0, or 3 on Wait, 1 on errors.
 */
#include <string.h>

#include "../layout.h"
#include "../semihosting.h"
#include "../state.h"
#include "ajour_update.h"

#ifndef APP_VERSION
#error "build with -DAPP_VERSION='\"x.y.z\"'"
#endif

#define UART0 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0 + 0x0u))
#define UART_STATE (*(volatile uint32_t *)(UART0 + 0x4u))
#define UART_CTRL (*(volatile uint32_t *)(UART0 + 0x8u))
#define UART_INTCLEAR (*(volatile uint32_t *)(UART0 + 0xCu))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0 + 0x10u))
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define NVIC_ICPR0 (*(volatile uint32_t *)0xE000E280u)
#define UART0_RX_IRQ 0u /* QEMU's mps2-an385 */
#define AIRCR (*(volatile uint32_t *)0xE000ED0Cu)

static uint8_t buffer[1024];
static boot_state state;

static void uart_put(uint8_t b)
{
    while ((UART_STATE & 1u) != 0u) {
    }
    UART_DATA = b;
}

/* Sleep until a byte is there: the RX interrupt is enabled in the NVIC but masked
 * (PRIMASK), so it only wakes `wfi`, without a handler. Clearing it before looking at the
 * state means a byte arriving after the look leaves it pending, and `wfi` returns at once. */
static uint8_t uart_get(void)
{
    for (;;) {
        UART_INTCLEAR = 2u;
        NVIC_ICPR0 = 1u << UART0_RX_IRQ;
        if ((UART_STATE & 2u) != 0u) {
            return (uint8_t)UART_DATA;
        }
        __asm__ volatile("wfi");
    }
}

static int send(void *ctx, const uint8_t *frame, size_t len)
{
    size_t i;
    (void)ctx;
    for (i = 0u; i < 4u; i++) {
        uart_put((uint8_t)(len >> (24u - 8u * i)));
    }
    for (i = 0u; i < len; i++) {
        uart_put(frame[i]);
    }
    return 0;
}

static int receive(void *ctx, uint8_t *buf, size_t cap, size_t *len)
{
    uint32_t n = 0u;
    uint32_t i;
    (void)ctx;
    for (i = 0u; i < 4u; i++) {
        n = n << 8 | uart_get();
    }
    if (n > cap) {
        for (i = 0u; i < n; i++) {
            (void)uart_get();
        }
        return 1;
    }
    for (i = 0u; i < n; i++) {
        buf[i] = uart_get();
    }
    *len = n;
    return 0;
}

static int write_through(uint32_t address, const void *data, uint32_t len)
{
    int fd = sh_open(FLASH_FILE, SH_MODE_RWB);
    int ok;
    if (fd < 0) {
        return -1;
    }
    ok = sh_seek(fd, address - FLASH_BASE) == 0 && sh_write(fd, data, len) == len;
    sh_close(fd);
    return ok ? 0 : -1;
}

static int write_block(void *ctx, const uint8_t *version, size_t version_len, uint32_t offset,
                       const uint8_t *data, size_t len)
{
    (void)ctx;
    memcpy((uint8_t *)SLOT_B + offset, data, len);
    if (write_through(SLOT_B + offset, data, (uint32_t)len) != 0) {
        return 1;
    }
    state.progress = offset + (uint32_t)len;
    state.version_len = (uint32_t)version_len;
    memcpy(state.version, version, version_len);
    return state_save(&state);
}

static int swap(void *ctx, const uint8_t *version, size_t version_len, uint32_t size,
                const uint8_t checksum[AJOUR_SHA256_LEN])
{
    ajour_sha256 s;
    uint8_t digest[AJOUR_SHA256_LEN];
    (void)ctx;
    (void)version;
    (void)version_len;
    ajour_sha256_init(&s);
    ajour_sha256_update(&s, (const uint8_t *)SLOT_B, size);
    ajour_sha256_final(&s, digest);
    for (size_t i = 0u; i < AJOUR_SHA256_LEN; i++) {
        if (digest[i] != checksum[i]) {
            return 1;
        }
    }
    state.pending = 1u;
    state.progress = 0u;
    state.version_len = 0u;
    return state_save(&state);
}

static int confirm(void *ctx)
{
    (void)ctx;
    state.trial = 0u;
    if (state_save(&state) != 0) {
        return 1;
    }
    sh_write0("app: confirmed\n");
    return 0;
}

int main(void)
{
    static const char running[] = APP_VERSION;
    ajour_platform p = {0, send, receive, write_block, swap, confirm};
    ajour_updater u;
    int errors = 0;
    int rc;

    state = *(const boot_state *)STATE_PAGE;
    if (state.magic != STATE_MAGIC) {
        memset(&state, 0, sizeof state);
        state.magic = STATE_MAGIC;
    }
    if (state.version_len > sizeof state.version || state.progress > SLOT_SIZE ||
        state.version_len == 0u) {
        state.version_len = 0u;
        state.progress = 0u;
    }
    UART_BAUDDIV = 16u;
    UART_CTRL = 3u | 8u; /* TX and RX enabled, RX interrupt (to wake wfi) */
    __asm__ volatile("cpsid i");
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    sh_write0("app " APP_VERSION "\n");
    if (state.progress != 0u) {
        sh_write0("app: resume at ");
        sh_write_dec(state.progress);
        sh_write0("\n");
    }
    rc = ajour_updater_init(&u, &p, buffer, sizeof buffer, SLOT_SIZE,
                            (const uint8_t *)running, sizeof running - 1u, state.trial != 0u,
                            state.version, state.version_len, state.progress);
    while (rc == AJOUR_OK) {
        rc = ajour_updater_step(&u);
        if (rc == AJOUR_STEP_WROTE) {
            rc = AJOUR_OK;
        } else if (rc == AJOUR_STEP_SWAP || rc == AJOUR_STEP_REVERT) {
            sh_write0(rc == AJOUR_STEP_SWAP ? "app: swap, reset\n" : "app: revert, reset\n");
            AIRCR = 0x05FA0004u; /* SYSRESETREQ: the bootloader runs again */
            for (;;) {
            }
        } else if (rc == AJOUR_STEP_SYNCED) {
            sh_write0("app: synced " APP_VERSION "\n");
            return 0;
        } else if (rc == AJOUR_STEP_WAIT) {
            return 3;
        } else if (++errors < 8) {
            sh_write0("app: error ");
            sh_write_dec((uint32_t)-rc);
            sh_write0("\n");
            rc = AJOUR_OK;
        }
    }
    return 1;
}
