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
}

static void forget_update(ajour_updater *u)
{
    u->updating_len = 0u;
    u->offset = 0u;
}

static int apply_write(ajour_updater *u, const ajour_command *c)
{
    int same = u->updating_len > 0u &&
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
    default:
        return apply_swap(u, &c);
    }
}
