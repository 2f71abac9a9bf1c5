/*
 * A streaming applier for detools sequential patches (compression none or crle), step for
 * step delivery/delta.py: a header byte, the new image's size, then (CRLE-compressed)
 * records of diff bytes (added to the old image's), extra bytes and an adjustment of the
 * old position. See include/ajour_delta.h.
 */
#include <string.h>

#include "ajour_delta.h"

enum { STAGE_HEADER, STAGE_SIZE, STAGE_BODY };
enum { DF_SIZE, DIFF_SIZE, DIFF, EXTRA_SIZE, EXTRA, ADJUST, DONE };
enum { CRLE_KIND, CRLE_LENGTH, CRLE_SCATTERED, CRLE_REPEATED };

#define SEQUENTIAL 0u
#define COMPRESSION_NONE 0u
#define COMPRESSION_CRLE 2u
#define MAX_SIZE_BYTES 10u
#define HUGE_VALUE ((uint64_t)1 << 62) /* sizes are saturated here: no u64 overflow */

static int fail(ajour_delta *d, int error)
{
    d->error = error;
    return error;
}

/* One byte of a detools size: 1 when the size is complete (in *out), 0 when more bytes
 * follow, or an error. */
static int size_byte(ajour_delta *d, uint8_t byte, int64_t *out)
{
    uint64_t bits;

    if (d->count == 0u) {
        d->value = byte & 0x3Fu;
        d->shift = 6u;
        d->negative = (uint8_t)((byte & 0x40u) != 0u);
    } else {
        bits = (uint64_t)(byte & 0x7Fu);
        if (d->shift < 62u) {
            d->value |= bits << d->shift;
        } else if (bits != 0u) {
            d->value = HUGE_VALUE;
        }
        if (d->value > HUGE_VALUE) {
            d->value = HUGE_VALUE;
        }
        d->shift = (uint8_t)(d->shift + 7u);
    }
    d->count++;
    if ((byte & 0x80u) == 0u) {
        *out = d->negative ? -(int64_t)d->value : (int64_t)d->value;
        d->value = 0u;
        d->shift = 0u;
        d->count = 0u;
        return 1;
    }
    if (d->count >= MAX_SIZE_BYTES) {
        return fail(d, AJOUR_DELTA_E_MALFORMED);
    }
    return 0;
}

static int record(ajour_delta *d, int64_t value)
{
    uint32_t room = d->new_size - d->written;

    switch (d->state) {
    case DF_SIZE:
        if (value != 0) {
            return fail(d, AJOUR_DELTA_E_UNSUPPORTED);
        }
        d->state = DIFF_SIZE;
        return AJOUR_DELTA_OK;
    case DIFF_SIZE:
    case EXTRA_SIZE:
        if (value < 0 || value > (int64_t)room) {
            return fail(d, AJOUR_DELTA_E_RANGE);
        }
        if (d->state == DIFF_SIZE) {
            d->records++;
            if ((uint64_t)d->records > (uint64_t)d->new_size + 2u) {
                return fail(d, AJOUR_DELTA_E_MALFORMED);
            }
        }
        d->left = (uint32_t)value;
        if (d->state == DIFF_SIZE) {
            d->state = value != 0 ? DIFF : EXTRA_SIZE;
        } else {
            d->state = value != 0 ? EXTRA : ADJUST;
        }
        return AJOUR_DELTA_OK;
    default: /* ADJUST */
        if (value > (int64_t)UINT32_MAX || value < -(int64_t)UINT32_MAX) {
            return fail(d, AJOUR_DELTA_E_RANGE);
        }
        d->old_pos += value;
        if (d->old_pos > (int64_t)HUGE_VALUE) {
            d->old_pos = (int64_t)HUGE_VALUE;
        } else if (d->old_pos < -(int64_t)HUGE_VALUE) {
            d->old_pos = -(int64_t)HUGE_VALUE;
        }
        d->state = d->written == d->new_size ? DONE : DIFF_SIZE;
        return AJOUR_DELTA_OK;
    }
}

