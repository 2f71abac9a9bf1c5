/*
 * The packed CBOR form of embedded-update's Status and Command (serde_cbor to_vec_packed):
 * structs are maps keyed by field index, enums one-entry maps {variant index: struct},
 * every field present, None as null (0xf6), integers in their shortest encoding.
 *
 * The decoder is schema-directed: it reads exactly the shapes of a Command and refuses
 * everything else. Every length is compared with the bytes left before it is used, by
 * subtraction, so no length (up to 2^64 - 1) can overflow a position or read past the end.
 */
#include <string.h>

#include "ajour_update.h"

/* ---- encoding ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;
    int err;
} writer;

static void put(writer *w, const uint8_t *src, size_t n)
{
    if (w->err != AJOUR_OK) {
        return;
    }
    if (w->cap - w->pos < n) {
        w->err = AJOUR_E_BUFFER;
        return;
    }
    if (n > 0u) {
        memcpy(w->out + w->pos, src, n);
    }
    w->pos += n;
}

static void put_byte(writer *w, uint8_t b)
{
    put(w, &b, 1u);
}

/* The shortest head for `major` with argument n (n fits a u32 in this protocol). */
static void put_head(writer *w, uint8_t major, uint32_t n)
{
    uint8_t h[5];
    size_t len;
    uint8_t mt = (uint8_t)(major << 5);

    if (n < 24u) {
        h[0] = (uint8_t)(mt | n);
        len = 1u;
    } else if (n < 0x100u) {
        h[0] = (uint8_t)(mt | 24u);
        h[1] = (uint8_t)n;
        len = 2u;
    } else if (n < 0x10000u) {
        h[0] = (uint8_t)(mt | 25u);
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        len = 3u;
    } else {
        h[0] = (uint8_t)(mt | 26u);
        h[1] = (uint8_t)(n >> 24);
        h[2] = (uint8_t)(n >> 16);
        h[3] = (uint8_t)(n >> 8);
        h[4] = (uint8_t)n;
        len = 5u;
    }
    put(w, h, len);
}

static void put_bytes(writer *w, ajour_bytes b)
{
    if (b.len > 0xFFFFFFFFu || (b.len > 0u && b.ptr == NULL)) {
        if (w->err == AJOUR_OK) {
            w->err = AJOUR_E_ARG;
        }
        return;
    }
    put_head(w, 2u, (uint32_t)b.len);
    put(w, b.ptr, b.len);
}

static void put_opt_u32(writer *w, ajour_opt_u32 v)
{
    if (v.present) {
        put_head(w, 0u, v.value);
    } else {
        put_byte(w, 0xF6u);
    }
}

int ajour_encode_status(const ajour_status *st, uint8_t *out, size_t cap, size_t *len)
{
    writer w;

    if (st == NULL || out == NULL || len == NULL) {
        return AJOUR_E_ARG;
    }
    w.out = out;
    w.cap = cap;
    w.pos = 0u;
    w.err = AJOUR_OK;
#if AJOUR_DELTA
    /* map of 4: version, mtu, correlation_id, update; of 5 with the patch bitmask */
    put_byte(&w, st->patch != 0u ? 0xA5u : 0xA4u);
#else
    put_byte(&w, 0xA4u); /* map of 4: version, mtu, correlation_id, update */
#endif
    put_byte(&w, 0x00u);
    put_bytes(&w, st->version);
    put_byte(&w, 0x01u);
    put_opt_u32(&w, st->mtu);
    put_byte(&w, 0x02u);
    put_opt_u32(&w, st->correlation_id);
    put_byte(&w, 0x03u);
    if (st->has_update) {
        put_byte(&w, 0xA2u); /* map of 2: version, offset */
        put_byte(&w, 0x00u);
        put_bytes(&w, st->update_version);
        put_byte(&w, 0x01u);
        put_head(&w, 0u, st->update_offset);
    } else {
        put_byte(&w, 0xF6u);
    }
#if AJOUR_DELTA
    if (st->patch != 0u) {
        put_byte(&w, 0x04u);
        put_head(&w, 0u, st->patch);
    }
#endif
    if (w.err != AJOUR_OK) {
        return w.err;
    }
    *len = w.pos;
    return AJOUR_OK;
}

/* ---- decoding ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *in;
    size_t len;
    size_t pos;
} reader;

/* A definite head: its major type and argument. Indefinite lengths, reserved additional
 * information (28-30) and the break byte are malformed. */
static int get_head(reader *r, uint8_t *major, uint64_t *arg)
{
    uint8_t ib;
    uint8_t info;
    size_t extra;
    size_t i;
    uint64_t n = 0u;

    if (r->len - r->pos < 1u) {
        return AJOUR_E_TRUNCATED;
    }
    ib = r->in[r->pos];
    *major = (uint8_t)(ib >> 5);
    info = (uint8_t)(ib & 0x1Fu);
    if (info < 24u) {
        r->pos += 1u;
        *arg = info;
        return AJOUR_OK;
    }
    if (info > 27u) {
        return AJOUR_E_MALFORMED;
    }
    extra = (size_t)1u << (info - 24u);
    if (r->len - r->pos - 1u < extra) {
        return AJOUR_E_TRUNCATED;
    }
    for (i = 0u; i < extra; i++) {
        n = (n << 8) | r->in[r->pos + 1u + i];
    }
    r->pos += 1u + extra;
    *arg = n;
    return AJOUR_OK;
}

