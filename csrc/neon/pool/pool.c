/* Pooling, NHWC: float max / average (ONNX MaxPool / AveragePool with explicit pads) and
 * binary max on packed bits (bitwise AND), parallel over output rows (n * out_h).
 * Kernels (the pattern of every op, see core/internal.h): kernel.h is the contract,
 * reference.h the portable kernel (the semantics), kernels_x86.h the same C for AVX2 and
 * AVX-512, kernels_neon.h why NEON runs the reference; select_kernel below picks one from
 * the context's path. */
#include "../core/internal.h"
#include "kernel.h"
#include "reference.h"
#include "kernels_x86.h"  /* x86-64 builds only */
#include "kernels_neon.h" /* NEON builds only */

static bnn_pool_kernel select_kernel(const bnn_cpu *cpu, int path) {
    (void)cpu; /* each kernel needs only what its path guarantees */
    return BNN_KERNEL_FOR_PATH(pool, path);
}

static int pool_run(bnn_ctx *ctx, const bnn_window *win, int kind, int include_pad, const void *x, size_t x_len,
                    void *y, size_t y_len) {
    if (!ctx || !win || !x || !y) return BNN_E_NULL;
    int32_t oh, ow;
    int rc = bnn_window_check(win, 0, &oh, &ow);
    if (rc != BNN_OK) return rc;
    size_t c = kind == POOL_BMAX ? ((size_t)win->in_c + 31) / 32 : (size_t)win->in_c;
    size_t in_len = bnn_elems4(win->n, win->in_h, win->in_w, (int64_t)c);
    size_t out_len = bnn_elems4(win->n, oh, ow, (int64_t)c);
    if (!in_len || !out_len) return BNN_E_SHAPE; /* no buffer could be that long */
    if (x_len < in_len || y_len < out_len) return BNN_E_SIZE;
    pool_job j = {win, oh, ow, kind, include_pad, c, x, y};
    double work = (double)ow * (double)(win->kernel_h * win->kernel_w) * (double)c;
    int64_t grain = work >= 16384.0 ? 1 : (int64_t)(16384.0 / work) + 1;
    bnn_parallel_for(ctx, (int64_t)win->n * oh, grain, select_kernel(&ctx->cpu, ctx->path), &j);
    return BNN_OK;
}

int bnn_maxpool2d(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len, float *y, size_t y_len) {
    return pool_run(ctx, win, POOL_MAX, 0, x, x_len, y, y_len);
}

int bnn_avgpool2d(bnn_ctx *ctx, const bnn_window *win, int32_t count_include_pad, const float *x, size_t x_len,
                  float *y, size_t y_len) {
    if (ctx && win && x && y && count_include_pad != 0 && count_include_pad != 1) return BNN_E_SHAPE;
    return pool_run(ctx, win, POOL_AVG, count_include_pad, x, x_len, y, y_len);
}

int bnn_bmaxpool2d(bnn_ctx *ctx, const bnn_window *win, const uint32_t *x, size_t x_len, uint32_t *y,
                   size_t y_len) {
    return pool_run(ctx, win, POOL_BMAX, 0, x, x_len, y, y_len);
}