/* n diff bytes: each added to the old image's byte at old_pos. */
static int diff(ajour_delta *d, const uint8_t *p, size_t n)
{
    uint8_t old[AJOUR_DELTA_CHUNK];
    size_t k;
    size_t i;

    while (n > 0u) {
        k = n < sizeof old ? n : sizeof old;
        if (d->old_pos < 0 || d->old_pos + (int64_t)k > (int64_t)d->old_size) {
            return fail(d, AJOUR_DELTA_E_RANGE);
        }
        if (d->read(d->ctx, (uint32_t)d->old_pos, old, k) != 0) {
            return fail(d, AJOUR_DELTA_E_IO);
        }
        for (i = 0u; i < k; i++) {
            old[i] = (uint8_t)(old[i] + p[i]);
        }
        if (d->write(d->ctx, old, k) != 0) {
            return fail(d, AJOUR_DELTA_E_IO);
        }
        d->old_pos += (int64_t)k;
        p += k;
        n -= k;
    }
    return AJOUR_DELTA_OK;
}

/* Decompressed bytes into the record parser; raw: they are patch bytes as they are. */
static int records(ajour_delta *d, const uint8_t *p, size_t n, int raw)
{
    size_t k;
    int64_t value;
    int rc;

    while (n > 0u) {
        if (d->state == DIFF || d->state == EXTRA) {
            k = n < d->left ? n : d->left;
            rc = d->state == DIFF ? diff(d, p, k)
                                  : (d->write(d->ctx, p, k) != 0 ? fail(d, AJOUR_DELTA_E_IO)
                                                                 : AJOUR_DELTA_OK);
            if (rc != AJOUR_DELTA_OK) {
                return rc;
            }
            if (raw) {
                d->consumed += (uint32_t)k;
            }
            d->written += (uint32_t)k;
            d->left -= (uint32_t)k;
            p += k;
            n -= k;
            if (d->left == 0u) {
                d->state = d->state == DIFF ? EXTRA_SIZE : ADJUST;
            }
            continue;
        }
        if (d->state == DONE) {
            return fail(d, AJOUR_DELTA_E_TRAILING);
        }
        rc = size_byte(d, *p, &value);
        if (rc < 0) {
            return rc;
        }
        if (raw) {
            d->consumed++;
        }
        p++;
        n--;
        if (rc == 1 && (rc = record(d, value)) != AJOUR_DELTA_OK) {
            return rc;
        }
    }
    return AJOUR_DELTA_OK;
}

static int crle_length(ajour_delta *d, uint8_t byte)
{
    uint64_t bits = (uint64_t)(byte & 0x7Fu);

    if (d->crle_shift < 57u) {
        d->crle_value |= bits << d->crle_shift;
    } else if (bits != 0u) {
        d->crle_value = HUGE_VALUE;
    }
    d->crle_shift = (uint8_t)(d->crle_shift + 7u);
    d->crle_count++;
    if ((byte & 0x80u) != 0u) {
        return d->crle_count >= MAX_SIZE_BYTES ? fail(d, AJOUR_DELTA_E_MALFORMED)
                                               : AJOUR_DELTA_OK;
    }
    d->crle_left = d->crle_value;
    d->crle_value = 0u;
    d->crle_shift = 0u;
    d->crle_count = 0u;
    if (d->crle_kind == 0u) {
        d->crle_state = d->crle_left != 0u ? CRLE_SCATTERED : CRLE_KIND;
    } else {
        d->crle_state = CRLE_REPEATED;
    }
    return AJOUR_DELTA_OK;
}

