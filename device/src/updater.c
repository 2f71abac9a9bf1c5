/*
 * The updater: one status/command exchange per step, the reference behaviour being
 * delivery/device.py (SimulatedDevice) plus what a real device needs on top: bounds on
 * the slot, resumption from what the platform recorded, trial boot and confirmation.
 */
#include <string.h>

#include "ajour_update.h"

static int same_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t i;

    if (alen != blen) {
        return 0;
    }
    for (i = 0u; i < alen; i++) {
        if (a[i] != b[i]) {
            return 0;
        }
    }
    return 1;
}

int ajour_updater_init(ajour_updater *u, const ajour_platform *platform, uint8_t *buf,
                       size_t cap, uint32_t slot_size, const uint8_t *running,
                       size_t running_len, int pending_confirm,
                       const uint8_t *resume_version, size_t resume_len,
                       uint32_t resume_offset)
{
    if (u == NULL || platform == NULL || buf == NULL || platform->send == NULL ||
        platform->receive == NULL || platform->write == NULL || platform->swap == NULL ||
        platform->confirm == NULL || (running == NULL && running_len > 0u) ||
        (resume_version == NULL && resume_len > 0u)) {
        return AJOUR_E_ARG;
    }
    if (cap < AJOUR_MIN_BUFFER) {
        return AJOUR_E_BUFFER;
    }
    if (running_len > AJOUR_VERSION_MAX || resume_len > AJOUR_VERSION_MAX ||
        resume_offset > slot_size || (resume_len == 0u && resume_offset != 0u)) {
        return AJOUR_E_RANGE;
    }
    memset(u, 0, sizeof *u);
    u->platform = *platform;
    u->buf = buf;
    u->cap = cap;
    u->slot_size = slot_size;
    u->mtu = cap - AJOUR_WRITE_OVERHEAD > 0xFFFFFFFFu ? 0xFFFFFFFFu
                                                      : (uint32_t)(cap - AJOUR_WRITE_OVERHEAD);
    if (running_len > 0u) {
        memcpy(u->running, running, running_len);
    }
    u->running_len = running_len;
    if (resume_len > 0u) {
        memcpy(u->updating, resume_version, resume_len);
    }
    u->updating_len = resume_len;
    u->offset = resume_offset;
    u->pending_confirm = pending_confirm ? 1u : 0u;
    return AJOUR_OK;
}

void ajour_updater_status(const ajour_updater *u, ajour_status *st)
{
    memset(st, 0, sizeof *st);
    st->version.ptr = u->running;
    st->version.len = u->running_len;
    st->mtu.present = 1u;
    st->mtu.value = u->mtu;
    st->correlation_id.present = 1u;
    st->correlation_id.value = u->correlation_id;
    if (u->updating_len > 0u) {
        st->has_update = 1u;
        st->update_version.ptr = u->updating;
        st->update_version.len = u->updating_len;
        st->update_offset = u->offset;
    }
#if AJOUR_DELTA
    /* Not while a full image is written: its offset would be taken for a patch's. */
    if (u->read_running != NULL && !u->patch_failed && (u->updating_len == 0u || u->patching)) {
        st->patch = AJOUR_PATCH_DETOOLS;
    }
#endif
}

static void forget_update(ajour_updater *u)
{
    u->updating_len = 0u;
    u->offset = 0u;
#if AJOUR_DELTA
    u->patching = 0u;
#endif
}

#if AJOUR_DELTA
int ajour_updater_enable_delta(ajour_updater *u, ajour_delta_read_fn read_running,
                               uint32_t running_size)
{
    if (u == NULL || read_running == NULL) {
        return AJOUR_E_ARG;
    }
    u->read_running = read_running;
    u->running_size = running_size;
    u->patch_failed = 0u;
    return AJOUR_OK;
}

static int read_old(void *ctx, uint32_t offset, uint8_t *buf, size_t len)
{
    ajour_updater *u = ctx;

    return u->read_running(u->platform.ctx, offset, buf, len);
}

/* The rebuilt image, in order, through the platform's write (no version: not resumable). */
static int write_new(void *ctx, const uint8_t *data, size_t len)
{
    ajour_updater *u = ctx;

    if (u->platform.write(u->platform.ctx, NULL, 0u, u->patch_written, data, len) != 0) {
        return 1;
    }
    u->patch_written += (uint32_t)len;
    return 0;
}

/* WritePatch: offset 0 starts the applier; later bytes continue exactly where it is (its
 * state only goes forward). A patch that does not apply ends the advertising. */
static int apply_write_patch(ajour_updater *u, const ajour_command *c)
{
    int rc;

    if (c->version.len == 0u || c->version.len > AJOUR_VERSION_MAX) {
        return AJOUR_E_RANGE;
    }
    if (u->pending_confirm) {
        return AJOUR_STEP_REVERT;
    }
    if (u->read_running == NULL || u->patch_failed) {
        return AJOUR_E_RANGE; /* not advertised */
    }
    if (c->offset == 0u) {
        forget_update(u);
        u->patch_written = 0u;
        (void)ajour_delta_init(&u->delta, read_old, write_new, u, u->running_size,
                               u->slot_size);
        memcpy(u->updating, c->version.ptr, c->version.len);
        u->updating_len = c->version.len;
        u->patching = 1u;
    } else if (!u->patching || c->offset != u->offset ||
               !same_bytes(c->version.ptr, c->version.len, u->updating, u->updating_len)) {
        return AJOUR_E_RANGE;
    }
    if (c->data.len > 0xFFFFFFFFu - u->offset) {
        return AJOUR_E_RANGE;
    }
    rc = ajour_delta_feed(&u->delta, c->data.ptr, c->data.len);
    if (rc != AJOUR_DELTA_OK) {
        forget_update(u);
        if (rc == AJOUR_DELTA_E_IO) {
            return AJOUR_E_IO; /* the flash, not the patch: start it over */
        }
        u->patch_failed = 1u;
        return AJOUR_E_VERIFY;
    }
    u->offset += (uint32_t)c->data.len;
    return AJOUR_STEP_WROTE;
}
#endif

