/* Pooling, NHWC: float max / average (ONNX MaxPool / AveragePool with explicit pads) and
 * binary max on packed bits (bitwise AND).  Padded positions are ignored; since every pad
 * is smaller than the kernel, every window holds at least one valid position.
 * Parallel over output rows (n * out_h); each output element is computed by one thread,
 * positions in row-major window order, so results do not depend on the thread count. */
#include <string.h>
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

/* The per-position operations, on non-overlapping rows (restrict: vectorised without
 * alias checks).  Max is (x > y ? x : y), NaN handling included, in every build. */
#define POOL_INLINE __attribute__((always_inline)) static inline
POOL_INLINE void row_max(float *restrict y, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > y[i] ? x[i] : y[i];
}
POOL_INLINE void row_add(float *restrict y, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
POOL_INLINE void row_div(float *restrict y, float d, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] /= d;
}
POOL_INLINE void row_and(uint32_t *restrict y, const uint32_t *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] &= x[i];
}

/* A 2x2 window: ((a + b) + c) + d, then / cnt (or the max in that order), per channel. */
POOL_INLINE void pool_2x2(const float *restrict a, const float *restrict b, const float *restrict c,
                          const float *restrict d, float *restrict y, size_t n, int is_max, float cnt) {
    if (is_max) {
        for (size_t i = 0; i < n; i++) {
            float m = b[i] > a[i] ? b[i] : a[i];
            m = c[i] > m ? c[i] : m;
            y[i] = d[i] > m ? d[i] : m;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float t = a[i] + b[i];
            t = t + c[i];
            t = t + d[i];
            y[i] = t / cnt;
        }
    }
}

/* Output rows [begin, end): the first valid window position is copied, the others are
 * combined in row-major window order, then the average is divided by its count. */
#define POOL_TASK_BODY                                                                          \
    {                                                                                           \
        const pool_job *j = arg;                                                                \
        const bnn_window *w = j->w;                                                             \
        const size_t c = j->c;                                                                  \
        for (int64_t row = begin; row < end; row++) {                                           \
            int64_t b = row / j->out_h, oy = row % j->out_h;                                    \
            int64_t iy0 = oy * w->stride_h - w->pad_top;                                        \
            int64_t ky0 = iy0 < 0 ? -iy0 : 0;                                                   \
            int64_t ky1 = w->in_h - iy0 < w->kernel_h ? w->in_h - iy0 : w->kernel_h;            \
            for (int64_t ox = 0; ox < j->out_w; ox++) {                                         \
                int64_t ix0 = ox * w->stride_w - w->pad_left;                                   \
                int64_t kx0 = ix0 < 0 ? -ix0 : 0;                                               \
                int64_t kx1 = w->in_w - ix0 < w->kernel_w ? w->in_w - ix0 : w->kernel_w;        \
                size_t opix = (size_t)row * (size_t)j->out_w + (size_t)ox;                      \
                if (j->kind != POOL_BMAX && ky1 - ky0 == 2 && kx1 - kx0 == 2) {                 \
                    /* a whole 2x2 window (the usual downsampling): one pass, same order */     \
                    size_t i00 = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky0)) * (size_t)w->in_w \
                                 + (size_t)(ix0 + kx0);                                         \
                    pool_2x2((const float *)j->x + i00 * c, (const float *)j->x + (i00 + 1) * c,  \
                             (const float *)j->x + (i00 + (size_t)w->in_w) * c,                 \
                             (const float *)j->x + (i00 + (size_t)w->in_w + 1) * c,             \
                             (float *)j->y + opix * c, c, j->kind == POOL_MAX,                  \
                             j->include_pad ? (float)(w->kernel_h * w->kernel_w) : 4.0f);       \
                    continue;                                                                   \
                }                                                                               \
                int first = 1;                                                                  \
                for (int64_t ky = ky0; ky < ky1; ky++) {                                        \
                    for (int64_t kx = kx0; kx < kx1; kx++) {                                    \
                        size_t ipix = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky)) * (size_t)w->in_w \
                                      + (size_t)(ix0 + kx);                                     \
                        if (j->kind == POOL_BMAX) {                                             \
                            const uint32_t *xp = (const uint32_t *)j->x + ipix * c;             \
                            uint32_t *yp = (uint32_t *)j->y + opix * c;                         \
                            if (first) memcpy(yp, xp, c * sizeof *yp);                          \
                            else row_and(yp, xp, c);                                            \
                        } else {                                                                \
                            const float *xp = (const float *)j->x + ipix * c;                   \
                            float *yp = (float *)j->y + opix * c;                               \
                            if (first) memcpy(yp, xp, c * sizeof *yp);                          \
                            else if (j->kind == POOL_MAX) row_max(yp, xp, c);                   \
                            else row_add(yp, xp, c);                                            \
                        }                                                                       \
                        first = 0;                                                              \
                    }                                                                           \
                }                                                                               \
                if (j->kind == POOL_AVG) {                                                      \
                    float cnt = j->include_pad ? (float)(w->kernel_h * w->kernel_w)             \
                                               : (float)((ky1 - ky0) * (kx1 - kx0));            \
                    row_div((float *)j->y + opix * c, cnt, c);                                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* The same C for the baseline and, on x86-64, for AVX2 and AVX-512 (chosen by the
 * context's path): elementwise IEEE operations, so the same results on every path. */
static void pool_task(void *arg, int64_t begin, int64_t end) POOL_TASK_BODY
#if defined(BNN_X86)
__attribute__((target("avx2"))) static void pool_task_avx2(void *arg, int64_t begin, int64_t end) POOL_TASK_BODY
__attribute__((target("avx512f"))) static void pool_task_avx512(void *arg, int64_t begin,
                                                                int64_t end) POOL_TASK_BODY
#endif

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
    bnn_task_fn task = pool_task;
#if defined(BNN_X86)
    if (ctx->path == BNN_PATH_AVX512) task = pool_task_avx512;
    else if (ctx->path == BNN_PATH_AVX2) task = pool_task_avx2;
#endif
    bnn_parallel_for(ctx, (int64_t)win->n * oh, grain, task, &j);
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
