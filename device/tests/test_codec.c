/*
 * Host unit tests of the codec and the updater: test_codec VECTORS.tsv
 *
 * Every packed line of the shared wire vectors (tests/data/vectors/embedded-update.tsv) is
 * checked byte for byte: statuses are encoded from their values, commands decoded into them
 * and every prefix of a command must be refused. A packed vector this file does not know
 * fails the run, so a new vector cannot be skipped silently. Built with ASan and UBSan by
 * the Makefile, so an overread is a crash, not a pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ajour_update.h"
#include "check.h"

static int bytes_eq(ajour_bytes b, const void *want, size_t len)
{
    return b.len == len && (len == 0u || memcmp(b.ptr, want, len) == 0);
}

static ajour_bytes str(const char *s)
{
    ajour_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = strlen(s);
    return b;
}

static uint8_t checksum_0_31[32];

/* The values the vectors were written from (the header of the TSV file). */
static int check_vector(const char *name, const uint8_t *wire, size_t len)
{
    uint8_t out[256];
    size_t outlen = 0u;
    ajour_status st;
    ajour_command c;
    size_t cut;

    memset(&st, 0, sizeof st);
    if (strncmp(name, "status_", 7) == 0) {
        st.version = str("0.1.0");
        st.mtu.present = 1u;
        st.mtu.value = 512u;
        if (strcmp(name, "status_update") == 0) {
            st.has_update = 1u;
            st.update_version = str("0.1.1");
            st.update_offset = 1024u;
        } else if (strcmp(name, "status_first") != 0) {
            return 0;
        }
        CHECK(ajour_encode_status(&st, out, sizeof out, &outlen) == AJOUR_OK);
        CHECK(outlen == len && memcmp(out, wire, len) == 0);
        /* every buffer one byte too small is refused */
        for (cut = 0u; cut < len; cut++) {
            CHECK(ajour_encode_status(&st, out, cut, &outlen) == AJOUR_E_BUFFER);
        }
        return 1;
    }
    CHECK(ajour_decode_command(wire, len, &c) == AJOUR_OK);
    if (strcmp(name, "wait") == 0) {
        CHECK(c.kind == AJOUR_CMD_WAIT);
        CHECK(c.correlation_id.present && c.correlation_id.value == 7u);
        CHECK(c.poll.present && c.poll.value == 300u);
    } else if (strcmp(name, "sync") == 0) {
        CHECK(c.kind == AJOUR_CMD_SYNC && bytes_eq(c.version, "0.1.0", 5u));
        CHECK(!c.correlation_id.present && !c.poll.present);
    } else if (strcmp(name, "write_small") == 0) {
        CHECK(c.kind == AJOUR_CMD_WRITE && bytes_eq(c.version, "0.1.1", 5u));
        CHECK(!c.correlation_id.present && c.offset == 0u && bytes_eq(c.data, "hello", 5u));
    } else if (strcmp(name, "swap") == 0) {
        CHECK(c.kind == AJOUR_CMD_SWAP && bytes_eq(c.version, "0.1.1", 5u));
        CHECK(!c.correlation_id.present && bytes_eq(c.checksum, checksum_0_31, 32u));
    } else {
        return 0;
    }
    /* Every prefix is refused, read from an exact-size heap copy (ASan sees overreads). */
    for (cut = 0u; cut < len; cut++) {
        uint8_t *copy = malloc(cut == 0u ? 1u : cut);
        memcpy(copy, wire, cut);
        CHECK(ajour_decode_command(copy, cut, &c) < 0);
        free(copy);
    }
    /* A trailing byte is refused. */
    memcpy(out, wire, len);
    out[len] = 0x00u;
    CHECK(ajour_decode_command(out, len + 1u, &c) == AJOUR_E_MALFORMED);
    return 1;
}

static void check_vectors(const char *path)
{
    char line[1024];
    int seen = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *name = line;
        char *form;
        char *hex;
        uint8_t wire[256];
        size_t len;

        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        form = strchr(name, '\t');
        hex = form ? strchr(form + 1, '\t') : NULL;
        if (hex == NULL) {
            fprintf(stderr, "bad vector line: %s", line);
            failures++;
            continue;
        }
        *form++ = '\0';
        *hex++ = '\0';
        hex[strcspn(hex, "\r\n")] = '\0';
        if (strcmp(form, "packed") != 0) {
            continue; /* devices speak the packed form only */
        }
        len = unhex(hex, wire, sizeof wire);
        CHECK(len * 2u == strlen(hex));
        if (!check_vector(name, wire, len)) {
            fprintf(stderr, "unknown packed vector '%s': add its values to test_codec.c\n",
                    name);
            failures++;
        }
        seen++;
    }
    fclose(f);
    CHECK(seen == 6);
    printf("vectors: %d packed vectors checked\n", seen);
}

