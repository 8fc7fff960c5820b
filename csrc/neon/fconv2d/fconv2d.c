/* Float convolution with groups, NHWC input/output, OHWI float weights
 * [out_c][kh][kw][in_c / groups], zero padding as ONNX Conv (padded positions are skipped,
 * never multiplied).  Output channel o of group g = o / (out_c / groups) reads input
 * channels g * in_c / groups .. (g + 1) * in_c / groups - 1.  Depthwise convolutions
 * (groups = in_c = out_c) have their own kernels (fc_dw_tile: vectors along the channels);
 * every other one runs the blocked kernels on each group's blocks of output channels.
 *
 * Kernels (the pattern of every op, see core/internal.h): kernel.h is the contract (the
 * blocked weight layout, the tile), reference.h the portable kernel (the semantics),
 * kernels_neon.h and kernels_x86.h the SIMD ones; select_kernel below picks one from the
 * context's path, and one task runs any of them.
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
#include "kernel.h"
#include "reference.h"
#include "kernels_x86.h"  /* x86-64 builds only */
#include "kernels_neon.h" /* NEON builds only */

struct bnn_fconv2d {
    bnn_window win;
    int32_t out_h, out_w;
    int32_t groups, icg, ocg; /* channels per group: in, out */
    int32_t nobg;             /* blocks of OB output channels per group */
    int depthwise;            /* groups = in_c = out_c: w [kh][kw][cp], bias [cp] */
    size_t in_len, out_len;
    size_t wblock; /* floats per block: kh * kw * icg * OB */
    float *w;      /* [groups][nobg][kh][kw][icg][OB] (depthwise: [kh][kw][cp]) */
    float *bias;   /* [groups * nobg * OB] (depthwise: [cp]), zeros when no bias */
};

static bnn_fconv2d_kernel select_kernel(const bnn_cpu *cpu, int path) {
    if (path == BNN_PATH_AVX2 && !cpu->fma) return fconv2d_portable; /* the AVX2 kernel needs FMA too */
    return BNN_KERNEL_FOR_PATH(fconv2d, path);
}

#define FC_FLAT_CHUNK 96 /* pixels per work item of a flat (1x1) convolution */

typedef struct {
    const bnn_fconv2d *L;
    const float *x;
    float *y;
    bnn_fconv2d_kernel k;
    int flat;         /* 1x1, stride 1, no padding: all pixels form one long row */
    int64_t per_g;    /* work items per group and row: chunks of k.gb blocks */
    int64_t oxa, oxb; /* interior output columns [oxa, oxb): the whole kernel row inside */
} fc_job;

/* The window of output pixel (row, ox): its first input pixel (offset into x, in pixels),
 * first valid kernel row and column, and how many of each are valid. */
typedef struct {
    size_t xpix;
    int64_t ky0, kx0;
    int nky, nkx;
} fc_at;

static fc_at window_at(const bnn_fconv2d *L, int64_t row, int64_t ox) {
    const bnn_window *w = &L->win;
    int64_t b = row / L->out_h, oy = row % L->out_h;
    int64_t iy0 = oy * w->stride_h - w->pad_top, ix0 = ox * w->stride_w - w->pad_left;
    int64_t ky1 = w->in_h - iy0 < w->kernel_h ? w->in_h - iy0 : w->kernel_h;
    int64_t kx1 = w->in_w - ix0 < w->kernel_w ? w->in_w - ix0 : w->kernel_w;
    fc_at a;
    a.ky0 = iy0 < 0 ? -iy0 : 0;
    a.kx0 = ix0 < 0 ? -ix0 : 0;
    a.nky = (int)(ky1 - a.ky0);
    a.nkx = (int)(kx1 - a.kx0);
    a.xpix = ((size_t)b * (size_t)w->in_h + (size_t)(iy0 + a.ky0)) * (size_t)w->in_w + (size_t)(ix0 + a.kx0);
    return a;
}

/* pixels of one call at column ox: k px at a time in the interior, else one */
static int run_len(const fc_job *job, int64_t ox, int px) {
    if (ox < job->oxa || ox >= job->oxb) return 1;
    return (int)(job->oxb - ox < px ? job->oxb - ox : px);
}

/* Work items: (output row, group, chunk of k.gb of the group's blocks); a flat
 * convolution's rows are chunks of FC_FLAT_CHUNK pixels of the whole
 * [n * out_h * out_w][in_c] input.  Along a row, the interior pixels go k.px at a time,
 * the others one by one. */
