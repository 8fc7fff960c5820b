/* The elementwise steps (bnn_ew_step, see bnn.h) over a run of floats, in place: the one
 * definition of their semantics, used by the elementwise-chain kernels (reference.h,
 * compiled per path) and by bconv2d's output transform (its output steps).  One IEEE
 * operation per element and statement, never contracted into a fused multiply-add (C11
 * without GNU extensions: -ffp-contract=off), so every user gets the same bits. */
#ifndef BNN_ELTWISE_STEPS_H
#define BNN_ELTWISE_STEPS_H
#include <stdint.h>
#include "kernel.h"

/* One row of cols floats per step, every pointer to its own memory (restrict and build.sh's
 * -fno-trapping-math: what lets the compilers compute both sides of the selects of PReLU and
 * clip and vectorise them instead of branching per element). */
BNN_INLINE void bnn_ew_affine_row(float *restrict y, const float *restrict a, const float *restrict b,
                                  int32_t n) {
    if (a && b) {
        for (int32_t i = 0; i < n; i++) {
            float m = y[i] * a[i];
            y[i] = m + b[i];
        }
    } else if (a) {
        for (int32_t i = 0; i < n; i++) y[i] = y[i] * a[i];
    } else if (b) {
        for (int32_t i = 0; i < n; i++) y[i] = y[i] + b[i];
    }
}

BNN_INLINE void bnn_ew_prelu_row(float *restrict y, const float *restrict a, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        float v = y[i], m = v * a[i];
        y[i] = v >= 0.0f ? v : m;
    }
}

BNN_INLINE void bnn_ew_clip_row(float *restrict y, const float *restrict lo, const float *restrict hi, int32_t n) {
    if (lo)
        for (int32_t i = 0; i < n; i++) {
            float v = y[i];
            y[i] = v > lo[i] || v != v ? v : lo[i];
        }
    if (hi)
        for (int32_t i = 0; i < n; i++) {
            float v = y[i];
            y[i] = v < hi[i] || v != v ? v : hi[i];
        }
}

BNN_INLINE void bnn_ew_add_row(float *restrict y, const float *restrict r, int32_t n) {
    for (int32_t i = 0; i < n; i++) y[i] = y[i] + r[i];
}

/* The steps (bnn_ew_step[n_steps]) in order over rows rows of cols floats at y (row stride
 * ld), in place, their parameters from channel ch0 on; r: the residual, laid out as y (not
 * y itself when a step is BNN_EW_ADD).  BNN_EW_DEF_STEPS(name, rows) defines it over the
 * rows rows##_affine_row, _prelu_row, _clip_row and _add_row (those above: bnn_ew_steps;
 * armv7 NEON's guarded ones: steps_neon.h). */
#define BNN_EW_DEF_STEPS(name, rows)                                                                                   \
    BNN_INLINE void name(const bnn_ew_step *steps, int32_t n_steps, float *y, const float *r, int64_t nrows,          \
                         int32_t cols, size_t ld, int32_t ch0) {                                                       \
        for (int32_t s = 0; s < n_steps; s++) {                                                                        \
            const float *a = steps[s].a ? steps[s].a + ch0 : NULL, *b = steps[s].b ? steps[s].b + ch0 : NULL;          \
            for (int64_t p = 0; p < nrows; p++) {                                                                      \
                float *yp = y + (size_t)p * ld;                                                                        \
                switch (steps[s].op) {                                                                                 \
                case BNN_EW_PRELU: rows##_prelu_row(yp, a, cols); break;                                               \
                case BNN_EW_CLIP: rows##_clip_row(yp, a, b, cols); break;                                              \
                case BNN_EW_ADD: rows##_add_row(yp, r + (size_t)p * ld, cols); break;                                  \
                default: rows##_affine_row(yp, a, b, cols); /* BNN_EW_AFFINE */                                        \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

BNN_EW_DEF_STEPS(bnn_ew_steps, bnn_ew)

#endif
