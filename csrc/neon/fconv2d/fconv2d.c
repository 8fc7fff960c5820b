/* Float convolution (groups 1), NHWC input/output, OHWI float weights, zero padding as
 * ONNX Conv (padded positions are skipped, never multiplied).
 *
 * At create time the weights are re-laid in blocks of OB output channels:
 *   w[ob][kh][kw][in_c][OB]   (the last block zero-padded)
 * so that, for one kernel row, the taps (kx, ic) and the OB output channels are one
 * contiguous run, and so is the input row (x at ix .. ix+kw-1, all channels).  The inner
 * loop broadcasts one input value and multiply-adds it into OB accumulators.  OB is 16
 * on x86-64 (one AVX-512 register, two AVX2 registers) and 8 elsewhere (two NEON ones).
 *
 * Every output element is accumulated as bias, then ky, then (kx, ic) in order, by one
 * thread, so results do not depend on the thread count.  The NEON kernel does exactly the
 * same operations as the portable one (fused multiply-add where the compiler says fmaf is
 * fast, i.e. the hardware has it; separate multiply and add otherwise), so both paths give
 * the same bits (armv7 NEON flushes denormals to zero; the scalar VFP code does not).
 * The x86 kernels (kernels_x86.h) use FMA, which the portable x86-64 build does not: they
 * agree with it to float rounding, not bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include <arm_neon.h>
#endif

#if defined(BNN_X86)
#define OB 16 /* output channels per block */
#else
#define OB 8
#endif
#define PX 4 /* output pixels per tile in the interior kernel (portable, NEON) */

#if defined(__FP_FAST_FMAF)
#define MADD(acc, a, b) fmaf((a), (b), (acc))
#else
#define MADD(acc, a, b) ((acc) + (a) * (b))
#endif

/* The NEON kernel is only built when it can match the portable arithmetic exactly. */
#if defined(BNN_HAVE_NEON) && (defined(__FP_FAST_FMAF) == defined(__ARM_FEATURE_FMA))
#define FC_NEON 1
#if defined(__ARM_FEATURE_FMA)
#define VMADD(acc, w, x) vfmaq_f32((acc), (w), (x))
#else
#define VMADD(acc, w, x) vmlaq_f32((acc), (w), (x))
#endif
#endif

struct bnn_fconv2d {
    bnn_window win;
    int32_t out_h, out_w, nob;
    size_t in_len, out_len;
    size_t wblock; /* floats per block: kh * kw * in_c * OB */
    float *w;      /* [nob][kh][kw][in_c][OB] */
    float *bias;   /* [nob * OB], zeros when no bias */
};

/* One tile: np output pixels (xstep apart in x, ystep apart in y) times one block of
 * OB channels, of which nc are stored.  xs / ws point at the first valid tap (ky0, kx0);
 * nky kernel rows (xrow / wrow apart) of nj = (valid kx) * in_c contiguous taps each. */
typedef struct {
    const float *xs;
    size_t xrow, xstep;
    int nky, nj;
    const float *ws;
    size_t wrow, wblock; /* wblock: floats between the weights of consecutive blocks */
    const float *bias;
    float *ys;
    size_t ystep;
    int nc;
} fc_tile;

static inline void tile_portable(const fc_tile *t, int np) {
    float acc[PX][OB];
    for (int p = 0; p < np; p++)
        for (int o = 0; o < OB; o++) acc[p][o] = t->bias[o];
    for (int ky = 0; ky < t->nky; ky++) {
        const float *xr = t->xs + (size_t)ky * t->xrow;
        const float *wr = t->ws + (size_t)ky * t->wrow;
        for (int j = 0; j < t->nj; j++) {
            const float *wv = wr + (size_t)j * OB;
            for (int p = 0; p < np; p++) {
                float xv = xr[(size_t)p * t->xstep + (size_t)j];
                for (int o = 0; o < OB; o++) acc[p][o] = MADD(acc[p][o], xv, wv[o]);
            }
        }
    }
    for (int p = 0; p < np; p++) memcpy(t->ys + (size_t)p * t->ystep, acc[p], (size_t)t->nc * sizeof(float));
}

