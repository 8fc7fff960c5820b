/* NEON pooling.  On aarch64 NEON is the baseline and IEEE, so the compiler already
 * vectorises the reference's loops with it: the NEON kernel is the reference.  armv7 NEON
 * flushes denormals to zero, so its kernel runs the reference but for the average of a
 * whole 2x2 window, which it computes with NEON, guarded as in eltwise/steps_neon.h. */
#ifndef BNN_POOL_KERNELS_NEON_H
#define BNN_POOL_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "reference.h"

#if defined(__aarch64__)
#define pool_neon pool_portable
#else
#include "../eltwise/steps_neon.h"

/* ((a + b) + c) + d, then / cnt as * (1 / cnt): the same bits when cnt is a power of two
 * (then 1 / cnt is exact and so is the quotient's rounding, denormal or not).  Each sum is
 * guarded (steps_neon.h's sums: a denormal operand or an exact sum below FLT_MIN leaves a
 * small sum); with |t| >= 2^-100, t / cnt (cnt <= 2^24) is normal.  A chunk of 16 channels
 * with a small or NaN sum, a maximum, another count and the last channels (c % 16) are
 * pool_2x2's. */
BNN_INLINE int pool_v7_avg_chunk(const float *a, const float *b, const float *c, const float *d, float *y,
                                float32x4_t inv) {
    float32x4_t v[4];
    uint32x4_t ok = vdupq_n_u32(~0u);
    BNN_UNROLLED(q, 4) {
        float32x4_t t = vaddq_f32(vld1q_f32(a + 4 * q), vld1q_f32(b + 4 * q));
        ok = vandq_u32(ok, bnn_v7_big(t));
        t = vaddq_f32(t, vld1q_f32(c + 4 * q));
        ok = vandq_u32(ok, bnn_v7_big(t));
        t = vaddq_f32(t, vld1q_f32(d + 4 * q));
        ok = vandq_u32(ok, bnn_v7_big(t));
        v[q] = vmulq_f32(t, inv);
    }
    return bnn_v7_store_if(ok, y, v, 4);
}

static inline int pool_v7_power_of_two(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x807FFFFFu) == 0 && u >= 0x3F800000u && u <= 0x4B800000u; /* 1 .. 2^24 */
}

BNN_INLINE void pool_2x2_v7(const float *restrict a, const float *restrict b, const float *restrict c,
                            const float *restrict d, float *restrict y, size_t n, int is_max, float cnt) {
    size_t i = 0;
    if (!is_max && pool_v7_power_of_two(cnt)) {
        const float32x4_t inv = vdupq_n_f32(1.0f / cnt);
        for (; i + BNN_EW_V7_CHUNK <= n; i += BNN_EW_V7_CHUNK)
            if (!pool_v7_avg_chunk(a + i, b + i, c + i, d + i, y + i, inv))
                pool_2x2(a + i, b + i, c + i, d + i, y + i, BNN_EW_V7_CHUNK, 0, cnt);
    }
    if (i < n) pool_2x2(a + i, b + i, c + i, d + i, y + i, n - i, is_max, cnt);
}

static void pool_neon(void *arg, int64_t begin, int64_t end) POOL_ROWS_BODY_WITH(pool_2x2_v7)
#endif

#endif /* defined(BNN_HAVE_NEON) */
#endif
