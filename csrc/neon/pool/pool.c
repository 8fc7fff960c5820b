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

static void pool_task(void *arg, int64_t begin, int64_t end) {
    const pool_job *j = arg;
    const bnn_window *w = j->w;
    const size_t c = j->c;
    for (int64_t row = begin; row < end; row++) {
        int64_t b = row / j->out_h, oy = row % j->out_h;
        int64_t iy0 = oy * w->stride_h - w->pad_top;
        int64_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = w->in_h - iy0 < w->kernel_h ? w->in_h - iy0 : w->kernel_h;
        for (int64_t ox = 0; ox < j->out_w; ox++) {
            int64_t ix0 = ox * w->stride_w - w->pad_left;
            int64_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = w->in_w - ix0 < w->kernel_w ? w->in_w - ix0 : w->kernel_w;
            size_t opix = (size_t)row * (size_t)j->out_w + (size_t)ox;
            int first = 1;
            for (int64_t ky = ky0; ky < ky1; ky++) {
                for (int64_t kx = kx0; kx < kx1; kx++) {
                    size_t ipix = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky)) * (size_t)w->in_w
                                  + (size_t)(ix0 + kx);
                    if (j->kind == POOL_BMAX) {
                        const uint32_t *xp = (const uint32_t *)j->x + ipix * c;
                        uint32_t *yp = (uint32_t *)j->y + opix * c;
                        if (first) memcpy(yp, xp, c * sizeof *yp);
                        else
                            for (size_t i = 0; i < c; i++) yp[i] &= xp[i];
                    } else {
                        const float *xp = (const float *)j->x + ipix * c;
                        float *yp = (float *)j->y + opix * c;
                        if (first) memcpy(yp, xp, c * sizeof *yp);
                        else if (j->kind == POOL_MAX)
                            for (size_t i = 0; i < c; i++) yp[i] = xp[i] > yp[i] ? xp[i] : yp[i];
                        else
                            for (size_t i = 0; i < c; i++) yp[i] += xp[i];
                    }
                    first = 0;
                }
            }
            if (j->kind == POOL_AVG) {
                float *yp = (float *)j->y + opix * c;
                float cnt = j->include_pad ? (float)(w->kernel_h * w->kernel_w) : (float)((ky1 - ky0) * (kx1 - kx0));
                for (size_t i = 0; i < c; i++) yp[i] /= cnt;
            }
        }
    }
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
    bnn_parallel_for(ctx, (int64_t)win->n * oh, grain, pool_task, &j);
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
