/* Residual add: y[i] = a[i] + b[i], i < n.  y may be a or b (same index read then
 * written by one thread); partially overlapping buffers are not supported.
 * Plain C on every path: no per-ISA kernels to select (see core/internal.h). */
#include "../core/internal.h"

typedef struct {
    const float *a, *b;
    float *y;
} add_job;

static void add_task(void *arg, int64_t begin, int64_t end) {
    const add_job *j = arg;
    for (int64_t i = begin; i < end; i++) j->y[i] = j->a[i] + j->b[i];
}

int bnn_add_f32(bnn_ctx *ctx, const float *a, size_t a_len, const float *b, size_t b_len, float *y, size_t y_len,
                size_t n) {
    if (!ctx || !a || !b || !y) return BNN_E_NULL;
    if (n > a_len || n > b_len || n > y_len) return BNN_E_SIZE;
    add_job j = {a, b, y};
    bnn_parallel_for(ctx, (int64_t)n, 65536, add_task, &j);
    return BNN_OK;
}
