/*
 * ajour_delta: a streaming applier for detools sequential patches (compression none or
 * crle), for devices that advertise delta updates (Status.patch bit 0, docs/delivery.md,
 * "Delta updates"). The format is documented in delivery/delta.py, the reference this
 * file follows step by step.
 *
 * Feed it the patch in any chunks (each WritePatch's data, in order); it reads the old
 * image through a callback, at the positions the patch names, and hands the new image to
 * another callback strictly in order, ready for the update slot. Its state is the struct
 * below (about 80 bytes) plus AJOUR_DELTA_CHUNK bytes of stack: no malloc, no buffer of
 * the patch or the image. The work is bounded by the patch's and the new image's size,
 * whatever the patch holds.
 */
#ifndef AJOUR_DELTA_H
#define AJOUR_DELTA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of old image read (and of a repeated run written) at a time, on the stack. */
#ifndef AJOUR_DELTA_CHUNK
#define AJOUR_DELTA_CHUNK 32u
#endif

typedef enum {
    AJOUR_DELTA_OK = 0,
    AJOUR_DELTA_E_HEADER = -1,      /* not a sequential patch, or an unknown compression */
    AJOUR_DELTA_E_UNSUPPORTED = -2, /* a data-format part (detools --data-format) */
    AJOUR_DELTA_E_MALFORMED = -3,   /* a bad CRLE kind, an over-long size, too many records */
    AJOUR_DELTA_E_RANGE = -4,       /* a size past the new image or max_size, or a read
                                       outside the old image (the patch is for another one) */
    AJOUR_DELTA_E_TRAILING = -5,    /* bytes after the end of the patch */
    AJOUR_DELTA_E_TRUNCATED = -6,   /* ajour_delta_finish: the patch ended too early */
    AJOUR_DELTA_E_IO = -7,          /* a callback failed */
    AJOUR_DELTA_E_ARG = -8          /* a NULL pointer */
} ajour_delta_result;

/* Read len bytes of the old image at offset into buf; 0 on success. */
typedef int (*ajour_delta_read_fn)(void *ctx, uint32_t offset, uint8_t *buf, size_t len);
/* Write the next len bytes of the new image; 0 on success. */
typedef int (*ajour_delta_write_fn)(void *ctx, const uint8_t *data, size_t len);

typedef struct {
    ajour_delta_read_fn read;
    ajour_delta_write_fn write;
    void *ctx;
    uint32_t old_size;
    uint32_t max_size;
    uint32_t new_size;     /* valid once the header is read */
    uint32_t written;      /* new image bytes written */
    uint32_t consumed;     /* patch bytes taken */
    uint32_t left;         /* bytes left in the current diff or extra part */
    uint32_t records;
    int64_t old_pos;
    uint64_t value;        /* the detools size being read */
    uint64_t crle_value;   /* the CRLE length being read */
    uint64_t crle_left;    /* bytes left in the current CRLE segment */
    int error;             /* sticky: once set, every call returns it */
    uint8_t stage;         /* header byte, size, then records */
    uint8_t compression;
    uint8_t state;         /* the record parser's state */
    uint8_t shift, count, negative;
    uint8_t crle_state, crle_kind, crle_shift, crle_count;
} ajour_delta;

/* Start applying a patch to an old image of old_size bytes; a new image over max_size
 * bytes (the slot) is refused at the header. */
int ajour_delta_init(ajour_delta *d, ajour_delta_read_fn read, ajour_delta_write_fn write,
                     void *ctx, uint32_t old_size, uint32_t max_size);

/* Take the next len bytes of the patch. AJOUR_DELTA_OK or an error (then sticky). */
int ajour_delta_feed(ajour_delta *d, const uint8_t *data, size_t len);

/* AJOUR_DELTA_OK when the patch ended exactly where the new image is complete; else
 * AJOUR_DELTA_E_TRUNCATED (or the sticky error). */
int ajour_delta_finish(const ajour_delta *d);

/* 1 when the new image is complete and the patch ended. */
int ajour_delta_done(const ajour_delta *d);

#ifdef __cplusplus
}
#endif

#endif /* AJOUR_DELTA_H */