static void fc_task(void *arg, int64_t begin, int64_t end) {
    const fc_job *job = arg;
    const bnn_fconv2d *L = job->L;
    const bnn_fconv2d_kernel *k = &job->k;
    const bnn_window *w = &L->win;
    const int32_t in_c = w->in_c, out_c = w->out_c, kw = w->kernel_w, icg = L->icg;
    const int64_t npix = (int64_t)w->n * L->out_h * L->out_w, items = L->groups * job->per_g;
    for (int64_t it = begin; it < end; it++) {
        int64_t row = it / items, g = it % items / job->per_g, ob = it % job->per_g * k->gb;
        int nb = (int)(L->nobg - ob < k->gb ? L->nobg - ob : k->gb);
        const size_t xoff = (size_t)g * (size_t)icg, yoff = (size_t)(g * L->ocg + ob * OB);
        fc_tile t;
        t.wrow = (size_t)kw * (size_t)icg * OB;
        t.wcol = (size_t)icg * OB;
        t.xcol = (size_t)in_c;
        t.wblock = L->wblock;
        t.bias = L->bias + (g * L->nobg + ob) * OB;
        t.ystep = (size_t)out_c;
        t.nc = (int)(L->ocg - ob * OB < (int64_t)nb * OB ? L->ocg - ob * OB : (int64_t)nb * OB);
        const float *wb = L->w + (size_t)(g * L->nobg + ob) * L->wblock;
        if (job->flat) {
            int64_t p0 = row * FC_FLAT_CHUNK, p1 = p0 + FC_FLAT_CHUNK < npix ? p0 + FC_FLAT_CHUNK : npix;
            t.xrow = 0;
            t.xstep = (size_t)in_c;
            t.nky = t.nkx = 1;
            t.nj = icg;
            t.ws = wb;
            for (int64_t p = p0; p < p1;) {
                int np = (int)(p1 - p < k->px ? p1 - p : k->px);
                t.xs = job->x + (size_t)p * (size_t)in_c + xoff;
                t.ys = job->y + (size_t)p * (size_t)out_c + yoff;
                k->run(&t, np, nb);
                p += np;
            }
            continue;
        }
        t.xrow = (size_t)w->in_w * (size_t)in_c;
        t.xstep = (size_t)w->stride_w * (size_t)in_c;
        for (int64_t ox = 0; ox < L->out_w;) {
            fc_at a = window_at(L, row, ox);
            int np = run_len(job, ox, k->px);
            t.xs = job->x + a.xpix * (size_t)in_c + xoff;
            t.nky = a.nky;
            if (L->groups == 1) { /* a kernel row's taps are one contiguous run */
                t.nkx = 1;
                t.nj = a.nkx * in_c;
            } else {
                t.nkx = a.nkx;
                t.nj = icg;
            }
            t.ws = wb + ((size_t)a.ky0 * (size_t)kw + (size_t)a.kx0) * (size_t)icg * OB;
            t.ys = job->y + ((size_t)row * (size_t)L->out_w + (size_t)ox) * (size_t)out_c + yoff;
            k->run(&t, np, nb);
            ox += np;
        }
    }
}

/* Depthwise work items: output rows, each all channels, k.dwpx interior pixels a call. */
static void fc_dw_task(void *arg, int64_t begin, int64_t end) {
    const fc_job *job = arg;
    const bnn_fconv2d *L = job->L;
    const bnn_window *w = &L->win;
    const size_t c = (size_t)w->in_c, cp = (size_t)L->nobg * OB;
    fc_dw_tile t;
    t.xrow = (size_t)w->in_w * c;
    t.xcol = c;
    t.xstep = (size_t)w->stride_w * c;
    t.wrow = (size_t)w->kernel_w * cp;
    t.wcol = cp;
    t.bias = L->bias;
    t.ystep = c;
    t.nc = w->in_c;
    for (int64_t row = begin; row < end; row++)
        for (int64_t ox = 0; ox < L->out_w;) {
            fc_at a = window_at(L, row, ox);
            int np = run_len(job, ox, job->k.dwpx);
            t.xs = job->x + a.xpix * c;
            t.nky = a.nky;
            t.nkx = a.nkx;
            t.ws = L->w + ((size_t)a.ky0 * (size_t)w->kernel_w + (size_t)a.kx0) * cp;
            t.ys = job->y + ((size_t)row * (size_t)L->out_w + (size_t)ox) * c;
            job->k.dw(&t, np);
            ox += np;
        }
}