static int get_u32(reader *r, uint32_t *value)
{
    uint8_t major;
    uint64_t n;
    int rc = get_head(r, &major, &n);

    if (rc != AJOUR_OK) {
        return rc;
    }
    if (major != 0u) {
        return AJOUR_E_MALFORMED;
    }
    if (n > 0xFFFFFFFFu) {
        return AJOUR_E_RANGE;
    }
    *value = (uint32_t)n;
    return AJOUR_OK;
}

static int get_opt_u32(reader *r, ajour_opt_u32 *v)
{
    if (r->len - r->pos >= 1u && r->in[r->pos] == 0xF6u) {
        r->pos += 1u;
        v->present = 0u;
        v->value = 0u;
        return AJOUR_OK;
    }
    v->present = 1u;
    return get_u32(r, &v->value);
}

static int get_bytes(reader *r, ajour_bytes *b)
{
    uint8_t major;
    uint64_t n;
    int rc = get_head(r, &major, &n);

    if (rc != AJOUR_OK) {
        return rc;
    }
    if (major != 2u) {
        return AJOUR_E_MALFORMED;
    }
    if ((uint64_t)(r->len - r->pos) < n) {
        return AJOUR_E_TRUNCATED;
    }
    b->ptr = r->in + r->pos;
    b->len = (size_t)n;
    r->pos += (size_t)n;
    return AJOUR_OK;
}

/* The number of entries of a map. */
static int get_map(reader *r, uint64_t *n)
{
    uint8_t major;
    int rc = get_head(r, &major, n);

    if (rc != AJOUR_OK) {
        return rc;
    }
    return major == 5u ? AJOUR_OK : AJOUR_E_MALFORMED;
}

/* A packed key: an unsigned integer (a field or variant index). */
static int get_key(reader *r, uint64_t *key)
{
    uint8_t major;
    int rc = get_head(r, &major, key);

    if (rc != AJOUR_OK) {
        return rc;
    }
    return major == 0u ? AJOUR_OK : AJOUR_E_MALFORMED;
}

/* Field kinds, in the order of each variant's Rust struct. */
enum field { F_VERSION, F_CORRELATION, F_POLL, F_OFFSET, F_DATA, F_CHECKSUM };

typedef struct {
    uint8_t count;
    uint8_t required; /* bit i: field i must be present */
    uint8_t fields[4];
} schema;

static const schema SCHEMAS[4] = {
    {2u, 0x0u, {F_CORRELATION, F_POLL, 0u, 0u}},                  /* Wait */
    {3u, 0x1u, {F_VERSION, F_CORRELATION, F_POLL, 0u}},           /* Sync */
    {4u, 0xDu, {F_VERSION, F_CORRELATION, F_OFFSET, F_DATA}},     /* Write */
    {3u, 0x5u, {F_VERSION, F_CORRELATION, F_CHECKSUM, 0u}},       /* Swap */
};

static int get_field(reader *r, uint8_t field, ajour_command *cmd)
{
    switch (field) {
    case F_VERSION:
        return get_bytes(r, &cmd->version);
    case F_CORRELATION:
        return get_opt_u32(r, &cmd->correlation_id);
    case F_POLL:
        return get_opt_u32(r, &cmd->poll);
    case F_OFFSET:
        return get_u32(r, &cmd->offset);
    case F_DATA:
        return get_bytes(r, &cmd->data);
    default:
        return get_bytes(r, &cmd->checksum);
    }
}

int ajour_decode_command(const uint8_t *in, size_t len, ajour_command *cmd)
{
    reader r;
    uint64_t n;
    uint64_t key;
    uint64_t i;
    const schema *s;
    unsigned seen = 0u;
    int rc;

    if (cmd == NULL || (in == NULL && len > 0u)) {
        return AJOUR_E_ARG;
    }
    memset(cmd, 0, sizeof *cmd);
    r.in = in;
    r.len = len;
    r.pos = 0u;
    rc = get_map(&r, &n);
    if (rc != AJOUR_OK) {
        return rc;
    }
    if (n != 1u) {
        return AJOUR_E_MALFORMED;
    }
    rc = get_key(&r, &key);
    if (rc != AJOUR_OK) {
        return rc;
    }
#if AJOUR_DELTA
    if (key > 4u) {
        return AJOUR_E_MALFORMED;
    }
    cmd->kind = (ajour_command_kind)key;
    s = &SCHEMAS[key == 4u ? 2u : key]; /* WritePatch: the fields of Write */
#else
    if (key > 3u) {
        return AJOUR_E_MALFORMED;
    }
    cmd->kind = (ajour_command_kind)key;
    s = &SCHEMAS[key];
#endif
    rc = get_map(&r, &n);
    if (rc != AJOUR_OK) {
        return rc;
    }
    /* Each entry is a distinct known key, so more than s->count entries must fail on a
     * duplicate; the loop stops there, whatever n says. */
    for (i = 0u; i < n; i++) {
        rc = get_key(&r, &key);
        if (rc != AJOUR_OK) {
            return rc;
        }
        if (key >= s->count || (seen & (1u << key)) != 0u) {
            return AJOUR_E_MALFORMED;
        }
        seen |= 1u << key;
        rc = get_field(&r, s->fields[key], cmd);
        if (rc != AJOUR_OK) {
            return rc;
        }
    }
    if ((seen & s->required) != s->required) {
        return AJOUR_E_MISSING;
    }
    if (r.pos != r.len) {
        return AJOUR_E_MALFORMED;
    }
    return AJOUR_OK;
}
