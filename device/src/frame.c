/*
 * The UART framing (ajour_update.h, "the UART framing"): 0x00, COBS(payload, CRC-32
 * big-endian), 0x00, written and read one byte at a time, with no buffer but the caller's
 * payload buffer and the reader's 4-byte tail. delivery/frames.py is the other end;
 * device/tests/uart-frames.tsv holds the bytes both must agree on.
 */
#include "ajour_update.h"

#define CRC_INIT 0xFFFFFFFFu

static uint32_t crc_byte(uint32_t reg, uint8_t b)
{
    unsigned k;
    reg ^= b;
    for (k = 0u; k < 8u; k++) {
        reg = (reg >> 1) ^ (0xEDB88320u & (0u - (reg & 1u)));
    }
    return reg;
}

uint32_t ajour_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    uint32_t reg = ~crc;
    size_t i;
    for (i = 0u; i < len; i++) {
        reg = crc_byte(reg, data[i]);
    }
    return ~reg;
}

/* Byte i of payload[0..len) followed by its CRC. */
static uint8_t at(const uint8_t *payload, size_t len, const uint8_t crc[AJOUR_FRAME_CRC],
                  size_t i)
{
    return i < len ? payload[i] : crc[i - len];
}

void ajour_frame_write(const uint8_t *payload, size_t len, void (*put)(void *ctx, uint8_t b),
                       void *ctx)
{
    uint8_t crc[AJOUR_FRAME_CRC];
    uint32_t c = ajour_crc32(0u, payload, len);
    size_t total = len + AJOUR_FRAME_CRC;
    size_t i = 0u;
    size_t n;
    size_t k;

    crc[0] = (uint8_t)(c >> 24);
    crc[1] = (uint8_t)(c >> 16);
    crc[2] = (uint8_t)(c >> 8);
    crc[3] = (uint8_t)c;
    put(ctx, 0u);
    for (;;) { /* a block: its code (1 + the non-zero bytes in it), then those bytes */
        for (n = 0u; n < 254u && i + n < total && at(payload, len, crc, i + n) != 0u; n++) {
        }
        put(ctx, (uint8_t)(n + 1u));
        for (k = 0u; k < n; k++) {
            put(ctx, at(payload, len, crc, i + k));
        }
        i += n;
        if (i == total) {
            break;
        }
        if (n < 254u) {
            i++; /* the 0x00 the code stands for */
        }
    }
    put(ctx, 0u);
}

void ajour_frame_reader_init(ajour_frame_reader *r, uint8_t *buf, size_t cap)
{
    r->buf = buf;
    r->cap = cap;
    r->len = 0u;
    r->crc = CRC_INIT;
    r->seen = 0u;
    r->left = 0u;
    r->zero = 0u;
    r->state = 0u;
}

/* One decoded byte: it enters the tail; the byte it pushes out is payload. */
static void decoded(ajour_frame_reader *r, uint8_t b)
{
    uint8_t out = r->tail[0];
    if (r->seen < AJOUR_FRAME_CRC) {
        r->tail[r->seen++] = b;
        return;
    }
    r->tail[0] = r->tail[1];
    r->tail[1] = r->tail[2];
    r->tail[2] = r->tail[3];
    r->tail[3] = b;
    if (r->len >= r->cap) {
        r->state = 2u; /* too long: drop it up to its marker */
        return;
    }
    r->buf[r->len++] = out;
    r->crc = crc_byte(r->crc, out);
}

int ajour_frame_reader_put(ajour_frame_reader *r, uint8_t b)
{
    uint8_t state = r->state;
    uint32_t want;

    if (b == 0u) { /* the marker: the piece since the last one ends */
        r->state = 0u;
        if (state == 0u) {
            return 0; /* nothing between two markers */
        }
        if (state == 2u) {
            return AJOUR_E_BUFFER;
        }
        if (r->left != 0u || r->seen < AJOUR_FRAME_CRC) {
            return AJOUR_E_FRAME; /* a block cut short, or no room for a CRC */
        }
        want = (uint32_t)r->tail[0] << 24 | (uint32_t)r->tail[1] << 16 |
               (uint32_t)r->tail[2] << 8 | r->tail[3];
        return ~r->crc == want ? 1 : AJOUR_E_FRAME;
    }
    if (state == 2u) {
        return 0;
    }
    if (state == 0u) {
        ajour_frame_reader_init(r, r->buf, r->cap);
        r->state = 1u;
    }
    if (r->left == 0u) { /* a code byte: the last block's 0x00 (if any), then b - 1 bytes */
        if (r->zero != 0u) {
            decoded(r, 0u);
        }
        r->left = (uint8_t)(b - 1u);
        r->zero = (uint8_t)(b != 0xFFu);
    } else {
        decoded(r, b);
        r->left--;
    }
    return 0;
}