static int decode_hex(const char *hex)
{
    uint8_t wire[128];
    ajour_command c;
    size_t len = unhex(hex, wire, sizeof wire);
    uint8_t *copy = malloc(len == 0u ? 1u : len);
    int rc;

    memcpy(copy, wire, len);
    rc = ajour_decode_command(copy, len, &c);
    free(copy);
    return rc;
}

static void check_bad_commands(void)
{
    /* lengths that claim more than the input: up to 2^64 - 1 */
    CHECK(decode_hex("a102a40045302e312e3101f6020003" "5bffffffffffffffff") == AJOUR_E_TRUNCATED);
    CHECK(decode_hex("a102a40045302e312e3101f6020003" "5affffffff00") == AJOUR_E_TRUNCATED);
    CHECK(decode_hex("a102a4005bffffffffffffffff") == AJOUR_E_TRUNCATED);
    CHECK(decode_hex("a102bbffffffffffffffff00") == AJOUR_E_TRUNCATED);
    /* a map claiming 2^64 - 1 entries stops at the first repeated key */
    CHECK(decode_hex("a100bbffffffffffffffff00f600f6") == AJOUR_E_MALFORMED);
    /* integers past u32 */
    CHECK(decode_hex("a100a2001b0000000100000000" "01f6") == AJOUR_E_RANGE);
    CHECK(decode_hex("a100a2001b00000000ffffffff" "01f6") == AJOUR_OK);
    /* wrong shapes */
    CHECK(decode_hex("") == AJOUR_E_TRUNCATED);
    CHECK(decode_hex("a0") == AJOUR_E_MALFORMED);          /* no variant */
    CHECK(decode_hex("a200a0") == AJOUR_E_MALFORMED);      /* two variants */
#if AJOUR_DELTA
    CHECK(decode_hex("a104a0") == AJOUR_E_MISSING);        /* WritePatch without fields */
    CHECK(decode_hex("a105a0") == AJOUR_E_MALFORMED);      /* unknown variant */
#else
    CHECK(decode_hex("a104a0") == AJOUR_E_MALFORMED);      /* unknown variant */
#endif
    CHECK(decode_hex("a16457616974a0") == AJOUR_E_MALFORMED); /* named form */
    CHECK(decode_hex("a100a0") == AJOUR_OK);               /* Wait with nothing: valid */
    CHECK(decode_hex("a101a0") == AJOUR_E_MISSING);        /* Sync without version */
    CHECK(decode_hex("a101a10065302e312e30") == AJOUR_E_MALFORMED); /* text version */
    CHECK(decode_hex("a100a200070007") == AJOUR_E_MALFORMED);       /* duplicate key */
    CHECK(decode_hex("a100a10207") == AJOUR_E_MALFORMED);  /* unknown field */
    CHECK(decode_hex("a100a100fb3ff0000000000000") == AJOUR_E_MALFORMED); /* float */
    CHECK(decode_hex("a100a100c007") == AJOUR_E_MALFORMED);    /* tag */
    CHECK(decode_hex("a100a1002007") == AJOUR_E_MALFORMED);    /* negative */
    CHECK(decode_hex("bf00a0ff") == AJOUR_E_MALFORMED);        /* indefinite map */
    CHECK(decode_hex("a102a40045302e312e3101f60200035f4100ff") == AJOUR_E_MALFORMED);
    CHECK(decode_hex("a102a30045302e312e3101f60200") == AJOUR_E_MISSING); /* no data */
    CHECK(decode_hex("a102a40045302e312e3101f602f60340") == AJOUR_E_MALFORMED); /* null */
    CHECK(decode_hex("a1fc") == AJOUR_E_MALFORMED);            /* reserved info */
    /* non-shortest heads are accepted, as serde_cbor does */
    CHECK(decode_hex("b80100b8020018070119012c") == AJOUR_OK);
    /* NULL arguments */
    CHECK(ajour_decode_command(NULL, 3u, NULL) == AJOUR_E_ARG);
    printf("bad commands: refused\n");
}

