/* Portable elementwise-chain kernel: plain C, defines the semantics (see kernel.h).  The
 * loops are what the compilers vectorise; kernels_x86.h compiles the same C for AVX2 and
 * AVX-512. */
#ifndef BNN_ELTWISE_REFERENCE_H
#define BNN_ELTWISE_REFERENCE_H
#include <string.h>
#include "kernel.h"

/* The body of a block function (const ew_job *j, int64_t p0, int64_t np): pixels [p0, p0 + np). */
#define EW_BLOCK_BODY                                                                               \
    {                                                                                               \
        const int32_t c = j->c;                                                                     \
        const size_t off = (size_t)p0 * (size_t)c, n = (size_t)np * (size_t)c;                      \
        const float *x = j->x + off;                                                                \
        float *y = j->y + off;                                                                      \
        if (j->r) {                                                                                 \
            const float *r = j->r + off;                                                            \
            for (size_t i = 0; i < n; i++) y[i] = x[i] + r[i];                                      \
        } else if (y != x) {                                                                        \
            memcpy(y, x, n * sizeof *y);                                                            \
        }                                                                                           \
        for (int32_t s = 0; s < j->n_steps; s++) {                                                  \
            const float *a = j->steps[s].a, *b = j->steps[s].b;                                     \
            if (j->steps[s].op == BNN_EW_PRELU) {                                                   \
                for (int64_t p = 0; p < np; p++) {                                                  \
                    float *yp = y + (size_t)p * (size_t)c;                                          \
                    for (int32_t ch = 0; ch < c; ch++) {                                            \
                        float v = yp[ch], m = v * a[ch];                                            \
                        yp[ch] = v >= 0.0f ? v : m;                                                 \
                    }                                                                               \
                }                                                                                   \
            } else if (a && b) {                                                                    \
                for (int64_t p = 0; p < np; p++) {                                                  \
                    float *yp = y + (size_t)p * (size_t)c;                                          \
                    for (int32_t ch = 0; ch < c; ch++) {                                            \
                        float m = yp[ch] * a[ch];                                                   \
                        yp[ch] = m + b[ch];                                                         \
                    }                                                                               \
                }                                                                                   \
            } else if (a) {                                                                         \
                for (int64_t p = 0; p < np; p++) {                                                  \
                    float *yp = y + (size_t)p * (size_t)c;                                          \
                    for (int32_t ch = 0; ch < c; ch++) yp[ch] = yp[ch] * a[ch];                     \
                }                                                                                   \
            } else if (b) {                                                                         \
                for (int64_t p = 0; p < np; p++) {                                                  \
                    float *yp = y + (size_t)p * (size_t)c;                                          \
                    for (int32_t ch = 0; ch < c; ch++) yp[ch] = yp[ch] + b[ch];                     \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }

/* The body of a kernel (void *arg, int64_t begin, int64_t end): pixels [begin, end) in
 * blocks of about EW_BLOCK floats, each by block(j, p0, np). */
#define EW_TASK_BODY(block)                                                                         \
    {                                                                                               \
        const ew_job *j = arg;                                                                      \
        int64_t per = EW_BLOCK / j->c;                                                              \
        if (per < 1) per = 1;                                                                       \
        for (int64_t p0 = begin; p0 < end; p0 += per) block(j, p0, end - p0 < per ? end - p0 : per); \
    }

static void ew_block_portable(const ew_job *j, int64_t p0, int64_t np) EW_BLOCK_BODY
static void eltwise_portable(void *arg, int64_t begin, int64_t end) EW_TASK_BODY(ew_block_portable)

#endif
