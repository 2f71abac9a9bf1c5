/*
 * ajour_update: the embedded-update device client in C99.
 *
 * - a packed-CBOR encoder for Status and a decoder for Command (Wait, Sync, Write, Swap),
 *   byte for byte serde_cbor's `to_vec_packed` form (docs/delivery.md, device/README.md);
 * - an updater: one status/command exchange per ajour_updater_step(), driven through
 *   callbacks, so it runs over any transport (UART gateway, MQTT, a pipe on a host);
 * - SHA-256 (ajour_sha256_*), for platforms that verify images themselves.
 *
 * No malloc, no libc beyond memcpy/memset, no global state: all memory is the
 * caller's (the ajour_updater struct and one buffer it lends the updater).
 */
#ifndef AJOUR_UPDATE_H
#define AJOUR_UPDATE_H

#include <stddef.h>
#include <stdint.h>

/* Delta updates (docs/delivery.md, "Delta updates"): build the library, and everything that
 * includes this header, with -DAJOUR_DELTA=1 (and src/delta.c) to decode WritePatch and to
 * apply patches; 0 (the default) leaves the code and the structs as they were. */
#ifndef AJOUR_DELTA
#define AJOUR_DELTA 0
#endif

#if AJOUR_DELTA
#include "ajour_delta.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Longest version the updater keeps (bytes). Longer versions in a command are refused. */
#ifndef AJOUR_VERSION_MAX
#define AJOUR_VERSION_MAX 32u
#endif

/* Bytes of a Write command around its data, at most (variant, keys, heads, a version of
 * AJOUR_VERSION_MAX bytes, a 5-byte correlation id and offset, a 5-byte data head). */
#define AJOUR_WRITE_OVERHEAD (24u + AJOUR_VERSION_MAX)

/* The server never sends less than 16 bytes of data per Write (docs/delivery.md). */
#define AJOUR_MIN_BUFFER (AJOUR_WRITE_OVERHEAD + 16u)

#define AJOUR_SHA256_LEN 32u

/* Results. Negative values are errors; the updater's outcomes are >= 0. */
typedef enum {
    AJOUR_OK = 0,
    AJOUR_E_TRUNCATED = -1,  /* the input ends inside an item */
    AJOUR_E_MALFORMED = -2,  /* wrong type, unknown/duplicate key, tag, float, trailing bytes */
    AJOUR_E_MISSING = -3,    /* a required field is absent */
    AJOUR_E_RANGE = -4,      /* an integer over u32, a version over AJOUR_VERSION_MAX, an
                                offset past the slot or with a gap, a checksum not 32 bytes */
    AJOUR_E_BUFFER = -5,     /* the output buffer is too small */
    AJOUR_E_IO = -6,         /* a callback failed (send, receive, write, confirm) */
    AJOUR_E_VERIFY = -7,     /* the swap callback refused the image (checksum, signature) */
    AJOUR_E_STALE = -8,      /* the command answers another status (correlation id) */
    AJOUR_E_ARG = -9,        /* a NULL pointer or a bad argument from the caller */
    AJOUR_E_FRAME = -10      /* a UART frame that is no frame: bad COBS, too short, CRC wrong */
} ajour_result;

/* A byte string inside the decoded input (not copied: valid while the input is). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} ajour_bytes;

/* An optional u32 (serde's Option<u32>; CBOR null when absent). */
typedef struct {
    uint8_t present;
    uint32_t value;
} ajour_opt_u32;

typedef struct {
    ajour_bytes version;       /* running version */
    ajour_opt_u32 mtu;         /* largest Write data the device takes */
    ajour_opt_u32 correlation_id;
    uint8_t has_update;        /* an update is partly written: */
    ajour_bytes update_version;
    uint32_t update_offset;    /* bytes of it the device holds */
    uint32_t patch;            /* key 4: the patch formats applied (bit 0: detools
                                  sequential); 0: the key is not written */
} ajour_status;

#define AJOUR_PATCH_DETOOLS 1u

typedef enum {
    AJOUR_CMD_WAIT = 0,
    AJOUR_CMD_SYNC = 1,
    AJOUR_CMD_WRITE = 2,
    AJOUR_CMD_SWAP = 3,
    AJOUR_CMD_WRITE_PATCH = 4  /* decoded only with AJOUR_DELTA; the fields of Write, the
                                  data being patch bytes and the offset counting them */
} ajour_command_kind;