static void check_status_extremes(void)
{
    uint8_t out[64];
    size_t len = 0u;
    ajour_status st;
    static const uint8_t want[] = {0xa4, 0x00, 0x40, 0x01, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x02,
                                   0x18, 0x18, 0x03, 0xa2, 0x00, 0x41, 0x78, 0x01, 0x19,
                                   0x01, 0x00};

    memset(&st, 0, sizeof st);
    st.mtu.present = 1u;
    st.mtu.value = 0xFFFFFFFFu;
    st.correlation_id.present = 1u;
    st.correlation_id.value = 24u;
    st.has_update = 1u;
    st.update_version = str("x");
    st.update_offset = 256u;
    CHECK(ajour_encode_status(&st, out, sizeof out, &len) == AJOUR_OK);
    CHECK(len == sizeof want && memcmp(out, want, len) == 0);
    st.version.ptr = NULL;
    st.version.len = 3u;
    CHECK(ajour_encode_status(&st, out, sizeof out, &len) == AJOUR_E_ARG);
}

static void check_sha256(void)
{
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad};
    static const uint8_t two_blocks[32] = { /* "abcdbcde...nopq" (FIPS 180-2 example) */
        0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60,
        0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb,
        0x06, 0xc1};
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ajour_sha256 s;
    uint8_t d[32];
    size_t i;

    ajour_sha256_init(&s);
    ajour_sha256_update(&s, (const uint8_t *)"abc", 3u);
    ajour_sha256_final(&s, d);
    CHECK(memcmp(d, abc, 32u) == 0);
    ajour_sha256_init(&s);
    for (i = 0u; msg[i] != '\0'; i++) { /* byte by byte: every fill level */
        ajour_sha256_update(&s, (const uint8_t *)msg + i, 1u);
    }
    ajour_sha256_final(&s, d);
    CHECK(memcmp(d, two_blocks, 32u) == 0);
}


/* ---- the updater, with scripted commands and a RAM slot --------------------------------- */

typedef struct {
    const char *replies[8]; /* hex of the command answering each status */
    int next;
    uint8_t sent[256];      /* the last status */
    size_t sent_len;
    uint8_t slot[64];
    int writes, swaps, confirms;
    int fail_write, refuse_swap;
    size_t last_vlen;       /* the version length of the last write */
    uint32_t swap_size;
} fake;

static int f_send(void *ctx, const uint8_t *frame, size_t len)
{
    fake *f = ctx;
    memcpy(f->sent, frame, len);
    f->sent_len = len;
    return 0;
}

static int f_receive(void *ctx, uint8_t *buf, size_t cap, size_t *len)
{
    fake *f = ctx;
    if (f->replies[f->next] == NULL) {
        return 1;
    }
    *len = unhex(f->replies[f->next++], buf, cap);
    return 0;
}

static int f_write(void *ctx, const uint8_t *v, size_t vlen, uint32_t off, const uint8_t *d,
                   size_t len)
{
    fake *f = ctx;
    (void)v;
    f->last_vlen = vlen;
    if (f->fail_write) {
        return 1;
    }
    memcpy(f->slot + off, d, len);
    f->writes++;
    return 0;
}

static int f_swap(void *ctx, const uint8_t *v, size_t vlen, uint32_t size, const uint8_t *sum)
{
    fake *f = ctx;
    (void)v;
    (void)vlen;
    (void)sum;
    f->swap_size = size;
    f->swaps++;
    return f->refuse_swap;
}

static int f_confirm(void *ctx)
{
    ((fake *)ctx)->confirms++;
    return 0;
}

static ajour_updater start(fake *f, int trial, const char *resume, uint32_t offset)
{
    static uint8_t buf[AJOUR_MIN_BUFFER + 64u];
    ajour_platform p = {0};
    ajour_updater u;
    p.ctx = f;
    p.send = f_send;
    p.receive = f_receive;
    p.write = f_write;
    p.swap = f_swap;
    p.confirm = f_confirm;
    CHECK(ajour_updater_init(&u, &p, buf, sizeof buf, sizeof f->slot, (const uint8_t *)"1.0",
                             3u, trial, (const uint8_t *)resume, resume ? strlen(resume) : 0u,
                             offset) == AJOUR_OK);
    return u;
}

/* Write{version "1.1", correlation id cid, offset, data "abcd"} */
#define WRITE(cid, off) "a102a400433" "12e3101" cid "02" off "034461626364"