#if defined(FC_NEON)
static inline void tile_neon(const fc_tile *t, int np) {
    float32x4_t a0[PX], a1[PX];
    float32x4_t b0 = vld1q_f32(t->bias), b1 = vld1q_f32(t->bias + 4);
    for (int p = 0; p < np; p++) {
        a0[p] = b0;
        a1[p] = b1;
    }
    for (int ky = 0; ky < t->nky; ky++) {
        const float *xr = t->xs + (size_t)ky * t->xrow;
        const float *wr = t->ws + (size_t)ky * t->wrow;
        for (int j = 0; j < t->nj; j++) {
            float32x4_t w0 = vld1q_f32(wr + (size_t)j * OB), w1 = vld1q_f32(wr + (size_t)j * OB + 4);
            for (int p = 0; p < np; p++) {
                float32x4_t xv = vdupq_n_f32(xr[(size_t)p * t->xstep + (size_t)j]);
                a0[p] = VMADD(a0[p], w0, xv);
                a1[p] = VMADD(a1[p], w1, xv);
            }
        }
    }
    for (int p = 0; p < np; p++) {
        float *yp = t->ys + (size_t)p * t->ystep;
        if (t->nc == OB) {
            vst1q_f32(yp, a0[p]);
            vst1q_f32(yp + 4, a1[p]);
        } else {
            float tmp[OB];
            vst1q_f32(tmp, a0[p]);
            vst1q_f32(tmp + 4, a1[p]);
            memcpy(yp, tmp, (size_t)t->nc * sizeof(float));
        }
    }
}
#endif

#if defined(BNN_X86)
#include "kernels_x86.h"
typedef void (*fc_x86_tile_fn)(const fc_tile *t, int np, int nb);
#endif

/* Constant np so that the compiler unrolls the pixel loop. */
static void tile_run(const fc_tile *t, int np, int neon) {
#if defined(FC_NEON)
    if (neon) {
        if (np == PX) tile_neon(t, PX);
        else tile_neon(t, 1);
        return;
    }
#else
    (void)neon;
#endif
    if (np == PX) tile_portable(t, PX);
    else tile_portable(t, 1);
}

typedef struct {
    const bnn_fconv2d *L;
    const float *x;
    float *y;
    int neon;
#if defined(BNN_X86)
    fc_x86_tile_fn tile; /* NULL: portable */
    int flat;            /* 1x1, stride 1, no padding: all pixels form one long row */
    int64_t groups;      /* work items per row: groups of FC_X86_GB blocks */
#endif
} fc_job;

static void fc_task(void *arg, int64_t begin, int64_t end) {
    const fc_job *job = arg;
    const bnn_fconv2d *L = job->L;
    const bnn_window *w = &L->win;
    const int32_t in_c = w->in_c, out_c = w->out_c, kh = w->kernel_h, kw = w->kernel_w;
    /* interior output columns [oxa, oxb): the whole kernel row is inside the image */
    int64_t oxa = ((int64_t)w->pad_left + w->stride_w - 1) / w->stride_w, oxb = 0;
    int64_t last = (int64_t)w->in_w + w->pad_left - kw;
    if (last >= 0) oxb = last / w->stride_w + 1;
    if (oxb > L->out_w) oxb = L->out_w;
    for (int64_t it = begin; it < end; it++) {
        int64_t row = it / L->nob, ob = it % L->nob;
        int64_t b = row / L->out_h, oy = row % L->out_h;
        int64_t iy0 = oy * w->stride_h - w->pad_top;
        int64_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = w->in_h - iy0 < kh ? w->in_h - iy0 : kh;
        fc_tile t;
        t.xrow = (size_t)w->in_w * (size_t)in_c;
        t.xstep = (size_t)w->stride_w * (size_t)in_c;
        t.nky = (int)(ky1 - ky0);
        t.wrow = (size_t)kw * (size_t)in_c * OB;
        t.wblock = L->wblock;
        t.bias = L->bias + ob * OB;
        t.ystep = (size_t)out_c;
        t.nc = (int)(out_c - ob * OB < OB ? out_c - ob * OB : OB);
        const float *wb = L->w + (size_t)ob * L->wblock;
        for (int64_t ox = 0; ox < L->out_w;) {
            int64_t ix0 = ox * w->stride_w - w->pad_left;
            int64_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = w->in_w - ix0 < kw ? w->in_w - ix0 : kw;
            int np = (ox >= oxa && ox + PX <= oxb) ? PX : 1;
            t.xs = job->x + (((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky0)) * (size_t)w->in_w
                             + (size_t)(ix0 + kx0)) * (size_t)in_c;
            t.nj = (int)((kx1 - kx0) * in_c);
            t.ws = wb + ((size_t)ky0 * (size_t)kw + (size_t)kx0) * (size_t)in_c * OB;
            t.ys = job->y + (((size_t)row * (size_t)L->out_w + (size_t)ox) * (size_t)out_c + (size_t)ob * OB);
            tile_run(&t, np, job->neon);
            ox += np;
        }
    }
}

#if defined(BNN_X86)
#define FC_FLAT_CHUNK 96 /* pixels per work item of a flat (1x1) convolution */

