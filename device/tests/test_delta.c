/*
 * Host driver for the delta applier (src/delta.c), built with ASan and UBSan:
 *
 *   test_delta                          built-in checks (arguments, sticky errors, finish)
 *   test_delta OLD PATCH OUT CHUNK      apply PATCH to OLD, feeding CHUNK bytes at a time
 *                                       (0: all at once); on success write the new image to
 *                                       OUT, print "ok <size>" and exit 0; a refused patch
 *                                       prints "error <code> at <byte>" and exits 1
 *
 * tests/test_device_delta.py runs it against patches made by detools and against garbled
 * ones, next to delivery/delta.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ajour_delta.h"

typedef struct {
    const uint8_t *old;
    size_t old_len;
    FILE *out;
    size_t written;
} files;

static int read_old(void *ctx, uint32_t offset, uint8_t *buf, size_t len)
{
    files *f = (files *)ctx;

    if ((size_t)offset > f->old_len || len > f->old_len - (size_t)offset) {
        return -1; /* the applier checks first: never reached */
    }
    memcpy(buf, f->old + offset, len);
    return 0;
}

static int write_new(void *ctx, const uint8_t *data, size_t len)
{
    files *f = (files *)ctx;

    f->written += len;
    if (f->out != NULL && fwrite(data, 1u, len, f->out) != len) {
        return -1;
    }
    return 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long size;

    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0 ||
        fseek(fp, 0, SEEK_SET) != 0) {
        if (fp != NULL) {
            fclose(fp);
        }
        return NULL;
    }
    buf = (uint8_t *)malloc((size_t)size + 1u);
    if (buf == NULL || fread(buf, 1u, (size_t)size, fp) != (size_t)size) {
        free(buf);
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    *len = (size_t)size;
    return buf;
}

static int failures;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

static int builtin(void)
{
    /* detools.create_patch(b"", b"abc", compression="crle"): 02 03 00 07 00 00 03 abc 00 */
    static const uint8_t patch[] = {0x02, 0x03, 0x00, 0x07, 0x00, 0x00, 0x03,
                                    'a',  'b',  'c',  0x00};
    static const uint8_t trailing[] = {0x00};
    files f = {NULL, 0u, NULL, 0u};
    ajour_delta d;
    size_t i;

    CHECK(ajour_delta_init(NULL, read_old, write_new, &f, 0u, 100u) == AJOUR_DELTA_E_ARG);
    CHECK(ajour_delta_init(&d, NULL, write_new, &f, 0u, 100u) == AJOUR_DELTA_E_ARG);
    CHECK(ajour_delta_init(&d, read_old, write_new, &f, 0u, 100u) == AJOUR_DELTA_OK);
    CHECK(ajour_delta_feed(&d, NULL, 1u) == AJOUR_DELTA_E_ARG);
    CHECK(ajour_delta_finish(&d) == AJOUR_DELTA_E_TRUNCATED);
    for (i = 0u; i < sizeof patch; i++) {
        CHECK(!ajour_delta_done(&d));
        CHECK(ajour_delta_feed(&d, &patch[i], 1u) == AJOUR_DELTA_OK);
    }
    CHECK(ajour_delta_done(&d) && ajour_delta_finish(&d) == AJOUR_DELTA_OK);
    CHECK(f.written == 3u && d.new_size == 3u && d.consumed == sizeof patch);
    CHECK(ajour_delta_feed(&d, trailing, 1u) == AJOUR_DELTA_E_TRAILING);
    CHECK(ajour_delta_finish(&d) == AJOUR_DELTA_E_TRAILING); /* sticky */

    CHECK(ajour_delta_init(&d, read_old, write_new, &f, 0u, 2u) == AJOUR_DELTA_OK);
    CHECK(ajour_delta_feed(&d, patch, sizeof patch) == AJOUR_DELTA_E_RANGE); /* 3 > max 2 */
    CHECK(ajour_delta_init(&d, read_old, write_new, &f, 0u, 100u) == AJOUR_DELTA_OK);
    CHECK(ajour_delta_feed(&d, (const uint8_t *)"\x10", 1u) == AJOUR_DELTA_E_HEADER);
    printf("%d failures, ajour_delta is %u bytes\n", failures, (unsigned)sizeof(ajour_delta));
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    files f = {NULL, 0u, NULL, 0u};
    uint8_t *old;
    uint8_t *patch;
    size_t patch_len;
    size_t chunk;
    size_t pos = 0u;
    size_t k;
    ajour_delta d;
    int rc = AJOUR_DELTA_OK;

    if (argc == 1) {
        return builtin();
    }
    if (argc != 5) {
        fprintf(stderr, "usage: test_delta [OLD PATCH OUT CHUNK]\n");
        return 2;
    }
    old = slurp(argv[1], &f.old_len);
    patch = slurp(argv[2], &patch_len);
    f.out = fopen(argv[3], "wb");
    if (old == NULL || patch == NULL || f.out == NULL) {
        fprintf(stderr, "cannot read the inputs or open the output\n");
        return 2;
    }
    f.old = old;
    chunk = (size_t)strtoul(argv[4], NULL, 10);
    if (chunk == 0u) {
        chunk = patch_len > 0u ? patch_len : 1u;
    }
    ajour_delta_init(&d, read_old, write_new, &f, (uint32_t)f.old_len, 1u << 20);
    while (pos < patch_len && rc == AJOUR_DELTA_OK) {
        k = patch_len - pos < chunk ? patch_len - pos : chunk;
        rc = ajour_delta_feed(&d, patch + pos, k);
        pos += k;
    }
    if (rc == AJOUR_DELTA_OK) {
        rc = ajour_delta_finish(&d);
    }
    fclose(f.out);
    free(old);
    free(patch);
    if (rc != AJOUR_DELTA_OK) {
        printf("error %d at %u\n", rc, (unsigned)d.consumed);
        return 1;
    }
    printf("ok %u\n", (unsigned)d.new_size);
    return 0;
}
