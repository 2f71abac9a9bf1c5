#ifndef AJOUR_BOOT_IMAGE_H
#define AJOUR_BOOT_IMAGE_H
#include <stdint.h>

/* MCUboot's image format, as imgtool writes it (bootutil/image.h). */
#define IMAGE_MAGIC 0x96f3b83du
#define TLV_INFO_MAGIC 0x6907u
#define TLV_PROT_INFO_MAGIC 0x6908u
#define TLV_SHA256 0x10u
#define TLV_ED25519 0x24u

typedef struct {
    uint8_t major;
    uint8_t minor;
    uint16_t revision;
    uint32_t build;
    uint32_t hdr_size;
    uint32_t img_size;
} image_info;

typedef enum {
    IMAGE_OK = 0,
    IMAGE_NO_MAGIC,      /* no MCUboot header (erased or foreign) */
    IMAGE_BAD_HEADER,    /* header or image size outside the slot */
    IMAGE_BAD_TLV,       /* TLV area missing, malformed or outside the slot */
    IMAGE_NO_HASH,       /* no SHA-256 TLV */
    IMAGE_HASH_MISMATCH, /* header + image + protected TLVs do not hash to it */
    IMAGE_NO_SIGNATURE,  /* a key is required and there is no ED25519 TLV */
    IMAGE_BAD_SIGNATURE  /* the ED25519 signature of the hash does not verify */
} image_result;

/* Check the image at slot[0..slot_size): header, TLVs, SHA-256 and, with `pubkey` (32
 * bytes, or NULL for none), the ED25519 signature of the SHA-256 (imgtool signs the digest).
 * Never reads outside the slot. */
image_result image_check(const uint8_t *slot, uint32_t slot_size, const uint8_t *pubkey,
                         image_info *info);
const char *image_reason(image_result r);
#endif
