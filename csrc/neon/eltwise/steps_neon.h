/* The elementwise steps (steps.h) on armv7 NEON, with the reference's bits.
 *
 * armv7's Advanced SIMD float arithmetic is always flush-to-zero and default-NaN: a
 * denormal operand counts as 0, a result whose exact value is below FLT_MIN in magnitude
 * becomes 0, and a NaN result loses its payload; the reference runs on VFP (IEEE).  So
 * each row is computed with NEON in chunks of 16 floats while a guard collects every lane
 * where a value that decides the result is small: below T = 2^-100 in magnitude (0
 * included) or NaN; for clip, denormal.  A chunk with such a lane is not stored; the
 * reference's row computes it instead.  What the guard looks at, per step:
 *   product y * a        the product: a denormal factor or an exact product below FLT_MIN
 *                        leaves NEON's product 0, an infinite one times a flushed factor NaN
 *   sum u + w            the sum: a denormal operand w changes an IEEE sum only when
 *                        |u| < 2^-102 (else |w| < ulp(u) / 2), so the sum is small too; an
 *                        exact sum below FLT_MIN is small
 *   PReLU                the chosen value: a denormal y compares as 0 and picks y itself,
 *                        which is small
 *   clip                 its input and bounds: a denormal one compares as 0 (a NaN compares
 *                        as IEEE does, and the chosen value is copied, not computed)
 * Values that pass give NEON exactly the IEEE product, sum and ordered compare (round to
 * nearest), hence the reference's bits on every input.  Small values are rare in a
 * network's activations; where they are common (a ReLU's zeros into a product) the chunks
 * take the reference: correct, only slower.  Compares are written in asm: GCC lowers the
 * vcgeq_f32 family on armv7 to VFP compares unless -ffast-math. */
#ifndef BNN_ELTWISE_STEPS_NEON_H
#define BNN_ELTWISE_STEPS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON) && !defined(__aarch64__)
#include <arm_neon.h>
#include "steps.h"

#define BNN_EW_V7_CHUNK 16 /* floats per guarded chunk: 4 vectors */

static inline uint32x4_t bnn_v7_cgt(float32x4_t a, float32x4_t b) { /* a > b */
    uint32x4_t r;
    __asm__("vcgt.f32 %q0, %q1, %q2" : "=w"(r) : "w"(a), "w"(b));
    return r;
}

static inline uint32x4_t bnn_v7_cge0(float32x4_t a) { /* a >= 0 */
    uint32x4_t r;
    __asm__("vcge.f32 %q0, %q1, #0" : "=w"(r) : "w"(a));
    return r;
}

static inline uint32x4_t bnn_v7_ceq(float32x4_t a, float32x4_t b) { /* a == b */
    uint32x4_t r;
    __asm__("vceq.f32 %q0, %q1, %q2" : "=w"(r) : "w"(a), "w"(b));
    return r;
}

static inline uint32x4_t bnn_v7_nan(float32x4_t a) { /* a != a */
    uint32x4_t r;
    __asm__("vceq.f32 %q0, %q1, %q1" : "=w"(r) : "w"(a));
    return vmvnq_u32(r);
}

/* the lanes that are denormal (not 0) */
static inline uint32x4_t bnn_v7_denormal(float32x4_t a) {
    uint32x4_t twice = vshlq_n_u32(vreinterpretq_u32_f32(a), 1); /* without the sign */
    return vcltq_u32(vsubq_u32(twice, vdupq_n_u32(1)), vdupq_n_u32(0x00FFFFFFu));
}

/* |v| >= 2^-100 (false for NaN), lane by lane: the guard's test */
static inline uint32x4_t bnn_v7_big(float32x4_t v) { return vcageq_f32(v, vdupq_n_f32(0x1p-100f)); }

/* Stores the nv vectors v at y and returns 1 when every lane of ok is set (the guard passed);
 * else stores nothing and returns 0. */
BNN_INLINE int bnn_v7_store_if(uint32x4_t ok, float *y, const float32x4_t *v, const int nv) {
    uint32x2_t m = vand_u32(vget_low_u32(ok), vget_high_u32(ok));
    if (!(vget_lane_u32(m, 0) & vget_lane_u32(m, 1))) return 0;
    BNN_UNROLLED(q, nv) vst1q_f32(y + 4 * q, v[q]);
    return 1;
}

/* The step op (constant: BNN_EW_*; AFFINE with its a and b present or not: A, B) on the
 * vector at y[0..4), its parameters at a and b, the residual at r; *ok keeps the guard. */
