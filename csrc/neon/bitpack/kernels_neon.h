/* NEON float bit-packing kernels (see kernel.h).  aarch64: FCMGT + a weighted add across
 * (ADDV), 4 channels, in the shared vector loop of kernel.h.  armv7: its own loop, as armv7
 * NEON flushes denormals to zero (below).  Unpack: NEON on both (4 channels a VSHL; no
 * float arithmetic). */
#ifndef BNN_BITPACK_KERNELS_NEON_H
#define BNN_BITPACK_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "kernel.h"
#include "reference.h"
#include <arm_neon.h>
#include <string.h>
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
/* armv7: Advanced SIMD arithmetic is always flush-to-zero: a denormal input counts as 0
 * and a result whose exact value is below FLT_MIN in magnitude becomes 0, where the
 * reference (VFP, IEEE) keeps it.  So each word is computed with NEON while a guard
 * collects every lane whose deciding value is tiny (|v| < FLT_MIN, i.e. 0 or flushed): x
 * when there is no scale (with one, a denormal x makes the product tiny), the product,
 * the sum.  A word with such a lane is computed again by the reference; scales that are
 * denormal or not finite, biases or a threshold that are denormal send the whole call to
 * it.  Values that are not tiny give NEON exactly the IEEE product, sum and ordered compare
 * (round to nearest; NaN compares false), so the bits equal the reference's on every
 * input.  Exact zeros also take the reference (correct, only slower).  The compares are
 * written in asm: GCC lowers vcltq_f32 on armv7 to four VFP compares unless -ffast-math. */
static inline uint32x4_t bitpack_v7_lt(float32x4_t a, float32x4_t b) { /* a < b: VCGT b, a */
    uint32x4_t r;
    __asm__("vcgt.f32 %q0, %q1, %q2" : "=w"(r) : "w"(b), "w"(a));
    return r;
}

/* a scale NEON multiplies exactly as IEEE whenever the product is not tiny: not denormal,
 * and finite (inf times a flushed denormal x would be NaN, not inf) */
static inline int bitpack_v7_scale_ok(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return !bnn_denormal(v) && (u & 0x7F800000u) != 0x7F800000u;
}

/* One word from ng groups of 4 channels (ng <= 8) into *word; returns nonzero when the
 * guard caught a tiny value (then *word is not set). */
BNN_INLINE int bitpack_v7_word(const float *x, const float *scale, const float *bias, float32x4_t vt, int ng,
                               const int S, const int B, uint32_t *word) {
    const float32x4_t tiny = vdupq_n_f32(0x1p-126f);
    uint32x4_t acc = vdupq_n_u32(0), guard = vdupq_n_u32(0), bit = {1, 2, 4, 8}; /* group q's bits */
    BNN_UNROLLED(q, ng) {
        float32x4_t v = vld1q_f32(x);
        x += 4;
        if (S) {
            v = vmulq_f32(v, vld1q_f32(scale));
            scale += 4;
        }
        guard = vorrq_u32(guard, vcaltq_f32(v, tiny));
        if (B) {
            v = vaddq_f32(v, vld1q_f32(bias));
            bias += 4;
            guard = vorrq_u32(guard, vcaltq_f32(v, tiny));
        }
        acc = vorrq_u32(acc, vandq_u32(bitpack_v7_lt(v, vt), bit));
        bit = vshlq_n_u32(bit, 4);
    }
    uint32x2_t g = vorr_u32(vget_low_u32(guard), vget_high_u32(guard));
    if (vget_lane_u32(g, 0) | vget_lane_u32(g, 1)) return 1;
    uint32x2_t a = vorr_u32(vget_low_u32(acc), vget_high_u32(acc));
    *word = vget_lane_u32(a, 0) | vget_lane_u32(a, 1);
    return 0;
}

/* the rows with the scale (S) and the bias (B) present or not: constants, so each of the
 * four combinations is its own loop.  Full words and a tail word of a multiple of 4
 * channels by NEON (guarded), another tail by the reference. */
BNN_INLINE void bitpack_v7_rows(const float *x, int64_t np, int32_t c, const float *scale, const float *bias,
                                float thr, uint32_t *out, const int S, const int B) {
    const size_t words = bnn_packed_words(c), full = (size_t)c / 32;
    const int32_t tail = c - 32 * (int32_t)full, ch_t = 32 * (int32_t)full;
    const float32x4_t vt = vdupq_n_f32(thr);
    for (int64_t p = 0; p < np; p++) {
        const float *xp = x + (size_t)p * (size_t)c;
        uint32_t *op = out + (size_t)p * words;
        for (size_t wd = 0; wd < full; wd++) {
            const int32_t ch = (int32_t)(32 * wd);
            if (bitpack_v7_word(xp + ch, S ? scale + ch : NULL, B ? bias + ch : NULL, vt, 8, S, B, op + wd))
                bitpack_pixel_portable(xp + ch, 32, S ? scale + ch : NULL, B ? bias + ch : NULL, thr, op + wd);
        }
        if (tail && (tail % 4 || bitpack_v7_word(xp + ch_t, S ? scale + ch_t : NULL, B ? bias + ch_t : NULL, vt,
                                                 tail / 4, S, B, op + full)))
            bitpack_pixel_portable(xp + ch_t, tail, S ? scale + ch_t : NULL, B ? bias + ch_t : NULL, thr, op + full);
    }
}

static void bitpack_rows_neon(const float *x, int64_t np, int32_t c, const float *scale, const float *bias,
                              float thr, uint32_t *out) {
    int exact = !bnn_denormal(thr);
    for (int32_t i = 0; exact && i < c; i++)
        exact = !(scale && !bitpack_v7_scale_ok(scale[i])) && !(bias && bnn_denormal(bias[i]));
    if (!exact) bitpack_rows_portable(x, np, c, scale, bias, thr, out);
    else if (scale && bias) bitpack_v7_rows(x, np, c, scale, bias, thr, out, 1, 1);
    else if (scale) bitpack_v7_rows(x, np, c, scale, NULL, thr, out, 1, 0);
    else if (bias) bitpack_v7_rows(x, np, c, NULL, bias, thr, out, 0, 1);
    else bitpack_v7_rows(x, np, c, NULL, NULL, thr, out, 0, 0);
}
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