/* Work items: (output row, group of FC_X86_GB blocks); a flat convolution's rows are
 * chunks of FC_FLAT_CHUNK pixels of the whole [n * out_h * out_w][in_c] input. */
static void fc_task_x86(void *arg, int64_t begin, int64_t end) {
    const fc_job *job = arg;
    const bnn_fconv2d *L = job->L;
    const bnn_window *w = &L->win;
    const int32_t in_c = w->in_c, out_c = w->out_c, kh = w->kernel_h, kw = w->kernel_w;
    int64_t oxa = ((int64_t)w->pad_left + w->stride_w - 1) / w->stride_w, oxb = 0;
    int64_t last = (int64_t)w->in_w + w->pad_left - kw;
    if (last >= 0) oxb = last / w->stride_w + 1;
    if (oxb > L->out_w) oxb = L->out_w;
    const int64_t npix = (int64_t)w->n * L->out_h * L->out_w;
    for (int64_t it = begin; it < end; it++) {
        int64_t row = it / job->groups, g = it % job->groups;
        int64_t ob = g * FC_X86_GB;
        int nb = (int)(L->nob - ob < FC_X86_GB ? L->nob - ob : FC_X86_GB);
        fc_tile t;
        t.wrow = (size_t)kw * (size_t)in_c * OB;
        t.wblock = L->wblock;
        t.bias = L->bias + ob * OB;
        t.ystep = (size_t)out_c;
        t.nc = (int)(out_c - ob * OB < (int64_t)nb * OB ? out_c - ob * OB : (int64_t)nb * OB);
        const float *wb = L->w + (size_t)ob * L->wblock;
        if (job->flat) {
            int64_t p0 = row * FC_FLAT_CHUNK, p1 = p0 + FC_FLAT_CHUNK < npix ? p0 + FC_FLAT_CHUNK : npix;
            t.xrow = 0;
            t.xstep = (size_t)in_c;
            t.nky = 1;
            t.nj = in_c;
            t.ws = wb;
            for (int64_t p = p0; p < p1;) {
                int np = (int)(p1 - p < FC_X86_P ? p1 - p : FC_X86_P);
                t.xs = job->x + (size_t)p * (size_t)in_c;
                t.ys = job->y + (size_t)p * (size_t)out_c + (size_t)ob * OB;
                job->tile(&t, np, nb);
                p += np;
            }
            continue;
        }
        int64_t b = row / L->out_h, oy = row % L->out_h;
        int64_t iy0 = oy * w->stride_h - w->pad_top;
        int64_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = w->in_h - iy0 < kh ? w->in_h - iy0 : kh;
        t.xrow = (size_t)w->in_w * (size_t)in_c;
        t.xstep = (size_t)w->stride_w * (size_t)in_c;
        t.nky = (int)(ky1 - ky0);
        for (int64_t ox = 0; ox < L->out_w;) {
            int64_t ix0 = ox * w->stride_w - w->pad_left;
            int64_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = w->in_w - ix0 < kw ? w->in_w - ix0 : kw;
            int np = (ox >= oxa && ox < oxb) ? (int)(oxb - ox < FC_X86_P ? oxb - ox : FC_X86_P) : 1;
            t.xs = job->x + (((size_t)b * (size_t)w->in_h + (size_t)(iy0 + ky0)) * (size_t)w->in_w
                             + (size_t)(ix0 + kx0)) * (size_t)in_c;
            t.nj = (int)((kx1 - kx0) * in_c);
            t.ws = wb + ((size_t)ky0 * (size_t)kw + (size_t)kx0) * (size_t)in_c * OB;
            t.ys = job->y + (((size_t)row * (size_t)L->out_w + (size_t)ox) * (size_t)out_c + (size_t)ob * OB);
            job->tile(&t, np, nb);
            ox += np;
        }
    }
}
#endif

