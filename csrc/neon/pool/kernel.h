/* The contract every pooling kernel (reference.h, kernels_*.h) implements; pool.c's
 * select_kernel picks one per call from the context's path.
 *
 * A kernel is a task of bnn_parallel_for over output rows [begin, end) (row = image *
 * out_h + oy) of the job below.  For each output pixel it copies the first valid window position
 * and combines the others in row-major window order (max: x > y ? x : y, NaN handling
 * included; average: the float sum, then / count; binary max: bitwise AND of the packed
 * words); padded positions are ignored (every pad is smaller than the kernel, so every
 * window holds at least one valid position).  Each output element is computed by one
 * thread, so results do not depend on the thread count. */
#ifndef BNN_POOL_KERNEL_H
#define BNN_POOL_KERNEL_H
#include <stddef.h>
#include <stdint.h>
#include "../core/internal.h"

enum { POOL_MAX, POOL_AVG, POOL_BMAX };

typedef struct {
    const bnn_window *w;
    int32_t out_h, out_w;
    int kind, include_pad;
    size_t c; /* elements per pixel: channels, or words for packed bits */
    const void *x;
    void *y;
} pool_job;

typedef bnn_task_fn bnn_pool_kernel; /* arg: const pool_job * */

#endif
