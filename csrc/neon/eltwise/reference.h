/* Portable elementwise-chain kernel: plain C, defines the semantics (see kernel.h).  The
 * loops are what the compilers vectorise; kernels_x86.h compiles the same C for AVX2 and
 * AVX-512, and bconv2d's output transform runs the same steps (steps.h) on its outputs. */
#ifndef BNN_ELTWISE_REFERENCE_H
#define BNN_ELTWISE_REFERENCE_H
#include <string.h>
#include "kernel.h"
#include "steps.h"

/* The body of a block function (const ew_job *j, int64_t p0, int64_t np): pixels [p0, p0 + np),
 * the steps by ew_steps (steps.h's bnn_ew_steps, or its like). */
#define EW_BLOCK_BODY_WITH(ew_steps)                                                                \
    {                                                                                               \
        const int32_t c = j->c;                                                                     \
        const size_t off = (size_t)p0 * (size_t)c, n = (size_t)np * (size_t)c;                      \
        const float *x = j->x + off, *r = j->r ? j->r + off : NULL;                                 \
        float *y = j->y + off;                                                                      \
        if (j->r_first) {                                                                           \
            for (size_t i = 0; i < n; i++) y[i] = x[i] + r[i];                                      \
        } else if (y != x) {                                                                        \
            memcpy(y, x, n * sizeof *y);                                                            \
        }                                                                                           \
        ew_steps(j->steps, j->n_steps, y, r, np, c, (size_t)c, 0);                                  \
    }
#define EW_BLOCK_BODY EW_BLOCK_BODY_WITH(bnn_ew_steps)

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