static void check_updater(void)
{
    fake f;
    ajour_updater u;
    ajour_platform none = {0};
    static uint8_t small[AJOUR_MIN_BUFFER - 1u];
    static const uint8_t resumed_status[] = {0xa4, 0x00, 0x43, '1', '.', '0', 0x01, 0x18,
                                             0x50, 0x02, 0x01, 0x03, 0xa2, 0x00, 0x43, '1',
                                             '.', '1', 0x01, 0x08};

    /* resume: the first status reports the update and its offset */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE("01", "08");
    f.replies[1] = WRITE("02", "10"); /* a gap: 16 > 12 */
    f.replies[2] = WRITE("03", "00"); /* restart at 0 is allowed */
    f.replies[3] = WRITE("05", "04"); /* answers another status */
    u = start(&f, 0, "1.1", 8u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE);
    CHECK(f.sent_len == sizeof resumed_status &&
          memcmp(f.sent, resumed_status, sizeof resumed_status) == 0);
    CHECK(u.offset == 12u && memcmp(f.slot + 8, "abcd", 4u) == 0);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && u.offset == 12u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE && u.offset == 4u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_STALE && u.offset == 4u && f.writes == 2);
    CHECK(ajour_updater_step(&u) == AJOUR_E_IO); /* the transport is closed */

    /* a new version must start at 0; writes past the slot are refused */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE("01", "04");
    f.replies[1] = WRITE("02", "183e"); /* 62 + 4 > 64 */
    f.replies[2] = WRITE("03", "183c"); /* 60 + 4 = 64: fits, but a new version needs 0 */
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && f.writes == 0 && u.updating_len == 0u);

    /* a failed write keeps what is before the offset */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE("01", "08");
    f.fail_write = 1;
    u = start(&f, 0, "1.1", 12u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_IO && u.offset == 8u && u.updating_len == 3u);

    /* swap: accepted, refused (forget the update), wrong version */
    memset(&f, 0, sizeof f);
    f.replies[0] = "a103a300433" "12e310101025820" "000102030405060708090a0b0c0d0e0f"
                   "101112131415161718191a1b1c1d1e1f";
    u = start(&f, 0, "1.1", 12u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_SWAP && f.swaps == 1);
    f.next = 0;
    f.refuse_swap = 1;
    f.replies[0] = "a103a300433" "12e310101025820" "000102030405060708090a0b0c0d0e0f"
                   "101112131415161718191a1b1c1d1e1f";
    u = start(&f, 0, "1.1", 12u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_VERIFY && u.updating_len == 0u && u.offset == 0u);
    f.next = 0;
    u = start(&f, 0, "1.2", 12u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && f.swaps == 2 && u.updating_len == 0u);

    /* on trial: Sync for the running version confirms once; a Write means revert */
    memset(&f, 0, sizeof f);
    f.replies[0] = "a101a30043312e300101021864"; /* Sync 1.0, cid 1, poll 100 */
    f.replies[1] = "a101a30043312e300102021864"; /* again: no second confirm */
    u = start(&f, 1, NULL, 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_SYNCED && f.confirms == 1 && u.poll == 100u);
    f.replies[1] = "a101a30043312e300102021864";
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_SYNCED && f.confirms == 1);
    memset(&f, 0, sizeof f);
    f.replies[0] = "a101a30043312e39010102f6"; /* Sync for another version: no confirm */
    f.replies[1] = WRITE("02", "00");
    u = start(&f, 1, NULL, 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_SYNCED && f.confirms == 0);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_REVERT && f.writes == 0);

    /* Wait; a garbled command; init's checks */
    memset(&f, 0, sizeof f);
    f.replies[0] = "a100a200010105";
    f.replies[1] = "a100a2";
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WAIT && u.poll == 5u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_TRUNCATED);
    CHECK(ajour_updater_init(&u, &none, small, sizeof small, 64u, NULL, 0u, 0, NULL, 0u, 0u) ==
          AJOUR_E_ARG);
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_init(&u, &u.platform, small, sizeof small, 64u, NULL, 0u, 0, NULL, 0u,
                             0u) == AJOUR_E_BUFFER);
    CHECK(ajour_updater_init(&u, &u.platform, u.buf, u.cap, 64u, NULL, 0u, 0,
                             (const uint8_t *)"1.1", 3u, 65u) == AJOUR_E_RANGE);
    printf("updater: checked\n");
}

#if AJOUR_DELTA
static int f_read(void *ctx, uint32_t offset, uint8_t *buf, size_t len)
{
    (void)ctx;
    if (offset > 4u || len > 4u - offset) {
        return 1;
    }
    memcpy(buf, "abcd" + offset, len);
    return 0;
}