int bnn_fconv2d_create(bnn_fconv2d **out, const bnn_window *win, int32_t groups, const float *weights,
                       size_t weights_len, const float *bias, size_t bias_len) {
    if (!out) return BNN_E_NULL;
    *out = NULL;
    if (!win || !weights) return BNN_E_NULL;
    int32_t oh, ow;
    int rc = bnn_window_check(win, 1, &oh, &ow);
    if (rc != BNN_OK) return rc;
    const int64_t kh = win->kernel_h, kw = win->kernel_w, ic = win->in_c, oc = win->out_c;
    if (groups < 1 || ic % groups || oc % groups) return BNN_E_SHAPE;
    const int64_t icg = ic / groups, ocg = oc / groups, nobg = (ocg + OB - 1) / OB;
    const int depthwise = groups > 1 && icg == 1 && ocg == 1;
    size_t in_len = bnn_elems4(win->n, win->in_h, win->in_w, ic);
    size_t out_len = bnn_elems4(win->n, oh, ow, oc);
    size_t w_len = bnn_elems4(oc, kh, kw, icg);
    int64_t nob = depthwise ? (oc + OB - 1) / OB : groups * nobg; /* depthwise: cp = nob * OB */
    size_t wblock = bnn_elems4(kh, kw, icg, OB), wtotal = bnn_elems4(nob, kh * kw, icg, OB), wbytes, bbytes;
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
    L->groups = groups;
    L->icg = (int32_t)icg;
    L->ocg = (int32_t)ocg;
    L->nobg = (int32_t)(depthwise ? nob : nobg);
    L->depthwise = depthwise;
    L->in_len = in_len;
    L->out_len = out_len;
    L->wblock = wblock;
    memset(L->w, 0, wbytes);
    memset(L->bias, 0, bbytes);
    const size_t taps = (size_t)(kh * kw) * (size_t)icg; /* (ky, kx, ic) flattened, same order in OHWI */
    for (int64_t o = 0; o < oc; o++) {
        const float *src = weights + (size_t)o * taps;
        if (depthwise) { /* w[ky][kx][o] */
            for (size_t t = 0; t < taps; t++) L->w[t * (size_t)nob * OB + (size_t)o] = src[t];
            if (bias) L->bias[o] = bias[o];
            continue;
        }
        int64_t g = o / ocg, j = o % ocg, blk = g * nobg + j / OB;
        float *dst = L->w + (size_t)blk * wblock + (size_t)(j % OB);
        for (size_t t = 0; t < taps; t++) dst[t * OB] = src[t];
        if (bias) L->bias[blk * OB + j % OB] = bias[o];
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
    const bnn_window *w = &layer->win;
    fc_job job;
    memset(&job, 0, sizeof job);
    job.L = layer;
    job.x = x;
    job.y = y;
    job.k = select_kernel(&ctx->cpu, ctx->path);
    job.oxa = ((int64_t)w->pad_left + w->stride_w - 1) / w->stride_w;
    int64_t last = (int64_t)w->in_w + w->pad_left - w->kernel_w;
    job.oxb = last >= 0 ? last / w->stride_w + 1 : 0;
    if (job.oxb > layer->out_w) job.oxb = layer->out_w;
    int64_t rows = (int64_t)w->n * layer->out_h;
    if (layer->depthwise) { /* work per row: out_w * kh * kw * c multiply-adds */
        double work = (double)layer->out_w * w->kernel_h * w->kernel_w * w->in_c;
        int64_t grain = work >= 65536.0 ? 1 : (int64_t)(65536.0 / work) + 1;
        bnn_parallel_for(ctx, rows, grain, fc_dw_task, &job);
        return BNN_OK;
    }
    job.flat = w->kernel_h == 1 && w->kernel_w == 1 && w->stride_h == 1 && w->stride_w == 1 && !w->pad_top
               && !w->pad_left && !w->pad_bottom && !w->pad_right;
    job.per_g = (layer->nobg + job.k.gb - 1) / job.k.gb;
    /* work per item: pixels * taps * OB multiply-adds per block; aim for >= 64k per grain */
    double work = (double)layer->out_w * (double)layer->wblock;
    if (job.flat) {
        int64_t npix = rows * layer->out_w;
        rows = (npix + FC_FLAT_CHUNK - 1) / FC_FLAT_CHUNK;
        work = (double)FC_FLAT_CHUNK * (double)layer->wblock;
    }
    work *= (double)(layer->nobg < job.k.gb ? layer->nobg : job.k.gb);
    int64_t grain = work >= 65536.0 ? 1 : (int64_t)(65536.0 / work) + 1;
    bnn_parallel_for(ctx, rows * layer->groups * job.per_g, grain, fc_task, &job);
    return BNN_OK;
}