static int crle(ajour_delta *d, const uint8_t *p, size_t n)
{
    uint8_t run[AJOUR_DELTA_CHUNK];
    size_t k;
    int rc;

    while (n > 0u) {
        switch (d->crle_state) {
        case CRLE_SCATTERED:
            k = (uint64_t)n < d->crle_left ? n : (size_t)d->crle_left;
            if ((rc = records(d, p, k, 1)) != AJOUR_DELTA_OK) {
                return rc;
            }
            d->crle_left -= k;
            p += k;
            n -= k;
            if (d->crle_left == 0u) {
                d->crle_state = CRLE_KIND;
            }
            break;
        case CRLE_REPEATED:
            memset(run, *p, sizeof run);
            d->consumed++;
            p++;
            n--;
            while (d->crle_left > 0u) {
                k = d->crle_left < sizeof run ? (size_t)d->crle_left : sizeof run;
                if ((rc = records(d, run, k, 0)) != AJOUR_DELTA_OK) {
                    return rc;
                }
                d->crle_left -= k;
            }
            d->crle_state = CRLE_KIND;
            break;
        case CRLE_KIND:
            if (d->state == DONE) {
                return fail(d, AJOUR_DELTA_E_TRAILING);
            }
            if (*p > 1u) {
                return fail(d, AJOUR_DELTA_E_MALFORMED);
            }
            d->crle_kind = *p;
            d->crle_state = CRLE_LENGTH;
            d->consumed++;
            p++;
            n--;
            break;
        default: /* CRLE_LENGTH */
            d->consumed++;
            if ((rc = crle_length(d, *p)) != AJOUR_DELTA_OK) {
                return rc;
            }
            p++;
            n--;
            break;
        }
    }
    return AJOUR_DELTA_OK;
}

int ajour_delta_init(ajour_delta *d, ajour_delta_read_fn read, ajour_delta_write_fn write,
                     void *ctx, uint32_t old_size, uint32_t max_size)
{
    if (d == NULL || read == NULL || write == NULL) {
        return AJOUR_DELTA_E_ARG;
    }
    memset(d, 0, sizeof *d);
    d->read = read;
    d->write = write;
    d->ctx = ctx;
    d->old_size = old_size;
    d->max_size = max_size;
    d->stage = STAGE_HEADER;
    d->state = DF_SIZE;
    d->crle_state = CRLE_KIND;
    return AJOUR_DELTA_OK;
}

static int header(ajour_delta *d, uint8_t byte)
{
    int64_t size;
    int rc;

    d->consumed++;
    if (d->stage == STAGE_HEADER) {
        if ((byte & 0x80u) != 0u || ((byte >> 4) & 0x7u) != SEQUENTIAL ||
            ((byte & 0xFu) != COMPRESSION_NONE && (byte & 0xFu) != COMPRESSION_CRLE)) {
            return fail(d, AJOUR_DELTA_E_HEADER);
        }
        d->compression = (uint8_t)(byte & 0xFu);
        d->stage = STAGE_SIZE;
        return AJOUR_DELTA_OK;
    }
    rc = size_byte(d, byte, &size);
    if (rc <= 0) {
        return rc;
    }
    if (size < 0 || size > (int64_t)d->max_size) {
        return fail(d, AJOUR_DELTA_E_RANGE);
    }
    d->new_size = (uint32_t)size;
    d->stage = STAGE_BODY;
    if (size == 0) {
        d->state = DONE;
    }
    return AJOUR_DELTA_OK;
}

int ajour_delta_feed(ajour_delta *d, const uint8_t *data, size_t len)
{
    int rc;

    if (d == NULL || (data == NULL && len > 0u)) {
        return AJOUR_DELTA_E_ARG;
    }
    if (d->error != 0) {
        return d->error;
    }
    while (len > 0u && d->stage != STAGE_BODY) {
        if ((rc = header(d, *data)) != AJOUR_DELTA_OK) {
            return rc;
        }
        data++;
        len--;
    }
    if (len == 0u) {
        return AJOUR_DELTA_OK;
    }
    if (d->state == DONE && d->crle_state == CRLE_KIND) {
        return fail(d, AJOUR_DELTA_E_TRAILING);
    }
    if (d->compression == COMPRESSION_NONE) {
        rc = records(d, data, len, 1);
    } else {
        rc = crle(d, data, len);
    }
    return rc;
}

int ajour_delta_done(const ajour_delta *d)
{
    return d != NULL && d->error == 0 && d->stage == STAGE_BODY && d->state == DONE &&
           d->crle_state == CRLE_KIND;
}

int ajour_delta_finish(const ajour_delta *d)
{
    if (d == NULL) {
        return AJOUR_DELTA_E_ARG;
    }
    if (d->error != 0) {
        return d->error;
    }
    return ajour_delta_done(d) ? AJOUR_DELTA_OK : AJOUR_DELTA_E_TRUNCATED;
}