typedef struct {
    ajour_command_kind kind;
    ajour_bytes version;       /* Sync, Write, Swap */
    ajour_opt_u32 correlation_id;
    ajour_opt_u32 poll;        /* Wait, Sync: seconds until the next status */
    uint32_t offset;           /* Write, WritePatch */
    ajour_bytes data;          /* Write, WritePatch */
    ajour_bytes checksum;      /* Swap: SHA-256 of the whole image */
} ajour_command;

/* Encode `st` in the packed form into out[0..cap). On success *len is the size. */
int ajour_encode_status(const ajour_status *st, uint8_t *out, size_t cap, size_t *len);

/* Decode one packed Command from in[0..len) (exactly: trailing bytes are an error). The
 * byte strings in *cmd point into `in`. Never reads outside in[0..len). */
int ajour_decode_command(const uint8_t *in, size_t len, ajour_command *cmd);

/* ---- SHA-256 ---------------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} ajour_sha256;

void ajour_sha256_init(ajour_sha256 *s);
void ajour_sha256_update(ajour_sha256 *s, const uint8_t *data, size_t len);
void ajour_sha256_final(ajour_sha256 *s, uint8_t digest[AJOUR_SHA256_LEN]);

/* ---- the updater ------------------------------------------------------------------ */

/* What the platform provides. Every callback returns 0 on success, nonzero on failure. */
typedef struct {
    void *ctx;
    /* Send one status frame. */
    int (*send)(void *ctx, const uint8_t *frame, size_t len);
    /* Receive one command frame into buf[0..cap): set *len. A frame longer than cap must be
     * reported as a failure (or truncated: the decoder then refuses it). */
    int (*receive)(void *ctx, uint8_t *buf, size_t cap, size_t *len);
    /* Write data at `offset` of the update slot, then record durably that the slot holds
     * `version` up to offset + len (what ajour_updater_init's resume arguments are on the
     * next power-on). offset + len <= slot_size is already checked. With AJOUR_DELTA,
     * the image a patch rebuilds comes here too, in order, with version NULL and
     * version_len 0: it cannot be resumed, so record that nothing is (progress 0). */
    int (*write)(void *ctx, const uint8_t *version, size_t version_len, uint32_t offset,
                 const uint8_t *data, size_t len);
    /* The slot holds all `size` bytes of `version`: verify them against `checksum`
     * (SHA-256), and mark the slot to be booted on trial. Return 0 when marked (the caller
     * then reboots), nonzero when the image is refused: the updater starts over. */
    int (*swap)(void *ctx, const uint8_t *version, size_t version_len, uint32_t size,
                const uint8_t checksum[AJOUR_SHA256_LEN]);
    /* The running (trial) image has reported its version and got Sync: make it permanent. */
    int (*confirm)(void *ctx);
} ajour_platform;

typedef struct {
    ajour_platform platform;
    uint8_t *buf;              /* the one buffer: status out, command in */
    size_t cap;
    uint32_t slot_size;        /* the update slot's capacity in bytes */
    uint32_t mtu;              /* reported; default cap - AJOUR_WRITE_OVERHEAD */
    uint8_t running[AJOUR_VERSION_MAX];
    size_t running_len;
    uint8_t updating[AJOUR_VERSION_MAX]; /* the update being written (if updating_len) */
    size_t updating_len;
    uint32_t offset;           /* bytes of it in the slot */
    uint32_t correlation_id;   /* sent with each status; a command must echo it */
    uint8_t pending_confirm;   /* running on trial: confirm on Sync */
    uint32_t poll;             /* the last Wait/Sync poll (seconds), 0 if none */
#if AJOUR_DELTA
    ajour_delta_read_fn read_running; /* set by ajour_updater_enable_delta */
    uint32_t running_size;     /* bytes of the running image the patches apply to */
    uint32_t patch_written;    /* bytes of the new image rebuilt so far */
    uint8_t patching;          /* `updating` comes from a patch; `offset` counts its bytes */
    uint8_t patch_failed;      /* a patch failed: no more advertising until init */
    ajour_delta delta;
#endif
} ajour_updater;

/* Outcomes of one step (>= 0); errors are the negative ajour_result values. */
typedef enum {
    AJOUR_STEP_WAIT = 1,       /* Wait: ask again after u->poll seconds */
    AJOUR_STEP_SYNCED = 2,     /* Sync: running the target (confirmed if it was on trial) */
    AJOUR_STEP_WROTE = 3,      /* Write applied: step again now */
    AJOUR_STEP_SWAP = 4,       /* Swap accepted by the platform: reboot into the new slot */
    AJOUR_STEP_REVERT = 5      /* on trial, the server wants another image (Write or Swap):
                                  reboot unconfirmed, so the bootloader reverts */
} ajour_step;

