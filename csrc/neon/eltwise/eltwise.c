/* Per-channel elementwise chain (bnn_eltwise_f32, see bnn.h): t = x (+ r), then affine /
 * PReLU steps, y = t, in one pass over blocks of pixels that stay in L1.
 * Kernels (the pattern of every op, see core/internal.h): kernel.h is the contract,
 * reference.h the portable kernel (the semantics), kernels_x86.h the same C for AVX2 and
 * AVX-512, kernels_neon.h why NEON runs the reference; select_kernel below picks one from
 * the context's path. */
#include <string.h>
#include "../core/internal.h"
#include "kernel.h"
#include "reference.h"
#include "kernels_x86.h"  /* x86-64 builds only */
#include "kernels_neon.h" /* NEON builds only */

static bnn_eltwise_kernel select_kernel(const bnn_cpu *cpu, int path) {
    (void)cpu; /* each kernel needs only what its path guarantees */
    return BNN_KERNEL_FOR_PATH(eltwise, path);
}

int bnn_eltwise_f32(bnn_ctx *ctx, const float *x, size_t x_len, const float *r, size_t r_len, int32_t pixels,
                    int32_t c, const bnn_ew_step *steps, int32_t n_steps, size_t param_len, float *y, size_t y_len) {
    if (!ctx || !x || !y || (n_steps > 0 && !steps)) return BNN_E_NULL;
    if (pixels < 0 || c < 1 || n_steps < 0 || n_steps > BNN_EW_MAX_STEPS) return BNN_E_SHAPE;
    int st = bnn_ew_steps_check(steps, n_steps, r != NULL);
    if (st) return st;
    if (r && r == y && bnn_ew_steps_add(steps, n_steps)) return BNN_E_SHAPE; /* y = x overwrites r */
    size_t n;
    if (!bnn_mul_ok((size_t)pixels, (size_t)c, &n)) return BNN_E_SHAPE;
    if (x_len < n || y_len < n || (r && r_len < n)) return BNN_E_SIZE;
    for (int32_t s = 0; s < n_steps; s++)
        if ((steps[s].a || steps[s].b) && param_len < (size_t)c) return BNN_E_SIZE;
    ew_job j;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.r = r;
    j.y = y;
    j.c = c;
    j.n_steps = n_steps;
    j.r_first = r && !bnn_ew_steps_add(steps, n_steps);
    if (n_steps > 0) memcpy(j.steps, steps, (size_t)n_steps * sizeof *steps);
    /* >= 16k floats per grain: the work per float is a few operations */
    int64_t grain = 1 + 16384 / c;
    bnn_parallel_for(ctx, pixels, grain, select_kernel(&ctx->cpu, ctx->path), &j);
    return BNN_OK;
}
