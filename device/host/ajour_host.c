/*
 * ajour_host: the C library on a host, speaking length-prefixed frames (4-byte big-endian
 * length, then the bytes) on stdin/stdout. Used by the Python tests (tests/test_device_lib.py).
 *
 *   ajour_host decode   each input frame is a command: one line per frame on stdout,
 *                       "ERR <code>" or "OK <kind> <version> <corr> <poll> <offset> <data>
 *                       <checksum>" (byte strings as x<hex>, absent integers as -)
 *   ajour_host encode   each input frame is a text line "<version hex|.> <mtu|-> <corr|->
 *                       <update version hex|-> <offset>": one output frame, the status
 *   ajour_host update RUNNING SLOT STATE BUFSIZE SLOTSIZE [POWER_OFF_AFTER_WRITES]
 *                       the updater: status frames out, command frames in, until Sync
 *                       while running the target. SLOT is the update slot (a file), STATE
 *                       its progress ("<version hex> <offset>"), read back on start: a
 *                       new process is a power cycle. Exit 0 synced, 3 powered off, 1 error.
 *                       Events go to stderr, one per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ajour_update.h"

static int read_frame(uint8_t *buf, size_t cap, size_t *len)
{
    uint8_t h[4];
    size_t n;

    if (fread(h, 1u, 4u, stdin) != 4u) {
        return 1;
    }
    n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (n > cap) {
        /* too long for the buffer: drain it, report a failure */
        while (n-- > 0u && fgetc(stdin) != EOF) {
        }
        return 2;
    }
    if (n > 0u && fread(buf, 1u, n, stdin) != n) {
        return 1;
    }
    *len = n;
    return 0;
}

static int write_frame(const uint8_t *buf, size_t len)
{
    uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                    (uint8_t)len};
    if (fwrite(h, 1u, 4u, stdout) != 4u || (len > 0u && fwrite(buf, 1u, len, stdout) != len)) {
        return 1;
    }
    return fflush(stdout) != 0;
}

static void print_hex(FILE *f, ajour_bytes b)
{
    size_t i;
    fputc('x', f);
    for (i = 0u; i < b.len; i++) {
        fprintf(f, "%02x", b.ptr[i]);
    }
}

static void print_opt(FILE *f, ajour_opt_u32 v)
{
    if (v.present) {
        fprintf(f, " %lu", (unsigned long)v.value);
    } else {
        fputs(" -", f);
    }
}