/* Set up an updater. `running` is the version this firmware runs; `pending_confirm` says
 * it runs on trial (the bootloader will revert it unless confirmed). `resume_version`
 * (may be NULL with resume_len 0) and `resume_offset` are what the last write callback
 * recorded: the updater reports them, so the server continues at that offset. */
int ajour_updater_init(ajour_updater *u, const ajour_platform *platform, uint8_t *buf,
                       size_t cap, uint32_t slot_size, const uint8_t *running,
                       size_t running_len, int pending_confirm,
                       const uint8_t *resume_version, size_t resume_len,
                       uint32_t resume_offset);

/* One exchange: send the status, receive and apply one command. Returns an ajour_step,
 * or a negative ajour_result (the state is unchanged except as documented there). */
int ajour_updater_step(ajour_updater *u);

#if AJOUR_DELTA
/* Advertise detools patches (Status.patch bit 0) and apply WritePatch: `read_running`
 * reads the running image's bytes (the first `running_size` bytes of the running slot, the
 * image the patches were made from); the new image goes to the platform's `write` (version
 * NULL) and is checked by its `swap` as a full image is. A patch that does not apply, or
 * whose image `swap` refuses, makes the updater stop advertising until the next init, so
 * the server sends the full image. The bit is not sent while a full image is being
 * written (resumed). Call after ajour_updater_init. While a patch is applied, the applier
 * points into *u: do not copy or move the updater then. */
int ajour_updater_enable_delta(ajour_updater *u, ajour_delta_read_fn read_running,
                               uint32_t running_size);
#endif

/* The status the next step sends (pointers into *u). */
void ajour_updater_status(const ajour_updater *u, ajour_status *st);

/* ---- the UART framing (src/frame.c; delivery/frames.py is the gateway's side) ------------
 *
 * A frame is 0x00, the COBS encoding of the payload and its CRC-32 (zlib's, IEEE 802.3)
 * big-endian, then 0x00. COBS leaves no 0x00 inside, so 0x00 is the marker a reader
 * resynchronises on: garbage between frames is a bad piece of its own, a byte flipped
 * inside a frame spoils that frame alone. */

#define AJOUR_FRAME_CRC 4u
/* Bytes on the line for a payload of n bytes, at most. */
#define AJOUR_FRAME_WIRE(n) ((n) + AJOUR_FRAME_CRC + ((n) + AJOUR_FRAME_CRC) / 254u + 3u)

/* CRC-32 of data[0..len), continuing from `crc` (0 to start): zlib's crc32(). */
uint32_t ajour_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* Send payload[0..len) as one frame, byte by byte through put(ctx, byte). No buffer. */
void ajour_frame_write(const uint8_t *payload, size_t len, void (*put)(void *ctx, uint8_t b),
                       void *ctx);

/* Reads frames byte by byte into a buffer of the caller's (the payload only: the CRC stays
 * in the reader's 4-byte tail). */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;       /* payload bytes in buf */
    uint32_t crc;     /* of buf[0..len) */
    uint8_t tail[AJOUR_FRAME_CRC]; /* the last bytes decoded: the CRC at the end */
    uint8_t seen;     /* bytes in tail (0..4) */
    uint8_t left;     /* bytes left in the current COBS block */
    uint8_t zero;     /* the current block ends in an implied 0x00 (its code < 0xFF) */
    uint8_t state;    /* 0 between frames, 1 in one, 2 dropping one (too long or bad) */
} ajour_frame_reader;

void ajour_frame_reader_init(ajour_frame_reader *r, uint8_t *buf, size_t cap);

/* Give the reader the next byte of the line. Returns 0 (more bytes needed), 1 (a frame is
 * complete: its payload is buf[0..r->len), until the next call), AJOUR_E_FRAME (a piece
 * between markers that is no frame: dropped) or AJOUR_E_BUFFER (a frame longer than cap:
 * dropped up to its end marker, reported there). The reader is ready for the next frame in
 * every case. */
int ajour_frame_reader_put(ajour_frame_reader *r, uint8_t b);

#ifdef __cplusplus
}
#endif

#endif /* AJOUR_UPDATE_H */
