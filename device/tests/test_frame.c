/*
 * Host unit tests of the UART framing (src/frame.c): test_frame uart-frames.tsv
 *
 * Every line of the shared vectors (tests/uart-frames.tsv, which
 * tests/test_frames.py checks against delivery/frames.py) byte for byte: a frame is written
 * exactly as the wire says and read back with a buffer of the payload's size (one byte less
 * is AJOUR_E_BUFFER); a stream gives exactly its payloads and its count of bad pieces. A
 * vector kind this file does not know fails the run. Built with ASan and UBSan.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ajour_update.h"
#include "check.h"

typedef struct {
    uint8_t bytes[2048];
    size_t len;
} sink;

static void put(void *ctx, uint8_t b)
{
    sink *s = ctx;
    if (s->len < sizeof s->bytes) {
        s->bytes[s->len] = b;
    }
    s->len++;
}

/* Read wire[0..len) with a buffer of cap bytes (on the heap: ASan sees past it). */
static int read_all(const uint8_t *wire, size_t len, size_t cap, uint8_t (*got)[512],
                    size_t *got_len, int max_got, int *bad, int *too_long)
{
    uint8_t *buf = malloc(cap == 0u ? 1u : cap);
    ajour_frame_reader r;
    int n = 0;
    size_t i;

    *bad = 0;
    *too_long = 0;
    ajour_frame_reader_init(&r, buf, cap);
    for (i = 0u; i < len; i++) {
        int rc = ajour_frame_reader_put(&r, wire[i]);
        if (rc == 1 && n < max_got && r.len <= sizeof got[0]) {
            memcpy(got[n], r.buf, r.len);
            got_len[n++] = r.len;
        } else if (rc == AJOUR_E_FRAME) {
            (*bad)++;
        } else if (rc == AJOUR_E_BUFFER) {
            (*too_long)++;
        } else {
            CHECK(rc == 0);
        }
    }
    free(buf);
    return n;
}

static int check_line(char *name, char *kind, char *payloads, char *bad_text, char *hex)
{
    static uint8_t wire[4096];
    static uint8_t want[8][512];
    static uint8_t got[8][512];
    size_t want_len[8];
    size_t got_len[8];
    size_t len = unhex(hex, wire, sizeof wire);
    int nwant = 0;
    int ngot;
    int bad;
    int too_long;
    int i;
    char *p;

    check_context = name;
    CHECK(len * 2u == strlen(hex));
    if (strcmp(kind, "cobs") == 0) {
        return 1; /* plain COBS: checked by tests/test_frames.py; here through the frames */
    }
    for (p = strtok(payloads, ","); p != NULL && nwant < 8; p = strtok(NULL, ",")) {
        if (strcmp(p, "-") == 0) {
            break;
        }
        want_len[nwant] = strcmp(p, ".") == 0 ? 0u : unhex(p, want[nwant], sizeof want[0]);
        nwant++;
    }
    if (strcmp(kind, "frame") == 0) {
        sink s;
        CHECK(nwant == 1);
        s.len = 0u;
        ajour_frame_write(want[0], want_len[0], put, &s);
        CHECK(s.len == len && memcmp(s.bytes, wire, len) == 0);
        CHECK(s.len <= AJOUR_FRAME_WIRE(want_len[0]));
        ngot = read_all(wire, len, want_len[0], got, got_len, 8, &bad, &too_long);
        CHECK(ngot == 1 && bad == 0 && too_long == 0);
        CHECK(got_len[0] == want_len[0] && memcmp(got[0], want[0], want_len[0]) == 0);
        if (want_len[0] > 0u) { /* one byte short of room: refused at the marker */
            ngot = read_all(wire, len, want_len[0] - 1u, got, got_len, 8, &bad, &too_long);
            CHECK(ngot == 0 && bad == 0 && too_long == 1);
        }
        return 1;
    }
    if (strcmp(kind, "stream") == 0) {
        ngot = read_all(wire, len, 512u, got, got_len, 8, &bad, &too_long);
        CHECK(ngot == nwant && bad == atoi(bad_text) && too_long == 0);
        for (i = 0; i < ngot && i < nwant; i++) {
            CHECK(got_len[i] == want_len[i] && memcmp(got[i], want[i], want_len[i]) == 0);
        }
        return 1;
    }
    return 0;
}

static void check_vectors(const char *path)
{
    static char line[16384];
    int seen = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *field[5];
        int n;

        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        line[strcspn(line, "\r\n")] = '\0';
        field[0] = line;
        for (n = 1; n < 5 && (field[n] = strchr(field[n - 1], '\t')) != NULL; n++) {
            *field[n]++ = '\0';
        }
        if (n != 5 || !check_line(field[0], field[1], field[2], field[3], field[4])) {
            fprintf(stderr, "unknown or bad vector line '%s': add it to test_frame.c\n", line);
            failures++;
        }
        seen++;
    }
    fclose(f);
    printf("vectors: %d frame vectors checked\n", seen);
}

/* Beyond the vectors: a frame as long as the buffer, then noise and a marker mid-frame. */
static void check_reader(void)
{
    static uint8_t payload[1024];
    static uint8_t buf[1024];
    sink s;
    ajour_frame_reader r;
    size_t i;
    int rc = 0;
    int done = 0;

    check_context = "reader";
    for (i = 0u; i < sizeof payload; i++) {
        payload[i] = (uint8_t)(i * 7u);
    }
    s.len = 0u;
    ajour_frame_write(payload, sizeof payload, put, &s);
    CHECK(s.len <= AJOUR_FRAME_WIRE(sizeof payload) && s.len <= sizeof s.bytes);
    ajour_frame_reader_init(&r, buf, sizeof buf);
    for (i = 0u; i < s.len / 2u; i++) { /* half a frame, then a new one starts */
        CHECK(ajour_frame_reader_put(&r, s.bytes[i]) == 0);
    }
    for (i = 0u; i < s.len; i++) {
        rc = ajour_frame_reader_put(&r, s.bytes[i]);
        done += rc == 1;
        if (i == 0u) {
            CHECK(rc == AJOUR_E_FRAME); /* the half frame ends at the new one's marker */
        }
    }
    CHECK(done == 1 && r.len == sizeof payload && memcmp(buf, payload, sizeof payload) == 0);
    CHECK(ajour_crc32(0u, (const uint8_t *)"123456789", 9u) == 0xCBF43926u);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/uart-frames.tsv\n", argv[0]);
        return 2;
    }
    check_vectors(argv[1]);
    check_reader();
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
