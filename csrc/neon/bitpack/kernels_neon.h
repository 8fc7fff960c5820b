/* NEON float bit-packing kernel (see kernel.h), aarch64: FCMGT + a weighted add across
 * (ADDV), 4 channels, in the shared vector loop of kernel.h.  armv7 NEON flushes denormals
 * to zero, which would change bits, so armhf packs with the reference. */
#ifndef BNN_BITPACK_KERNELS_NEON_H
#define BNN_BITPACK_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "kernel.h"
#include "reference.h"
#if defined(__aarch64__)
#include <arm_neon.h>

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
BNN_PACK_DEF_ROWS(bitpack_neon, , bitpack_pixel_neon)

#else
#define bitpack_neon bitpack_portable
#endif
#endif /* defined(BNN_HAVE_NEON) */
#endif