BNN_INLINE float32x4_t bnn_ew_v7_vec(const int op, const int A, const int B, const float *y, const float *a,
                                     const float *b, const float *r, uint32x4_t *ok) {
    float32x4_t v = vld1q_f32(y);
    if (op == BNN_EW_ADD) {
        v = vaddq_f32(v, vld1q_f32(r));
        *ok = vandq_u32(*ok, bnn_v7_big(v));
    } else if (op == BNN_EW_PRELU) {
        float32x4_t m = vmulq_f32(v, vld1q_f32(a));
        v = vbslq_f32(bnn_v7_cge0(v), v, m);
        *ok = vandq_u32(*ok, bnn_v7_big(v));
    } else if (op == BNN_EW_CLIP) { /* a: lo (A), b: hi (B); as steps.h: y kept when NaN */
        *ok = vbicq_u32(*ok, bnn_v7_denormal(v));
        if (A) {
            float32x4_t lo = vld1q_f32(a);
            *ok = vbicq_u32(*ok, bnn_v7_denormal(lo));
            v = vbslq_f32(vorrq_u32(bnn_v7_cgt(v, lo), bnn_v7_nan(v)), v, lo);
        }
        if (B) {
            float32x4_t hi = vld1q_f32(b);
            *ok = vbicq_u32(*ok, bnn_v7_denormal(hi));
            v = vbslq_f32(vorrq_u32(bnn_v7_cgt(hi, v), bnn_v7_nan(v)), v, hi);
        }
    } else { /* BNN_EW_AFFINE */
        if (A) {
            v = vmulq_f32(v, vld1q_f32(a));
            *ok = vandq_u32(*ok, bnn_v7_big(v));
        }
        if (B) {
            v = vaddq_f32(v, vld1q_f32(b));
            *ok = vandq_u32(*ok, bnn_v7_big(v));
        }
    }
    return v;
}

/* nv (1..4) vectors from y on; stored, returning 1, when the guard passed every lane */
BNN_INLINE int bnn_ew_v7_vecs(const int op, const int A, const int B, float *y, const float *a, const float *b,
                              const float *r, const int nv) {
    float32x4_t v[4];
    uint32x4_t ok = vdupq_n_u32(~0u);
    BNN_UNROLLED(q, nv) v[q] = bnn_ew_v7_vec(op, A, B, y + 4 * q, A ? a + 4 * q : a, B ? b + 4 * q : b,
                                            op == BNN_EW_ADD ? r + 4 * q : r, &ok);
    return bnn_v7_store_if(ok, y, v, nv);
}

/* the reference's row of n floats for the same step */
BNN_INLINE void bnn_ew_v7_scalar(const int op, float *y, const float *a, const float *b, const float *r, int32_t n) {
    if (op == BNN_EW_ADD) bnn_ew_add_row(y, r, n);
    else if (op == BNN_EW_PRELU) bnn_ew_prelu_row(y, a, n);
    else if (op == BNN_EW_CLIP) bnn_ew_clip_row(y, a, b, n);
    else bnn_ew_affine_row(y, a, b, n);
}

BNN_INLINE void bnn_ew_v7_row_ab(const int op, const int A, const int B, float *y, const float *a, const float *b,
                                 const float *r, int32_t n) {
    int32_t i = 0;
#define BNN_EW_V7_AT(p, i) ((p) ? (p) + (i) : (p))
    for (; i + BNN_EW_V7_CHUNK <= n; i += BNN_EW_V7_CHUNK)
        if (!bnn_ew_v7_vecs(op, A, B, y + i, BNN_EW_V7_AT(a, i), BNN_EW_V7_AT(b, i), BNN_EW_V7_AT(r, i), 4))
            bnn_ew_v7_scalar(op, y + i, BNN_EW_V7_AT(a, i), BNN_EW_V7_AT(b, i), BNN_EW_V7_AT(r, i), BNN_EW_V7_CHUNK);
    for (; i + 4 <= n; i += 4)
        if (!bnn_ew_v7_vecs(op, A, B, y + i, BNN_EW_V7_AT(a, i), BNN_EW_V7_AT(b, i), BNN_EW_V7_AT(r, i), 1))
            bnn_ew_v7_scalar(op, y + i, BNN_EW_V7_AT(a, i), BNN_EW_V7_AT(b, i), BNN_EW_V7_AT(r, i), 4);
    if (i < n) bnn_ew_v7_scalar(op, y + i, BNN_EW_V7_AT(a, i), BNN_EW_V7_AT(b, i), BNN_EW_V7_AT(r, i), n - i);
#undef BNN_EW_V7_AT
}

/* a step with two parameters, each there or not (affine: a, b; clip: lo, hi): each
 * combination its own loop */
BNN_INLINE void bnn_ew_v7_row_two(const int op, float *y, const float *a, const float *b, int32_t n) {
    if (a && b) bnn_ew_v7_row_ab(op, 1, 1, y, a, b, NULL, n);
    else if (a) bnn_ew_v7_row_ab(op, 1, 0, y, a, NULL, NULL, n);
    else if (b) bnn_ew_v7_row_ab(op, 0, 1, y, NULL, b, NULL, n);
}

/* the four rows of steps.h's names, for BNN_EW_DEF_STEPS */
BNN_INLINE void bnn_ew_v7_affine_row(float *y, const float *a, const float *b, int32_t n) {
    bnn_ew_v7_row_two(BNN_EW_AFFINE, y, a, b, n);
}

BNN_INLINE void bnn_ew_v7_prelu_row(float *y, const float *a, int32_t n) {
    bnn_ew_v7_row_ab(BNN_EW_PRELU, 1, 0, y, a, NULL, NULL, n);
}

BNN_INLINE void bnn_ew_v7_clip_row(float *y, const float *lo, const float *hi, int32_t n) {
    bnn_ew_v7_row_two(BNN_EW_CLIP, y, lo, hi, n);
}

BNN_INLINE void bnn_ew_v7_add_row(float *y, const float *r, int32_t n) {
    bnn_ew_v7_row_ab(BNN_EW_ADD, 0, 0, y, NULL, NULL, r, n);
}

BNN_EW_DEF_STEPS(bnn_ew_steps_neon, bnn_ew_v7)

#endif /* armv7 NEON */
#endif