static int run_decode(void)
{
    static uint8_t buf[1u << 20];
    size_t len;
    ajour_command c;

    while (read_frame(buf, sizeof buf, &len) == 0) {
        /* an exact-size heap copy, so ASan catches any read past the input */
        uint8_t *copy = malloc(len == 0u ? 1u : len);
        int rc;
        if (copy == NULL) {
            return 1;
        }
        memcpy(copy, buf, len);
        rc = ajour_decode_command(copy, len, &c);
        if (rc != AJOUR_OK) {
            printf("ERR %d\n", rc);
        } else {
            printf("OK %d ", (int)c.kind);
            print_hex(stdout, c.version);
            print_opt(stdout, c.correlation_id);
            print_opt(stdout, c.poll);
            printf(" %lu ", (unsigned long)c.offset);
            print_hex(stdout, c.data);
            fputc(' ', stdout);
            print_hex(stdout, c.checksum);
            fputc('\n', stdout);
        }
        free(copy);
        fflush(stdout);
    }
    return 0;
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0u;
    unsigned v;
    while (hex[0] != '\0' && hex[1] != '\0' && n < cap && sscanf(hex, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

static void parse_opt(const char *s, ajour_opt_u32 *v)
{
    v->present = strcmp(s, "-") != 0;
    v->value = v->present ? (uint32_t)strtoul(s, NULL, 10) : 0u;
}

static int run_encode(void)
{
    static uint8_t in[4096];
    static uint8_t out[4096];
    static uint8_t ver[1024];
    static uint8_t uver[1024];
    char line[4097];
    char a[2049], b[32], c[32], d[2049], e[32];
    size_t len;
    ajour_status st;

    while (read_frame(in, sizeof in - 1u, &len) == 0) {
        memcpy(line, in, len);
        line[len] = '\0';
        if (sscanf(line, "%2048s %31s %31s %2048s %31s", a, b, c, d, e) != 5) {
            return 1;
        }
        memset(&st, 0, sizeof st);
        st.version.ptr = ver;
        st.version.len = strcmp(a, ".") == 0 ? 0u : unhex(a, ver, sizeof ver);
        parse_opt(b, &st.mtu);
        parse_opt(c, &st.correlation_id);
        if (strcmp(d, "-") != 0) {
            st.has_update = 1u;
            st.update_version.ptr = uver;
            st.update_version.len = strcmp(d, ".") == 0 ? 0u : unhex(d, uver, sizeof uver);
            st.update_offset = (uint32_t)strtoul(e, NULL, 10);
        }
        if (ajour_encode_status(&st, out, sizeof out, &len) != AJOUR_OK ||
            write_frame(out, len) != 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- the updater over frames, with a file for a slot ---------------------------------- */

typedef struct {
    FILE *slot;
    const char *state_path;
    long writes_left; /* power off after this many writes; -1: never */
    uint8_t booted[AJOUR_VERSION_MAX];
    size_t booted_len;
} host_platform;

static int h_send(void *ctx, const uint8_t *frame, size_t len)
{
    (void)ctx;
    return write_frame(frame, len);
}

static int h_receive(void *ctx, uint8_t *buf, size_t cap, size_t *len)
{
    (void)ctx;
    return read_frame(buf, cap, len);
}

static int save_state(const char *path, const uint8_t *version, size_t vlen, uint32_t offset)
{
    FILE *f = fopen(path, "w");
    size_t i;
    if (f == NULL) {
        return 1;
    }
    for (i = 0u; i < vlen; i++) {
        fprintf(f, "%02x", version[i]);
    }
    fprintf(f, " %lu\n", (unsigned long)offset);
    return fclose(f) != 0;
}

static int h_write(void *ctx, const uint8_t *version, size_t vlen, uint32_t offset,
                   const uint8_t *data, size_t len)
{
    host_platform *p = ctx;
    if (p->writes_left == 0) {
        fprintf(stderr, "power off\n");
        exit(3);
    }
    if (p->writes_left > 0) {
        p->writes_left--;
    }
    if (fseek(p->slot, (long)offset, SEEK_SET) != 0 || fwrite(data, 1u, len, p->slot) != len ||
        fflush(p->slot) != 0) {
        return 1;
    }
    fprintf(stderr, "write %lu %lu\n", (unsigned long)offset, (unsigned long)len);
    return save_state(p->state_path, version, vlen, offset + (uint32_t)len);
}

static int h_swap(void *ctx, const uint8_t *version, size_t vlen, uint32_t size,
                  const uint8_t checksum[AJOUR_SHA256_LEN])
{
    host_platform *p = ctx;
    ajour_sha256 s;
    uint8_t chunk[512];
    uint8_t digest[AJOUR_SHA256_LEN];
    uint32_t left = size;

    ajour_sha256_init(&s);
    if (fseek(p->slot, 0L, SEEK_SET) != 0) {
        return 1;
    }
    while (left > 0u) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        if (fread(chunk, 1u, n, p->slot) != n) {
            return 1;
        }
        ajour_sha256_update(&s, chunk, n);
        left -= (uint32_t)n;
    }
    ajour_sha256_final(&s, digest);
    if (memcmp(digest, checksum, AJOUR_SHA256_LEN) != 0) {
        fprintf(stderr, "swap refused: checksum\n");
        return 1;
    }
    memcpy(p->booted, version, vlen);
    p->booted_len = vlen;
    fprintf(stderr, "swap %.*s %lu\n", (int)vlen, (const char *)version, (unsigned long)size);
    return save_state(p->state_path, NULL, 0u, 0u);
}

static int h_confirm(void *ctx)
{
    (void)ctx;
    fprintf(stderr, "confirm\n");
    return 0;
}

static int run_update(int argc, char **argv)
{
    static uint8_t buf[1u << 16];
    host_platform hp;
    ajour_platform p = {0};
    ajour_updater u;
    uint8_t resume[AJOUR_VERSION_MAX];
    size_t resume_len = 0u;
    unsigned long resume_offset = 0u;
    size_t cap;
    uint32_t slot_size;
    const char *running;
    size_t running_len;
    int pending = 0;
    int rc;
    int steps;
    char hex[2 * AJOUR_VERSION_MAX + 3]; /* %66s: 66 characters and the NUL */
    FILE *st;

    if (argc < 7) {
        return 2;
    }
    running = argv[2];
    running_len = strlen(running);
    cap = (size_t)strtoul(argv[5], NULL, 10);
    slot_size = (uint32_t)strtoul(argv[6], NULL, 10);
    if (cap > sizeof buf) {
        return 2;
    }
    memset(&hp, 0, sizeof hp);
    hp.state_path = argv[4];
    hp.writes_left = argc > 7 ? strtol(argv[7], NULL, 10) : -1;
    hp.slot = fopen(argv[3], "r+b");
    if (hp.slot == NULL) {
        hp.slot = fopen(argv[3], "w+b");
    }
    if (hp.slot == NULL) {
        return 1;
    }
    st = fopen(hp.state_path, "r");
    if (st != NULL) {
        if (fscanf(st, "%66s %lu", hex, &resume_offset) == 2) {
            resume_len = unhex(hex, resume, sizeof resume);
        } else {
            resume_offset = 0u; /* "<empty> 0": nothing in the slot */
        }
        fclose(st);
        fprintf(stderr, "resume %lu\n", resume_offset);
    }
    p.ctx = &hp;
    p.send = h_send;
    p.receive = h_receive;
    p.write = h_write;
    p.swap = h_swap;
    p.confirm = h_confirm;
    rc = ajour_updater_init(&u, &p, buf, cap, slot_size, (const uint8_t *)running,
                            running_len, pending, resume, resume_len,
                            (uint32_t)resume_offset);
    for (steps = 0; rc == AJOUR_OK && steps < 100000; steps++) {
        rc = ajour_updater_step(&u);
        if (rc == AJOUR_STEP_WROTE) {
            rc = AJOUR_OK;
        } else if (rc == AJOUR_STEP_SWAP) {
            /* reboot into the new image, on trial */
            fprintf(stderr, "reboot\n");
            rc = ajour_updater_init(&u, &p, buf, cap, slot_size, hp.booted, hp.booted_len, 1,
                                    NULL, 0u, 0u);
        } else if (rc == AJOUR_STEP_SYNCED) {
            fprintf(stderr, "synced %.*s\n", (int)u.running_len, (const char *)u.running);
            return 0;
        } else if (rc == AJOUR_E_IO) {
            fprintf(stderr, "error %d: transport closed\n", rc);
            return 1;
        } else if (rc < 0) {
            fprintf(stderr, "error %d\n", rc);
            rc = AJOUR_OK; /* a device keeps asking; the Python side ends the session */
        } else {
            fprintf(stderr, "step %d\n", rc);
            return 1;
        }
    }
    fprintf(stderr, "stopped %d\n", rc);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) {
        return run_decode();
    }
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) {
        return run_encode();
    }
    if (argc >= 2 && strcmp(argv[1], "update") == 0) {
        return run_update(argc, argv);
    }
    fprintf(stderr, "usage: ajour_host decode | encode | update RUNNING SLOT STATE BUFSIZE "
                    "SLOTSIZE [POWER_OFF_AFTER_WRITES]\n");
    return 2;
}