static int apply_write(ajour_updater *u, const ajour_command *c)
{
    int same;

#if AJOUR_DELTA
    if (u->patching && !u->pending_confirm) {
        forget_update(u); /* the full image instead of the patch: it starts at 0 */
    }
#endif
    same = u->updating_len > 0u &&
           same_bytes(c->version.ptr, c->version.len, u->updating, u->updating_len);
    if (c->version.len == 0u || c->version.len > AJOUR_VERSION_MAX) {
        return AJOUR_E_RANGE;
    }
    if (u->pending_confirm) {
        /* On trial, the other slot holds the image to revert to: never overwrite it. */
        return AJOUR_STEP_REVERT;
    }
    /* A new version starts at 0; a known one continues without a gap. */
    if (same ? c->offset > u->offset : c->offset != 0u) {
        return AJOUR_E_RANGE;
    }
    if (c->offset > u->slot_size || c->data.len > (size_t)(u->slot_size - c->offset)) {
        return AJOUR_E_RANGE;
    }
    if (u->platform.write(u->platform.ctx, c->version.ptr, c->version.len, c->offset,
                          c->data.ptr, c->data.len) != 0) {
        /* What is in the slot before this offset is intact (for a known version). */
        if (same) {
            u->offset = c->offset;
        } else {
            forget_update(u);
        }
        return AJOUR_E_IO;
    }
    if (!same) {
        memcpy(u->updating, c->version.ptr, c->version.len);
        u->updating_len = c->version.len;
    }
    u->offset = c->offset + (uint32_t)c->data.len;
    return AJOUR_STEP_WROTE;
}

static int apply_swap(ajour_updater *u, const ajour_command *c)
{
    int rc;

    if (u->pending_confirm) {
        return AJOUR_STEP_REVERT;
    }
    if (u->updating_len == 0u || u->offset == 0u || c->checksum.len != AJOUR_SHA256_LEN ||
        !same_bytes(c->version.ptr, c->version.len, u->updating, u->updating_len)) {
        forget_update(u);
        return AJOUR_E_RANGE;
    }
#if AJOUR_DELTA
    if (u->patching) {
        /* The image the patch rebuilt, verified by the platform as a full one. */
        rc = ajour_delta_finish(&u->delta) == AJOUR_DELTA_OK
                 ? u->platform.swap(u->platform.ctx, u->updating, u->updating_len,
                                    u->patch_written, c->checksum.ptr)
                 : 1;
        forget_update(u);
        if (rc != 0) {
            u->patch_failed = 1u; /* fall back: the next status asks for the full image */
            return AJOUR_E_VERIFY;
        }
        return AJOUR_STEP_SWAP;
    }
#endif
    rc = u->platform.swap(u->platform.ctx, u->updating, u->updating_len, u->offset,
                          c->checksum.ptr);
    forget_update(u);
    return rc == 0 ? AJOUR_STEP_SWAP : AJOUR_E_VERIFY;
}

int ajour_updater_step(ajour_updater *u)
{
    ajour_status st;
    ajour_command c;
    size_t len = 0u;
    int rc;

    if (u == NULL) {
        return AJOUR_E_ARG;
    }
    u->correlation_id++;
    ajour_updater_status(u, &st);
    rc = ajour_encode_status(&st, u->buf, u->cap, &len);
    if (rc != AJOUR_OK) {
        return rc;
    }
    if (u->platform.send(u->platform.ctx, u->buf, len) != 0) {
        return AJOUR_E_IO;
    }
    len = 0u;
    if (u->platform.receive(u->platform.ctx, u->buf, u->cap, &len) != 0 || len > u->cap) {
        return AJOUR_E_IO;
    }
    rc = ajour_decode_command(u->buf, len, &c);
    if (rc != AJOUR_OK) {
        return rc;
    }
    if (c.correlation_id.present && c.correlation_id.value != u->correlation_id) {
        return AJOUR_E_STALE;
    }
    switch (c.kind) {
    case AJOUR_CMD_WAIT:
        u->poll = c.poll.present ? c.poll.value : 0u;
        return AJOUR_STEP_WAIT;
    case AJOUR_CMD_SYNC:
        u->poll = c.poll.present ? c.poll.value : 0u;
        if (u->pending_confirm &&
            same_bytes(c.version.ptr, c.version.len, u->running, u->running_len)) {
            if (u->platform.confirm(u->platform.ctx) != 0) {
                return AJOUR_E_IO;
            }
            u->pending_confirm = 0u;
        }
        return AJOUR_STEP_SYNCED;
    case AJOUR_CMD_WRITE:
        return apply_write(u, &c);
#if AJOUR_DELTA
    case AJOUR_CMD_WRITE_PATCH:
        return apply_write_patch(u, &c);
#endif
    default:
        return apply_swap(u, &c);
    }
}
