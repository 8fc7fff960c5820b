/* Per-channel elementwise chain (bnn_eltwise_f32, see bnn.h): t = x (+ r), then affine /
 * PReLU steps, y = t, in one pass.
 *
 * Pixels are processed in blocks of about EW_BLOCK floats: the block is written to y (x,
 * or x + r), then every step runs over it in place while it is in L1.  Each loop is one
 * operation per element with per-channel parameters, which the compilers vectorise; the
 * same C is compiled for AVX-512 and AVX2 (function target attributes, chosen by the
 * context's path) and for the baseline.  No step changes the order or rounding of the
 * IEEE operations (the product and the sum of an affine are separate statements, so they
 * are never contracted into a fused multiply-add), hence the same bits on every path (but
 * for the payload of NaN + NaN: the compilers may swap an add's operands). */
#include <string.h>
#include "../core/internal.h"

#define EW_BLOCK 4096 /* floats per block (16 KiB) */

typedef struct {
    const float *x, *r;
    float *y;
    int32_t c, n_steps;
    bnn_ew_step steps[BNN_EW_MAX_STEPS];
    int path;
} ew_job;

/* One block of np pixels starting at pixel p0. */
#define EW_BLOCK_BODY                                                                           \
    {                                                                                           \
        const int32_t c = j->c;                                                                 \
        const size_t off = (size_t)p0 * (size_t)c, n = (size_t)np * (size_t)c;                 \
        const float *x = j->x + off;                                                            \
        float *y = j->y + off;                                                                  \
        if (j->r) {                                                                             \
            const float *r = j->r + off;                                                        \
            for (size_t i = 0; i < n; i++) y[i] = x[i] + r[i];                                  \
        } else if (y != x) {                                                                    \
            memcpy(y, x, n * sizeof *y);                                                        \
        }                                                                                       \
        for (int32_t s = 0; s < j->n_steps; s++) {                                              \
            const float *a = j->steps[s].a, *b = j->steps[s].b;                                 \
            if (j->steps[s].op == BNN_EW_PRELU) {                                               \
                for (int64_t p = 0; p < np; p++) {                                              \
                    float *yp = y + (size_t)p * (size_t)c;                                      \
                    for (int32_t ch = 0; ch < c; ch++) {                                        \
                        float v = yp[ch], m = v * a[ch];                                        \
                        yp[ch] = v >= 0.0f ? v : m;                                             \
                    }                                                                           \
                }                                                                               \
            } else if (a && b) {                                                                \
                for (int64_t p = 0; p < np; p++) {                                              \
                    float *yp = y + (size_t)p * (size_t)c;                                      \
                    for (int32_t ch = 0; ch < c; ch++) {                                        \
                        float m = yp[ch] * a[ch];                                               \
                        yp[ch] = m + b[ch];                                                     \
                    }                                                                           \
                }                                                                               \
            } else if (a) {                                                                     \
                for (int64_t p = 0; p < np; p++) {                                              \
                    float *yp = y + (size_t)p * (size_t)c;                                      \
                    for (int32_t ch = 0; ch < c; ch++) yp[ch] = yp[ch] * a[ch];                 \
                }                                                                               \
            } else if (b) {                                                                     \
                for (int64_t p = 0; p < np; p++) {                                              \
                    float *yp = y + (size_t)p * (size_t)c;                                      \
                    for (int32_t ch = 0; ch < c; ch++) yp[ch] = yp[ch] + b[ch];                 \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

static void ew_block_portable(const ew_job *j, int64_t p0, int64_t np) EW_BLOCK_BODY
#if defined(BNN_X86)
__attribute__((target("avx2"))) static void ew_block_avx2(const ew_job *j, int64_t p0, int64_t np) EW_BLOCK_BODY
__attribute__((target("avx512f"))) static void ew_block_avx512(const ew_job *j, int64_t p0, int64_t np) EW_BLOCK_BODY
#endif

static void ew_task(void *arg, int64_t begin, int64_t end) {
    const ew_job *j = arg;
    int64_t per = EW_BLOCK / j->c;
    if (per < 1) per = 1;
    for (int64_t p0 = begin; p0 < end; p0 += per) {
        int64_t np = end - p0 < per ? end - p0 : per;
#if defined(BNN_X86)
        if (j->path == BNN_PATH_AVX512) {
            ew_block_avx512(j, p0, np);
            continue;
        }
        if (j->path == BNN_PATH_AVX2) {
            ew_block_avx2(j, p0, np);
            continue;
        }
#endif
        ew_block_portable(j, p0, np);
    }
}

int bnn_eltwise_f32(bnn_ctx *ctx, const float *x, size_t x_len, const float *r, size_t r_len, int32_t pixels,
                    int32_t c, const bnn_ew_step *steps, int32_t n_steps, size_t param_len, float *y, size_t y_len) {
    if (!ctx || !x || !y || (n_steps > 0 && !steps)) return BNN_E_NULL;
    if (pixels < 0 || c < 1 || n_steps < 0 || n_steps > BNN_EW_MAX_STEPS) return BNN_E_SHAPE;
    for (int32_t s = 0; s < n_steps; s++) {
        if (steps[s].op != BNN_EW_AFFINE && steps[s].op != BNN_EW_PRELU) return BNN_E_SHAPE;
        if (steps[s].op == BNN_EW_PRELU && !steps[s].a) return BNN_E_NULL;
    }
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
    if (n_steps > 0) memcpy(j.steps, steps, (size_t)n_steps * sizeof *steps);
    j.path = ctx->path;
    /* >= 16k floats per grain: the work per float is a few operations */
    int64_t grain = 1 + 16384 / c;
    bnn_parallel_for(ctx, pixels, grain, ew_task, &j);
    return BNN_OK;
}