int bnn_fconv2d_create(bnn_fconv2d **out, const bnn_window *win, const float *weights, size_t weights_len,
                       const float *bias, size_t bias_len) {
    if (!out) return BNN_E_NULL;
    *out = NULL;
    if (!win || !weights) return BNN_E_NULL;
    int32_t oh, ow;
    int rc = bnn_window_check(win, 1, &oh, &ow);
    if (rc != BNN_OK) return rc;
    const int64_t kh = win->kernel_h, kw = win->kernel_w, ic = win->in_c, oc = win->out_c;
    size_t in_len = bnn_elems4(win->n, win->in_h, win->in_w, ic);
    size_t out_len = bnn_elems4(win->n, oh, ow, oc);
    size_t w_len = bnn_elems4(oc, kh, kw, ic);
    int64_t nob = (oc + OB - 1) / OB;
    size_t wblock = bnn_elems4(kh, kw, ic, OB), wtotal = bnn_elems4(nob, kh * kw, ic, OB), wbytes, bbytes;
    if (!in_len || !out_len || !w_len || !wtotal || !bnn_mul_ok(wtotal, sizeof(float), &wbytes)
        || !bnn_mul_ok((size_t)nob * OB, sizeof(float), &bbytes))
        return BNN_E_SHAPE; /* no buffer could be that long */
    if (weights_len < w_len) return BNN_E_SIZE;
    if (bias && bias_len < (size_t)oc) return BNN_E_SIZE;

    bnn_fconv2d *L = calloc(1, sizeof *L);
    if (!L) return BNN_E_NOMEM;
    L->w = bnn_aligned_alloc(wbytes);
    L->bias = bnn_aligned_alloc(bbytes);
    if (!L->w || !L->bias) {
        bnn_fconv2d_destroy(L);
        return BNN_E_NOMEM;
    }
    L->win = *win;
    L->out_h = oh;
    L->out_w = ow;
    L->nob = (int32_t)nob;
    L->in_len = in_len;
    L->out_len = out_len;
    L->wblock = wblock;
    memset(L->w, 0, wbytes);
    memset(L->bias, 0, bbytes);
    const size_t taps = (size_t)(kh * kw) * (size_t)ic; /* (ky, kx, ic) flattened, same order in OHWI */
    for (int64_t o = 0; o < oc; o++) {
        const float *src = weights + (size_t)o * taps;
        float *dst = L->w + (size_t)(o / OB) * wblock + (size_t)(o % OB);
        for (size_t t = 0; t < taps; t++) dst[t * OB] = src[t];
        if (bias) L->bias[o] = bias[o];
    }
    *out = L;
    return BNN_OK;
}

void bnn_fconv2d_destroy(bnn_fconv2d *layer) {
    if (!layer) return;
    bnn_aligned_free(layer->w);
    bnn_aligned_free(layer->bias);
    free(layer);
}

size_t bnn_fconv2d_input_len(const bnn_fconv2d *layer) { return layer ? layer->in_len : 0; }
size_t bnn_fconv2d_output_len(const bnn_fconv2d *layer) { return layer ? layer->out_len : 0; }

int bnn_fconv2d_run(bnn_ctx *ctx, const bnn_fconv2d *layer, const float *x, size_t x_len, float *y,
                    size_t y_len) {
    if (!ctx || !layer || !x || !y) return BNN_E_NULL;
    if (x_len < layer->in_len || y_len < layer->out_len) return BNN_E_SIZE;
    fc_job job;
    memset(&job, 0, sizeof job);
    job.L = layer;
    job.x = x;
    job.y = y;
    job.neon = ctx->path == BNN_PATH_NEON;
    /* work per item: out_w pixels * taps * OB multiply-adds; aim for >= 64k per grain */
    double work = (double)layer->out_w * (double)layer->wblock;
#if defined(BNN_X86)
    const bnn_window *w = &layer->win;
    job.tile = ctx->path == BNN_PATH_AVX512 ? fc_tile_avx512
               : (ctx->path == BNN_PATH_AVX2 && ctx->cpu_fma) ? fc_tile_avx2 : NULL;
    if (job.tile) {
        job.flat = w->kernel_h == 1 && w->kernel_w == 1 && w->stride_h == 1 && w->stride_w == 1 && !w->pad_top
                   && !w->pad_left && !w->pad_bottom && !w->pad_right;
        job.groups = (layer->nob + FC_X86_GB - 1) / FC_X86_GB;
        int64_t rows = (int64_t)w->n * layer->out_h;
        if (job.flat) {
            int64_t npix = rows * layer->out_w;
            rows = (npix + FC_FLAT_CHUNK - 1) / FC_FLAT_CHUNK;
            work = (double)FC_FLAT_CHUNK * (double)layer->wblock;
        }
        work *= (double)(layer->nob < FC_X86_GB ? layer->nob : FC_X86_GB);
        int64_t grain = work >= 65536.0 ? 1 : (int64_t)(65536.0 / work) + 1;
        bnn_parallel_for(ctx, rows * job.groups, grain, fc_task_x86, &job);
        return BNN_OK;
    }
#endif
    int64_t items = (int64_t)layer->win.n * layer->out_h * layer->nob;
    int64_t grain = work >= 65536.0 ? 1 : (int64_t)(65536.0 / work) + 1;
    bnn_parallel_for(ctx, items, grain, fc_task, &job);
    return BNN_OK;
}
