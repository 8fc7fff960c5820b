/* The contract every elementwise-chain kernel (reference.h, kernels_*.h) implements;
 * eltwise.c's select_kernel picks one per call from the context's path.
 *
 * A kernel is a task of bnn_parallel_for over the pixels [begin, end) of the job below, in
 * blocks of about EW_BLOCK floats: each block is written to y (x, or x + r), then every
 * step runs over it in place while it is in L1.  Each loop is one IEEE operation per
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
    bnn_ew_step steps[BNN_EW_MAX_STEPS];
} ew_job;

#define EW_BLOCK 4096 /* floats per block (16 KiB) */

typedef bnn_task_fn bnn_eltwise_kernel; /* arg: const ew_job * */

#endif
