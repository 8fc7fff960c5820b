/* The contract every elementwise-chain kernel (reference.h, kernels_*.h) implements;
 * eltwise.c's select_kernel picks one per call from the context's path.
 *
 * A kernel is a task of bnn_parallel_for over the pixels [begin, end) of the job below, in
 * blocks of about EW_BLOCK floats: each block is written to y (x, or x + r), then every
 * step runs over it in place while it is in L1 (a BNN_EW_ADD step reads r).  Each loop is one IEEE operation per
 * element with per-channel parameters; no step changes their order or rounding (the
 * product and the sum of an affine are separate statements, never contracted into a fused
 * multiply-add), hence the same bits on every path (but for the payload of NaN + NaN: the
 * compilers may swap an add's operands). */
#ifndef BNN_ELTWISE_KERNEL_H
#define BNN_ELTWISE_KERNEL_H
#include <stdint.h>
#include "../core/internal.h"

typedef struct {
    const float *x, *r;
    float *y;
    int32_t c, n_steps;
    int32_t r_first; /* r given and no BNN_EW_ADD step: t = x + r before the steps */
    bnn_ew_step steps[BNN_EW_MAX_STEPS];
} ew_job;

/* BNN_OK, or why steps[0 .. n) cannot run (an unknown op: BNN_E_SHAPE; PReLU without its
 * slope, or BNN_EW_ADD without a residual (have_r 0): BNN_E_NULL). */
static inline int bnn_ew_steps_check(const bnn_ew_step *steps, int32_t n, int have_r) {
    for (int32_t s = 0; s < n; s++) {
        int32_t op = steps[s].op;
        if (op != BNN_EW_AFFINE && op != BNN_EW_PRELU && op != BNN_EW_CLIP && op != BNN_EW_ADD) return BNN_E_SHAPE;
        if ((op == BNN_EW_PRELU && !steps[s].a) || (op == BNN_EW_ADD && !have_r)) return BNN_E_NULL;
    }
    return BNN_OK;
}

/* 1 when one of steps[0 .. n) is BNN_EW_ADD */
static inline int bnn_ew_steps_add(const bnn_ew_step *steps, int32_t n) {
    for (int32_t s = 0; s < n; s++)
        if (steps[s].op == BNN_EW_ADD) return 1;
    return 0;
}

#define EW_BLOCK 4096 /* floats per block (16 KiB) */

typedef bnn_task_fn bnn_eltwise_kernel; /* arg: const ew_job * */

#endif