/* WritePatch{version "1.1", correlation id cid, offset, data (hex, with its head)} */
#define WRITE_PATCH(cid, off, data) "a104a400433" "12e3101" cid "02" off "03" data
/* Swap{version "1.1", cid 3, the checksum 0..31} */
#define SWAP_3 "a103a300433" "12e310103025820" "000102030405060708090a0b0c0d0e0f" \
               "101112131415161718191a1b1c1d1e1f"

/* The running image is "abcd"; the patch (detools sequential, no compression) makes "abce":
 * 00 | size 4 | 0 | diff 4: 00 00 00 01 | extra 0 | adjust 0, sent in two WritePatches. */
static void check_delta(void)
{
    fake f;
    ajour_updater u;
    static const uint8_t advertised[] = {0xa5, 0x00, 0x43, '1', '.', '0', 0x01, 0x18, 0x50,
                                         0x02, 0x01, 0x03, 0xf6, 0x04, 0x01};
    static const uint8_t patching[] = {0xa5, 0x00, 0x43, '1', '.', '0', 0x01, 0x18, 0x50,
                                       0x02, 0x02, 0x03, 0xa2, 0x00, 0x43, '1', '.', '1',
                                       0x01, 0x05, 0x04, 0x01};

    /* not enabled: no key 4, and a WritePatch is refused */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "450004000400");
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && f.sent[0] == 0xa4 && f.writes == 0);

    /* applied in two pieces, the image written without a version, swapped at its size */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "450004000400");
    f.replies[1] = WRITE_PATCH("02", "05", "450000010000");
    f.replies[2] = SWAP_3;
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE && u.offset == 5u);
    CHECK(f.sent_len == sizeof advertised && memcmp(f.sent, advertised, sizeof advertised) == 0);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE && u.offset == 10u);
    CHECK(f.sent_len == sizeof patching && memcmp(f.sent, patching, sizeof patching) == 0);
    CHECK(memcmp(f.slot, "abce", 4u) == 0 && f.last_vlen == 0u && f.writes >= 1);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_SWAP && f.swaps == 1 && f.swap_size == 4u);

    /* a gap, then a resumed offset without the applier's state: refused, state kept */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "450004000400");
    f.replies[1] = WRITE_PATCH("02", "06", "4400010000");
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && u.offset == 5u && u.patching);
    f.next = 0;
    f.replies[0] = WRITE_PATCH("01", "05", "450000010000");
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && f.writes == 1);

    /* the rebuilt image refused at Swap: fall back, no more advertising */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "4a00040004000000010000");
    f.replies[1] = SWAP_3;
    f.replies[2] = "a100a0";
    f.refuse_swap = 1;
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE);
    f.replies[1] = "a103a300433" "12e310102025820" "000102030405060708090a0b0c0d0e0f"
                   "101112131415161718191a1b1c1d1e1f";
    CHECK(ajour_updater_step(&u) == AJOUR_E_VERIFY && u.patch_failed && u.updating_len == 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WAIT && f.sent[0] == 0xa4);

    /* a patch for another image (reads past the running one): refused while it arrives */
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "4a00080008000000010000");
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_E_VERIFY && u.patch_failed && f.swaps == 0);

    /* a full image being resumed: no bit; a Write replaces a patch in progress from 0 */
    memset(&f, 0, sizeof f);
    f.replies[0] = "a100a0";
    u = start(&f, 0, "1.1", 8u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WAIT && f.sent[0] == 0xa4);
    memset(&f, 0, sizeof f);
    f.replies[0] = WRITE_PATCH("01", "00", "450004000400");
    f.replies[1] = WRITE("02", "04");
    f.replies[2] = WRITE("03", "00");
    u = start(&f, 0, NULL, 0u);
    CHECK(ajour_updater_enable_delta(&u, f_read, 4u) == AJOUR_OK);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE);
    CHECK(ajour_updater_step(&u) == AJOUR_E_RANGE && !u.patching && u.updating_len == 0u);
    CHECK(ajour_updater_step(&u) == AJOUR_STEP_WROTE && u.offset == 4u && f.last_vlen == 3u);
    CHECK(f.sent[0] == 0xa5); /* that status had no update in progress */
    printf("delta: checked\n");
}
#endif

int main(int argc, char **argv)
{
    unsigned i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/data/vectors/embedded-update.tsv\n", argv[0]);
        return 2;
    }
    for (i = 0u; i < 32u; i++) {
        checksum_0_31[i] = (uint8_t)i;
    }
    check_vectors(argv[1]);
    check_bad_commands();
    check_status_extremes();
    check_sha256();
    check_updater();
#if AJOUR_DELTA
    check_delta();
#endif
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
