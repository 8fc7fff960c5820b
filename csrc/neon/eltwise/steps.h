/* The elementwise steps (bnn_ew_step, see bnn.h) over a run of floats, in place: the one
 * definition of their semantics, used by the elementwise-chain kernels (reference.h,
 * compiled per path) and by bconv2d's output transform (its output steps).  One IEEE
 * operation per element and statement, never contracted into a fused multiply-add (C11
 * without GNU extensions: -ffp-contract=off), so every user gets the same bits. */
#ifndef BNN_ELTWISE_STEPS_H
#define BNN_ELTWISE_STEPS_H
#include <stdint.h>
#include "kernel.h"

/* Every loop of a step: rows_ rows of cols_ floats, row p at y_ + p * ld_ (yp) and its
 * residual at r_ + p * ld_ (rp); STMT without top-level commas. */
#define EW_ROWS(rows_, cols_, ld_, y_, r_, STMT)                                                    \
    for (int64_t p = 0; p < (rows_); p++) {                                                         \
        float *yp = (y_) + (size_t)p * (size_t)(ld_);                                               \
        const float *rp = (r_) ? (r_) + (size_t)p * (size_t)(ld_) : NULL;                           \
        (void)rp;                                                                                   \
        for (int32_t ch = 0; ch < (cols_); ch++) STMT;                                              \
    }

/* The steps (bnn_ew_step[n_steps_]) in order over rows_ rows of cols_ floats at y_ (row
 * stride ld_), in place, their parameters from channel ch0_ on; r_: the residual, laid
 * out as y_. */
#define EW_STEPS(steps_, n_steps_, y_, r_, rows_, cols_, ld_, ch0_)                                 \
    for (int32_t s = 0; s < (n_steps_); s++) {                                                      \
        const float *a = (steps_)[s].a, *b = (steps_)[s].b;                                         \
        if (a) a += (ch0_);                                                                         \
        if (b) b += (ch0_);                                                                         \
        switch ((steps_)[s].op) {                                                                   \
        case BNN_EW_PRELU:                                                                          \
            EW_ROWS(rows_, cols_, ld_, y_, r_, {                                                    \
                float v = yp[ch];                                                                   \
                float m = v * a[ch];                                                                \
                yp[ch] = v >= 0.0f ? v : m;                                                         \
            })                                                                                      \
            break;                                                                                  \
        case BNN_EW_CLIP:                                                                           \
            if (a) EW_ROWS(rows_, cols_, ld_, y_, r_, yp[ch] = yp[ch] > a[ch] || yp[ch] != yp[ch] ? yp[ch] : a[ch]) \
            if (b) EW_ROWS(rows_, cols_, ld_, y_, r_, yp[ch] = yp[ch] < b[ch] || yp[ch] != yp[ch] ? yp[ch] : b[ch]) \
            break;                                                                                  \
        case BNN_EW_ADD:                                                                            \
            EW_ROWS(rows_, cols_, ld_, y_, r_, yp[ch] = yp[ch] + rp[ch])                            \
            break;                                                                                  \
        default: /* BNN_EW_AFFINE */                                                                \
            if (a && b) {                                                                           \
                EW_ROWS(rows_, cols_, ld_, y_, r_, {                                                \
                    float m = yp[ch] * a[ch];                                                       \
                    yp[ch] = m + b[ch];                                                             \
                })                                                                                  \
            } else if (a) {                                                                         \
                EW_ROWS(rows_, cols_, ld_, y_, r_, yp[ch] = yp[ch] * a[ch])                         \
            } else if (b) {                                                                         \
                EW_ROWS(rows_, cols_, ld_, y_, r_, yp[ch] = yp[ch] + b[ch])                         \
            }                                                                                       \
        }                                                                                           \
    }

#endif
