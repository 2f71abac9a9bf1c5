/*
 * A device application: the updater (device/src) over the CMSDK UART (UART0, the frames
 * of src/frame.c: 0x00, COBS of the CBOR and its CRC-32, 0x00; nothing else goes over the
 * UART: the console is semihosting), writing updates to slot B through to the flash file,
 * recording its progress in the state page, and on Swap marking slot B pending and
 * resetting (SYSRESETREQ) into the bootloader. On trial it confirms after Sync; built with
 * APP_CONFIRM=0 it resets on trial before it reports (an image that never gets to confirm),
 * so the bootloader reverts it. A reply that does not come within APP_RECEIVE_MS is an
 * error (a garbled one is skipped: the next good frame is the reply): the next step sends
 * the status again. For tests it stops (semihosting exit) once synced: 0, or 3 on Wait, 1
 * after 8 errors.
 *
 * Built with AJOUR_DELTA=1 (make device APP_DELTA=1, the default) it also applies delta
 * patches: the updater reads the old image from slot A (its MCUboot size: header, image,
 * TLVs) and writes the rebuilt one to slot B through write_block, without a resume point
 * (a power cut restarts the patch at byte 0); swap checks it like a full image.
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
#define ICSR (*(volatile uint32_t *)0xE000ED04u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_COUNTFLAG (1u << 16)
#define ICSR_PENDSTCLR (1u << 25)
#define CPU_HZ 25000000u /* mps2-an385 */
#define TICK_MS 10u

#ifndef APP_CONFIRM
#define APP_CONFIRM 1
#endif
#ifndef APP_RECEIVE_MS
#define APP_RECEIVE_MS 2000u
#endif

static uint8_t buffer[1024];
static boot_state state;

static void uart_put(uint8_t b)
{
    while ((UART_STATE & 1u) != 0u) {
    }
    UART_DATA = b;
}

/* Sleep until a byte is there, at most APP_RECEIVE_MS (-1). The RX interrupt and SysTick
 * (every TICK_MS) are enabled but masked (PRIMASK), so they only wake `wfi`, without a
 * handler. Clearing the RX interrupt before looking at the state means a byte arriving after
 * the look leaves it pending, and `wfi` returns at once. */
static int uart_get(uint8_t *b)
{
    uint32_t ticks = APP_RECEIVE_MS / TICK_MS;
    for (;;) {
        UART_INTCLEAR = 2u;
        NVIC_ICPR0 = 1u << UART0_RX_IRQ;
        if ((UART_STATE & 2u) != 0u) {
            *b = (uint8_t)UART_DATA;
            return 0;
        }
        if ((SYST_CSR & SYST_COUNTFLAG) != 0u) { /* reading clears it */
            ICSR = ICSR_PENDSTCLR;
            if (ticks-- == 0u) {
                return -1;
            }
            continue;
        }
        __asm__ volatile("wfi");
    }
}

static void put_byte(void *ctx, uint8_t b)
{
    (void)ctx;
    uart_put(b);
}

static int send(void *ctx, const uint8_t *frame, size_t len)
{
    (void)ctx;
    while ((UART_STATE & 2u) != 0u) { /* a late reply to an earlier status: drop it */
        (void)UART_DATA;
    }
    ajour_frame_write(frame, len, put_byte, NULL);
    return 0;
}

/* The next good frame: a bad piece (noise, a reply cut short) is skipped, and the frame
 * after it taken; none within APP_RECEIVE_MS of the last byte is a failure. */
static int receive(void *ctx, uint8_t *buf, size_t cap, size_t *len)
{
    ajour_frame_reader r;
    uint8_t b;
    (void)ctx;
    ajour_frame_reader_init(&r, buf, cap);
    for (;;) {
        if (uart_get(&b) != 0) {
            return 1;
        }
        if (ajour_frame_reader_put(&r, b) == 1) {
            *len = r.len;
            return 0;
        }
    }
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
#if AJOUR_DELTA
    if (version_len == 0u) { /* rebuilt from a patch: nothing to resume */
        if (state.progress == 0u && state.version_len == 0u) {
            return 0;
        }
        state.progress = 0u;
        state.version_len = 0u;
        return state_save(&state);
    }
#endif
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

#if AJOUR_DELTA
static uint32_t le(const uint8_t *p, unsigned n)
{
    uint32_t v = 0u;
    while (n-- > 0u) {
        v = v << 8 | p[n];
    }
    return v;
}

/* The size of the MCUboot image in slot A (the bootloader checked it): header, image, the
 * protected TLVs, then the TLV area whose info gives its total. */
static uint32_t running_size(void)
{
    const uint8_t *a = (const uint8_t *)SLOT_A;
    uint32_t end = le(a + 8, 2u) + le(a + 12, 4u) + le(a + 10, 2u);

    if (end > SLOT_SIZE - 4u || le(a + end, 2u) != 0x6907u) {
        return SLOT_SIZE;
    }
    end += le(a + end + 2, 2u);
    return end > SLOT_SIZE ? SLOT_SIZE : end;
}

static int read_running(void *ctx, uint32_t offset, uint8_t *buf, size_t len)
{
    (void)ctx;
    memcpy(buf, (const uint8_t *)SLOT_A + offset, len); /* offset + len <= running_size */
    return 0;
}
#endif

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
    /* QEMU polls the UART's chardev only while the UART can take a byte, and looks again
     * only when its main loop wakes: reading DATA wakes it (accept_input). Without this read,
     * the first reply after enabling RX waited up to 1 s for the main loop's poll timeout. */
    (void)UART_DATA;
    __asm__ volatile("cpsid i");
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    SYST_RVR = CPU_HZ / 1000u * TICK_MS - 1u;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* enabled, the processor clock, the exception pends (only wakes wfi) */
    sh_write0("app " APP_VERSION "\n");
#if !APP_CONFIRM
    if (state.trial != 0u) { /* it fails before it reports: the bootloader reverts it */
        sh_write0("app: fails on trial, reset\n");
        AIRCR = 0x05FA0004u;
        for (;;) {
        }
    }
#endif
    if (state.progress != 0u) {
        sh_write0("app: resume at ");
        sh_write_dec(state.progress);
        sh_write0("\n");
    }
    rc = ajour_updater_init(&u, &p, buffer, sizeof buffer, SLOT_SIZE,
                            (const uint8_t *)running, sizeof running - 1u, state.trial != 0u,
                            state.version, state.version_len, state.progress);
#if AJOUR_DELTA
    if (rc == AJOUR_OK) {
        rc = ajour_updater_enable_delta(&u, read_running, running_size());
    }
#endif
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
