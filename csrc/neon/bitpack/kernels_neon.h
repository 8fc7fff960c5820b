/* NEON float bit-packing kernel (see kernel.h), aarch64: FCMGT + a weighted add across
 * (ADDV), 4 channels, in the shared vector loop of kernel.h.  armv7 NEON flushes denormals
 * to zero, which would change bits, so armhf packs with the reference.  Unpack: NEON on
 * both (4 channels a VSHL; no float arithmetic). */
#ifndef BNN_BITPACK_KERNELS_NEON_H
#define BNN_BITPACK_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "kernel.h"
#include "reference.h"
#include <arm_neon.h>
#if defined(__aarch64__)

/* 4 bits: bit i = v[i] < t[i] */
static inline uint32_t bitpack_neon_lt_bits(float32x4_t v, float32x4_t t) {
    static const uint32_t wts[4] = {1, 2, 4, 8};
    return vaddvq_u32(vandq_u32(vcltq_f32(v, t), vld1q_u32(wts)));
}

#define PACK_NEON_LANES 4
#define PACK_NEON_VEC float32x4_t
#define PACK_NEON_SET1 vdupq_n_f32
#define PACK_NEON_LOAD vld1q_f32
#define PACK_NEON_MUL vmulq_f32
#define PACK_NEON_ADD vaddq_f32
#define PACK_NEON_LT_BITS bitpack_neon_lt_bits
BNN_PACK_DEF_VEC_PIXEL(bitpack_pixel_neon, , PACK_NEON)
BNN_PACK_DEF_ROWS(bitpack_rows_neon, , bitpack_pixel_neon)
#else
#define bitpack_rows_neon bitpack_rows_portable /* armv7: NEON flushes denormals */
#endif

/* unpack (aarch64 and armv7: no float arithmetic): the word in every lane shifted left by
 * 31 - bit index (VSHL by a vector), the sign kept, ORed with 1.0f */
static inline uint32x4_t unpack_neon_signs(uint32_t word, int q) {
    const int32x4_t sh = vsubq_s32((int32x4_t){31, 30, 29, 28}, vdupq_n_s32(4 * q));
    return vandq_u32(vshlq_u32(vdupq_n_u32(word), sh), vdupq_n_u32(0x80000000u));
}
#define UNPACK_NEON_LANES 4
#define UNPACK_NEON_SIGNS unpack_neon_signs
#define UNPACK_NEON_OR_ONE(v) vorrq_u32((v), vdupq_n_u32(BNN_UNPACK_ONE))
#define UNPACK_NEON_STORE(p, v) vst1q_u32((uint32_t *)(void *)(p), (v))
BNN_UNPACK_DEF_VEC(unpack_rows_neon, , UNPACK_NEON)

static const bnn_bitpack_kernel bitpack_neon = {bitpack_rows_neon, unpack_rows_neon};
#endif /* defined(BNN_HAVE_NEON) */
#endif
