/* XNOR-Net input scaling K = A * k (Rastegari et al. 2016):
 *   A[n][h][w] = mean over channels of |x|           (x float NHWC)
 *   K = Conv(A, ones(1,1,kh,kw) / (kh*kw), pads, strides), zero padding (skipped).
 * Two passes, each parallel over rows; A lives in the context's scratch arena.
 * Plain C on every path: no per-ISA kernels to select (see core/internal.h). */
#include <math.h>
#include "../core/internal.h"

typedef struct {
    const bnn_window *w;
    int32_t out_h, out_w;
    const float *x;
    float *a, *k;
} xs_job;

static void mean_abs_task(void *arg, int64_t begin, int64_t end) {
    const xs_job *j = arg;
    const size_t c = (size_t)j->w->in_c, iw = (size_t)j->w->in_w;
    for (int64_t row = begin; row < end; row++) { /* row = b * in_h + iy */
        for (size_t ix = 0; ix < iw; ix++) {
            const float *xp = j->x + ((size_t)row * iw + ix) * c;
            float s = 0.0f;
            for (size_t i = 0; i < c; i++) s += fabsf(xp[i]);
            j->a[(size_t)row * iw + ix] = s / (float)c;
        }
    }
}

static void box_task(void *arg, int64_t begin, int64_t end) {
    const xs_job *j = arg;
    const bnn_window *w = j->w;
    const float inv = 1.0f / (float)(w->kernel_h * w->kernel_w);
    for (int64_t row = begin; row < end; row++) { /* row = b * out_h + oy */
        int64_t b = row / j->out_h, oy = row % j->out_h;
        int64_t iy0 = oy * w->stride_h - w->pad_top;
        int64_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = w->in_h - iy0 < w->kernel_h ? w->in_h - iy0 : w->kernel_h;
        for (int64_t ox = 0; ox < j->out_w; ox++) {
            int64_t ix0 = ox * w->stride_w - w->pad_left;
            int64_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = w->in_w - ix0 < w->kernel_w ? w->in_w - ix0 : w->kernel_w;
            float s = 0.0f;
            for (int64_t ky = ky0; ky < ky1; ky++) {
                const float *ap = j->a + ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky)) * (size_t)w->in_w;
                for (int64_t kx = kx0; kx < kx1; kx++) s += ap[ix0 + kx];
            }
            j->k[(size_t)row * (size_t)j->out_w + (size_t)ox] = s * inv;
        }
    }
}

int bnn_xnor_scale(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len, float *k_out,
                   size_t k_len) {
    if (!ctx || !win || !x || !k_out) return BNN_E_NULL;
    int32_t oh, ow;
    int rc = bnn_window_check(win, 0, &oh, &ow);
    if (rc != BNN_OK) return rc;
    size_t in_len = bnn_elems4(win->n, win->in_h, win->in_w, win->in_c);
    size_t a_len = bnn_elems4(win->n, win->in_h, win->in_w, 1);
    size_t out_len = bnn_elems4(win->n, oh, ow, 1), a_bytes;
    if (!in_len || !a_len || !out_len || !bnn_mul_ok(a_len, sizeof(float), &a_bytes)) return BNN_E_SHAPE;
    if (x_len < in_len || k_len < out_len) return BNN_E_SIZE;
    float *a = bnn_scratch(ctx, a_bytes);
    if (!a) return BNN_E_NOMEM;
    xs_job j = {win, oh, ow, x, a, k_out};
    double work = (double)win->in_w * (double)win->in_c;
    bnn_parallel_for(ctx, (int64_t)win->n * win->in_h, work >= 16384.0 ? 1 : (int64_t)(16384.0 / work) + 1,
                     mean_abs_task, &j);
    work = (double)ow * (double)(win->kernel_h * win->kernel_w);
    bnn_parallel_for(ctx, (int64_t)win->n * oh, work >= 16384.0 ? 1 : (int64_t)(16384.0 / work) + 1, box_task, &j);
    return BNN_OK;
}
