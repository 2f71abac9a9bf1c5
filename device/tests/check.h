/*
 * The host tests' shared helpers (test_codec, test_frame): a counting CHECK and hex parsing.
 * Static definitions: each test program includes it from its one .c file.
 */
#ifndef AJOUR_TESTS_CHECK_H
#define AJOUR_TESTS_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static int failures;
static int checks;
/* When set, a failed CHECK names it too: test_frame points it at the vector being checked. */
static const char *check_context;

static void check_failed(const char *file, int line, const char *cond)
{
    if (check_context != NULL) {
        fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", file, line, cond, check_context);
    } else {
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, cond);
    }
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            check_failed(__FILE__, __LINE__, #cond);                                       \
        }                                                                                  \
    } while (0)

/* The bytes of a hex string into out (at most cap); stops at the first pair that is not hex. */
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

#endif
