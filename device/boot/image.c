/* The MCUboot image check: header, TLV area, SHA-256 over header + image + protected TLVs. */
#include "image.h"

#include "ajour_update.h"

int crypto_sign_open(unsigned char *m, unsigned long long *mlen, const unsigned char *sm,
                     unsigned long long smlen, const unsigned char *pk);

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p)
{
    return le16(p) | le16(p + 2) << 16;
}

#ifdef BOOT_PUBKEY
/* Ed25519 over the 32-byte digest: crypto_sign_open takes signature || message. */
static int signature_ok(const uint8_t *sig, const uint8_t *digest, const uint8_t *pubkey)
{
    uint8_t sm[64u + AJOUR_SHA256_LEN];
    uint8_t m[sizeof sm];
    unsigned long long mlen = 0u;
    uint32_t i;

    for (i = 0u; i < 64u; i++) {
        sm[i] = sig[i];
    }
    for (i = 0u; i < AJOUR_SHA256_LEN; i++) {
        sm[64u + i] = digest[i];
    }
    return crypto_sign_open(m, &mlen, sm, sizeof sm, pubkey) == 0;
}
#else
/* Built without a key (no Ed25519 linked in): no key can be checked. */
static int signature_ok(const uint8_t *sig, const uint8_t *digest, const uint8_t *pubkey)
{
    (void)sig;
    (void)digest;
    (void)pubkey;
    return 0;
}
#endif

image_result image_check(const uint8_t *slot, uint32_t slot_size, const uint8_t *pubkey,
                         image_info *info)
{
    uint32_t hdr_size, prot_size, img_size, off, end;
    const uint8_t *hash = 0;
    const uint8_t *sig = 0;
    ajour_sha256 s;
    uint8_t digest[AJOUR_SHA256_LEN];
    uint32_t i;

    if (slot_size < 32u || le32(slot) != IMAGE_MAGIC) {
        return IMAGE_NO_MAGIC;
    }
    hdr_size = le16(slot + 8);
    prot_size = le16(slot + 10);
    img_size = le32(slot + 12);
    if (hdr_size < 32u || hdr_size > slot_size || img_size > slot_size - hdr_size ||
        prot_size > slot_size - hdr_size - img_size) {
        return IMAGE_BAD_HEADER;
    }
    info->major = slot[20];
    info->minor = slot[21];
    info->revision = (uint16_t)le16(slot + 22);
    info->build = le32(slot + 24);
    info->hdr_size = hdr_size;
    info->img_size = img_size;
    off = hdr_size + img_size;
    if (prot_size > 0u &&
        (prot_size < 4u || le16(slot + off) != TLV_PROT_INFO_MAGIC ||
         le16(slot + off + 2) != prot_size)) {
        return IMAGE_BAD_TLV;
    }
    off += prot_size;
    if (slot_size - off < 4u || le16(slot + off) != TLV_INFO_MAGIC) {
        return IMAGE_BAD_TLV;
    }
    end = le16(slot + off + 2);
    if (end < 4u || end > slot_size - off) {
        return IMAGE_BAD_TLV;
    }
    end += off;
    for (off += 4u; off < end;) {
        uint32_t type, len;
        if (end - off < 4u) {
            return IMAGE_BAD_TLV;
        }
        type = le16(slot + off);
        len = le16(slot + off + 2);
        off += 4u;
        if (len > end - off) {
            return IMAGE_BAD_TLV;
        }
        if (type == TLV_SHA256 && len == AJOUR_SHA256_LEN) {
            hash = slot + off;
        } else if (type == TLV_ED25519 && len == 64u) {
            sig = slot + off;
        }
        off += len;
    }
    if (hash == 0) {
        return IMAGE_NO_HASH;
    }
    ajour_sha256_init(&s);
    ajour_sha256_update(&s, slot, hdr_size + img_size + prot_size);
    ajour_sha256_final(&s, digest);
    for (i = 0u; i < AJOUR_SHA256_LEN; i++) {
        if (digest[i] != hash[i]) {
            return IMAGE_HASH_MISMATCH;
        }
    }
    if (pubkey == 0) {
        return IMAGE_OK;
    }
    if (sig == 0) {
        return IMAGE_NO_SIGNATURE;
    }
    return signature_ok(sig, digest, pubkey) ? IMAGE_OK : IMAGE_BAD_SIGNATURE;
}

const char *image_reason(image_result r)
{
    static const char *const reasons[] = {
        "ok", "no image header (erased or foreign)", "header sizes outside the slot",
        "TLV area missing or malformed", "no SHA-256 TLV", "SHA-256 mismatch",
        "no ED25519 signature", "ED25519 signature does not verify",
    };
    return (unsigned)r < sizeof reasons / sizeof reasons[0] ? reasons[r] : "?";
}
