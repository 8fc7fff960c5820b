/* Portable pooling kernel: plain C, defines the semantics (see kernel.h).  The loops are
 * elementwise IEEE operations, which the compilers vectorise; kernels_x86.h compiles the
 * same C for AVX2 and AVX-512, so every path gives the same results. */
#ifndef BNN_POOL_REFERENCE_H
#define BNN_POOL_REFERENCE_H
#include <string.h>
#include "kernel.h"

/* The per-position operations, on non-overlapping rows (restrict: vectorised without
 * alias checks).  Max is (x > y ? x : y), NaN handling included, in every build. */
BNN_INLINE void row_max(float *restrict y, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > y[i] ? x[i] : y[i];
}
BNN_INLINE void row_add(float *restrict y, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
BNN_INLINE void row_div(float *restrict y, float d, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] /= d;
}

/* A 2x2 window: ((a + b) + c) + d, then / cnt (or the max in that order), per channel. */
BNN_INLINE void pool_2x2(const float *restrict a, const float *restrict b, const float *restrict c,
                         const float *restrict d, float *restrict y, size_t n, int is_max, float cnt) {
    if (is_max) {
        for (size_t i = 0; i < n; i++) {
            float m = b[i] > a[i] ? b[i] : a[i];
            m = c[i] > m ? c[i] : m;
            y[i] = d[i] > m ? d[i] : m;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float t = a[i] + b[i];
            t = t + c[i];
            t = t + d[i];
            y[i] = t / cnt;
        }
    }
}

/* Binary max of one output pixel: the AND of the valid window positions' words (order
 * does not matter; all ones ANDed with at least one position), no call per position. */
BNN_INLINE void bmax_pixel(const uint32_t *restrict x, size_t row_words, size_t c, int64_t nky, int64_t nkx,
                           uint32_t *restrict y) {
    if (nky == 2 && nkx == 2) { /* the usual 2x2 window: one pass */
        for (size_t i = 0; i < c; i++) y[i] = x[i] & x[c + i] & x[row_words + i] & x[row_words + c + i];
        return;
    }
    for (size_t i = 0; i < c; i++) {
        uint32_t acc = ~0u;
        for (int64_t ky = 0; ky < nky; ky++)
            for (int64_t kx = 0; kx < nkx; kx++) acc &= x[(size_t)ky * row_words + (size_t)kx * c + i];
        y[i] = acc;
    }
}

/* The body of a kernel (void *arg, int64_t begin, int64_t end): output rows [begin, end).
 * The first valid window position is copied, the others are combined in row-major window
 * order, then the average is divided by its count.  A whole 2x2 window is one call of
 * pool_2x2_fn (pool_2x2, or its like). */
#define POOL_ROWS_BODY_WITH(pool_2x2_fn)                                                            \
    {                                                                                               \
        const pool_job *j = arg;                                                                    \
        const bnn_window *w = j->w;                                                                 \
        const size_t c = j->c;                                                                      \
        for (int64_t row = begin; row < end; row++) {                                               \
            int64_t b = row / j->out_h, oy = row % j->out_h;                                        \
            int64_t iy0 = oy * w->stride_h - w->pad_top;                                            \
            int64_t ky0 = iy0 < 0 ? -iy0 : 0;                                                       \
            int64_t ky1 = w->in_h - iy0 < w->kernel_h ? w->in_h - iy0 : w->kernel_h;                \
            for (int64_t ox = 0; ox < j->out_w; ox++) {                                             \
                int64_t ix0 = ox * w->stride_w - w->pad_left;                                       \
                int64_t kx0 = ix0 < 0 ? -ix0 : 0;                                                   \
                int64_t kx1 = w->in_w - ix0 < w->kernel_w ? w->in_w - ix0 : w->kernel_w;            \
                size_t opix = (size_t)row * (size_t)j->out_w + (size_t)ox;                          \
                if (j->kind == POOL_BMAX) {                                                         \
                    size_t i00 = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky0)) * (size_t)w->in_w\
                                 + (size_t)(ix0 + kx0);                                             \
                    bmax_pixel((const uint32_t *)j->x + i00 * c, (size_t)w->in_w * c, c, ky1 - ky0, \
                               kx1 - kx0, (uint32_t *)j->y + opix * c);                             \
                    continue;                                                                       \
                }                                                                                   \
                if (ky1 - ky0 == 2 && kx1 - kx0 == 2) {                                             \
                    /* a whole 2x2 window (the usual downsampling): one pass, same order */         \
                    size_t i00 = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky0)) * (size_t)w->in_w\
                                 + (size_t)(ix0 + kx0);                                             \
                    pool_2x2_fn((const float *)j->x + i00 * c, (const float *)j->x + (i00 + 1) * c, \
                                (const float *)j->x + (i00 + (size_t)w->in_w) * c,                  \
                                (const float *)j->x + (i00 + (size_t)w->in_w + 1) * c,              \
                                (float *)j->y + opix * c, c, j->kind == POOL_MAX,                   \
                                j->include_pad ? (float)(w->kernel_h * w->kernel_w) : 4.0f);        \
                    continue;                                                                       \
                }                                                                                   \
                int first = 1;                                                                      \
                for (int64_t ky = ky0; ky < ky1; ky++) {                                            \
                    for (int64_t kx = kx0; kx < kx1; kx++) {                                        \
                        size_t ipix = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky)) * (size_t)w->in_w\
                                      + (size_t)(ix0 + kx);                                         \
                        const float *xp = (const float *)j->x + ipix * c;                           \
                        float *yp = (float *)j->y + opix * c;                                       \
                        if (first) memcpy(yp, xp, c * sizeof *yp);                                  \
                        else if (j->kind == POOL_MAX) row_max(yp, xp, c);                           \
                        else row_add(yp, xp, c);                                                    \
                        first = 0;                                                                  \
                    }                                                                               \
                }                                                                                   \
                if (j->kind == POOL_AVG) {                                                          \
                    float cnt = j->include_pad ? (float)(w->kernel_h * w->kernel_w)                 \
                                               : (float)((ky1 - ky0) * (kx1 - kx0));                \
                    row_div((float *)j->y + opix * c, cnt, c);                                      \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }

#define POOL_ROWS_BODY POOL_ROWS_BODY_WITH(pool_2x2)

static void pool_portable(void *arg, int64_t begin, int64_t end) POOL_ROWS_BODY

#endif
