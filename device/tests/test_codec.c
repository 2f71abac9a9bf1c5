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

static int failures;
static int checks;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

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

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0u;
    while (hex[0] != '\0' && hex[1] != '\0' && n < cap) {
        unsigned v;
        if (sscanf(hex, "%2x", &v) != 1) {
            break;
        }
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
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
    CHECK(decode_hex("a104a0") == AJOUR_E_MALFORMED);      /* unknown variant */
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
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
