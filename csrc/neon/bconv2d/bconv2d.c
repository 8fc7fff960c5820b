/* Binary 2-D convolution (groups 1): layer creation (weight blocking, padding sums, output
 * parameters) and the run (padded copy of the input, the kernel over output rows and
 * 64-channel chunks, zero-padding correction, output transform).
 * Kernels (the pattern of every op, see core/internal.h): kernel.h is the contract,
 * reference.h the portable kernel (the semantics), kernels_x86.h / kernels_neon.h the SIMD
 * ones; select_kernel below picks one from the context's path. */
#include <stdlib.h>
#include <string.h>
#include "../core/internal.h"
#include "kernel.h"
#include "reference.h"
#include "output_transform.h"
#include "zero_padding_correction.h"
#include "kernels_x86.h"  /* x86-64 builds only */
#include "kernels_neon.h" /* NEON builds only */

struct bnn_bconv2d {
    bnn_window win;
    int32_t pad_mode, out_h, out_w, cw, ocb;
    int64_t kwords;       /* K = kh * kw * cw */
    uint32_t *wblk;       /* [ocb][K][16] */
    uint32_t *wnib;       /* x86: the AVX2 kernel's weights, [ocb][2K][16]: word k's low and high
                           * nibbles (bnn_nibbles), at 2k and 2k + 1; else NULL */
    int32_t *wsum;        /* [kh * kw][out_c] */
    bnn_out_params out;   /* arrays owned by the layer */
    size_t in_len, out_len, pix_len;
};

#define BNN_CHUNK_BLOCKS BNN_BCONV_BMAX /* 64 output channels per task */

static bnn_bconv2d_kernel select_kernel(const bnn_cpu *cpu, int path) {
#if defined(__aarch64__)
    if (path == BNN_PATH_NEON && cpu->inorder) return bconv2d_neon_a53; /* the in-order schedule */
#endif
    (void)cpu; /* the other kernels need only what their path guarantees */
    return BNN_KERNEL_FOR_PATH(bconv2d, path);
}

/* Whether a kernel reads nibble-split operands (kernel.h): x86's AVX2 kernel. */
static int kernel_splits_nibbles(bnn_bconv2d_kernel k) {
#if defined(BNN_X86)
    return k == bconv2d_avx2;
#else
    (void)k;
    return 0;
#endif
}

/* For the C tests (internal.h): which kernel a context's bconv2d runs. */
const char *bnn_bconv2d_kernel_name(const bnn_ctx *ctx) {
    bnn_bconv2d_kernel k = select_kernel(&ctx->cpu, ctx->path);
#if defined(__aarch64__)
    if (k == bconv2d_neon_a53) return "neon-a53";
#endif
    (void)k;
    return bnn_path_name(ctx->path);
}

void bnn_bconv2d_destroy(bnn_bconv2d *L) {
    if (!L) return;
    bnn_aligned_free(L->wblk);
    bnn_aligned_free(L->wnib);
    free(L->wsum);
    free((void *)L->out.mul);
    free((void *)L->out.add);
    free((void *)L->out.threshold);
    free((void *)L->out.flip);
    for (int32_t s = 0; s < L->out.n_steps; s++) {
        free((void *)L->out.steps[s].a);
        free((void *)L->out.steps[s].b);
    }
    free(L);
}

int bnn_bconv2d_create(bnn_bconv2d **out, const bnn_window *win, int32_t pad_mode, const uint32_t *weights,
                       size_t weights_len, const bnn_output *output) {
    if (!out) return BNN_E_NULL;
    *out = NULL;
    if (!win || !weights || !output) return BNN_E_NULL;
    int32_t oh, ow;
    int st = bnn_window_check(win, 1, &oh, &ow);
    if (st) return st;
    if (pad_mode != BNN_PAD_ZERO && pad_mode != BNN_PAD_ONE) return BNN_E_SHAPE;
    if (output->out_mode == BNN_OUT_BITS && !output->threshold) return BNN_E_NULL;
    if (output->out_mode < BNN_OUT_INT32 || output->out_mode > BNN_OUT_BITS) return BNN_E_SHAPE;
    if (output->n_steps) { /* output steps: float outputs only */
        if (output->out_mode != BNN_OUT_FLOAT || output->n_steps < 0 || output->n_steps > BNN_EW_MAX_STEPS)
            return BNN_E_SHAPE;
        if (!output->steps) return BNN_E_NULL;
        int st = bnn_ew_steps_check(output->steps, output->n_steps, 1);
        if (st) return st;
    }
    const int32_t cw = (int32_t)bnn_packed_words(win->in_c), oc = win->out_c;
    const int64_t kk = (int64_t)win->kernel_h * win->kernel_w, K = kk * cw;
    size_t need_w = bnn_elems4(oc, kk, cw, 1);
    if (need_w == 0) return BNN_E_SHAPE;
    if (weights_len < need_w) return BNN_E_SIZE;
    size_t in_len = bnn_elems4(win->n, win->in_h, win->in_w, cw);
    size_t pix_len = bnn_elems4(win->n, oh, ow, 1);
    size_t out_len = bnn_elems4(win->n, oh, ow, output->out_mode == BNN_OUT_BITS ? (int64_t)bnn_packed_words(oc) : oc);
    int32_t ocb = (oc + 15) / 16;
    size_t blk_len = bnn_elems4(ocb, K, 16, 4);
    if (!in_len || !pix_len || !out_len || !blk_len || K > INT32_MAX / 64) return BNN_E_SHAPE;

    bnn_bconv2d *L = calloc(1, sizeof *L);
    if (!L) return BNN_E_NOMEM;
    L->win = *win;
    L->pad_mode = pad_mode;
    L->out_h = oh;
    L->out_w = ow;
    L->cw = cw;
    L->ocb = ocb;
    L->kwords = K;
    L->in_len = in_len;
    L->out_len = out_len;
    L->pix_len = pix_len;
    L->out.mode = output->out_mode;
    L->wblk = bnn_aligned_alloc(blk_len);
    L->wsum = malloc((size_t)kk * oc * sizeof(int32_t));
    if (!L->wblk || !L->wsum) goto nomem;

    /* Block the weights, clearing the bits past in_c in the tail words. */
    const uint32_t tail = (win->in_c % 32) ? ((1u << (win->in_c % 32)) - 1u) : 0xFFFFFFFFu;
    memset(L->wblk, 0, blk_len);
    for (int32_t o = 0; o < oc; o++) {
        uint32_t *dst = L->wblk + (size_t)(o / 16) * K * 16 + (o % 16);
        const uint32_t *src = weights + (size_t)o * K;
        for (int64_t k = 0; k < K; k++) {
            uint32_t v = src[k];
            if ((k % cw) == cw - 1) v &= tail;
            dst[k * 16] = v;
        }
        for (int64_t pos = 0; pos < kk; pos++) {
            int32_t pc = 0;
            for (int32_t c = 0; c < cw; c++) pc += (int32_t)bnn_popcount32(dst[(pos * cw + c) * 16]);
            L->wsum[pos * oc + o] = win->in_c - 2 * pc;
        }
    }
#if defined(BNN_X86)
    L->wnib = bnn_aligned_alloc(blk_len * 2);
    if (!L->wnib) goto nomem;
    for (size_t i = 0; i < blk_len / 4 / 16; i++) /* each word k of each block: 16 channels */
        for (int j = 0; j < 16; j++) {
            uint32_t v = L->wblk[i * 16 + j];
            L->wnib[(2 * i) * 16 + j] = bnn_nibbles_lo(v);
            L->wnib[(2 * i + 1) * 16 + j] = bnn_nibbles_hi(v);
        }
#endif

    if (L->out.mode == BNN_OUT_FLOAT) {
        float *mul = malloc((size_t)oc * sizeof(float)), *add = malloc((size_t)oc * sizeof(float));
        L->out.mul = mul;
        L->out.add = add;
        if (!mul || !add) goto nomem;
        L->out.no_denormal = 1;
        for (int32_t o = 0; o < oc; o++) {
            mul[o] = output->mul ? output->mul[o] : 1.0f;
            add[o] = output->add ? output->add[o] : 0.0f;
            L->out.no_denormal &= !bnn_denormal(mul[o]) && !bnn_denormal(add[o]);
        }
        /* copies of the parameter arrays; repeated for a kernel call's pixels when one chunk
         * holds every channel (see bnn_output_steps) */
        L->out.step_pix = oc <= 16 * BNN_CHUNK_BLOCKS ? BNN_BCONV_PMAX : 1;
        const size_t plen = (size_t)L->out.step_pix * oc;
        for (int32_t s = 0; s < output->n_steps; s++) {
            const bnn_ew_step *src = &output->steps[s];
            bnn_ew_step *dst = &L->out.steps[s];
            L->out.n_steps = s + 1; /* so that destroy frees what was copied */
            dst->op = src->op;
            const float *in[2] = {src->a, src->b};
            float *cp[2] = {NULL, NULL};
            for (int k = 0; k < 2; k++) {
                if (!in[k]) continue;
                cp[k] = malloc(plen * sizeof(float));
                if (!cp[k]) {
                    free(cp[0]);
                    goto nomem;
                }
                for (size_t i = 0; i < plen; i += (size_t)oc) memcpy(cp[k] + i, in[k], (size_t)oc * sizeof(float));
            }
            dst->a = cp[0];
            dst->b = cp[1];
        }
    } else if (L->out.mode == BNN_OUT_BITS) {
        int32_t *thr = malloc((size_t)oc * sizeof(int32_t));
        uint8_t *flip = malloc((size_t)oc);
        L->out.threshold = thr;
        L->out.flip = flip;
        if (!thr || !flip) goto nomem;
        memcpy(thr, output->threshold, (size_t)oc * sizeof(int32_t));
        for (int32_t o = 0; o < oc; o++) flip[o] = output->flip ? (output->flip[o] != 0) : 0;
    }
    *out = L;
    return BNN_OK;
nomem:
    bnn_bconv2d_destroy(L);
    return BNN_E_NOMEM;
}

size_t bnn_bconv2d_input_len(const bnn_bconv2d *L) { return L ? L->in_len : 0; }
size_t bnn_bconv2d_output_len(const bnn_bconv2d *L) { return L ? L->out_len : 0; }

typedef struct {
    const bnn_bconv2d *L;
    const uint32_t *xp; /* padded (or original) input; nibble-split when split */
    const uint32_t *w;  /* the weights the kernel reads: wblk, or wnib when split */
    int32_t split;      /* 2: operands nibble-split (kernel.h), every word two; else 1 */
    int32_t hp, wp;     /* its height and width */
    const float *k_scale, *r;
    void *y;
    bnn_bconv2d_kernel kern;
    int32_t nchunks;
} run_args;

/* The task (void *p, int64_t begin, int64_t end): items [begin, end) = (output row, chunk of
 * 64 output channels) pairs; per tile of up to BNN_BCONV_PMAX pixels the kernel's counts,
 * then the epilogue: d = nfull - 2 * pop, the zero-padding correction, the output transform
 * and the output steps.  The body is a macro, compiled per path like the kernels (on x86
 * the compilers vectorise the epilogue for AVX2 / AVX-512F instead of SSE2; the same IEEE
 * operations in the same order, so the same bits). */
#define RUN_TASK_BODY_WITH(output_transform, output_steps)                                                               \
    {                                                                                                                    \
        const run_args *a = p;                                                                                           \
        const bnn_bconv2d *L = a->L;                                                                                     \
        const bnn_window *w = &L->win;                                                                                   \
        const int32_t oc = w->out_c, cw = L->cw * a->split; /* words per input pixel, as the kernel reads */             \
        const int32_t nfull = w->kernel_h * w->kernel_w * w->in_c;                                                       \
        bnn_bconv_geom g = {(ptrdiff_t)w->stride_w * cw, (ptrdiff_t)a->wp * cw, (ptrdiff_t)L->kwords * a->split * 16,    \
                            w->kernel_h, w->kernel_w, cw};                                                               \
        int32_t pop[BNN_BCONV_PMAX * BNN_BCONV_POP_STRIDE];                                                              \
        int32_t d[BNN_BCONV_POP_STRIDE];                                                                                 \
        for (int64_t item = begin; item < end; item++) {                                                                 \
            int32_t chunk = (int32_t)(item % a->nchunks);                                                                \
            int64_t row = item / a->nchunks;                                                                             \
            int32_t n = (int32_t)(row / L->out_h), oy = (int32_t)(row % L->out_h);                                       \
            int32_t b0 = chunk * BNN_CHUNK_BLOCKS;                                                                       \
            int nb = L->ocb - b0 < BNN_CHUNK_BLOCKS ? L->ocb - b0 : BNN_CHUNK_BLOCKS;                                    \
            int32_t o0 = b0 * 16;                                                                                        \
            int nc = oc - o0 < 16 * nb ? oc - o0 : 16 * nb;                                                              \
            int32_t ky0, ky1;                                                                                            \
            bnn_valid_range(oy * w->stride_h, w->kernel_h, w->pad_top, w->in_h, &ky0, &ky1);                             \
            const uint32_t *xrow = a->xp + ((size_t)n * a->hp + (size_t)oy * w->stride_h) * a->wp * cw;                  \
            const uint32_t *wb = a->w + (size_t)b0 * g.wblock_stride;                                                    \
            for (int32_t ox0 = 0; ox0 < L->out_w; ox0 += BNN_BCONV_PMAX) {                                               \
                int np = L->out_w - ox0 < BNN_BCONV_PMAX ? L->out_w - ox0 : BNN_BCONV_PMAX;                              \
                a->kern(&g, xrow + (size_t)ox0 * w->stride_w * cw, wb, nb, np, pop);                                     \
                for (int pp = 0; pp < np; pp++) {                                                                        \
                    const int32_t *pc = pop + pp * BNN_BCONV_POP_STRIDE;                                                 \
                    for (int j = 0; j < nc; j++) d[j] = nfull - 2 * pc[j];                                               \
                    if (L->pad_mode == BNN_PAD_ZERO) {                                                                   \
                        int32_t kx0, kx1;                                                                                \
                        bnn_valid_range((ox0 + pp) * w->stride_w, w->kernel_w, w->pad_left, w->in_w, &kx0, &kx1);        \
                        bnn_zero_padding_correct(d, nc, L->wsum, oc, o0, w->kernel_h, w->kernel_w, ky0, ky1, kx0, kx1);  \
                    }                                                                                                    \
                    size_t pix = ((size_t)n * L->out_h + oy) * L->out_w + ox0 + pp;                                      \
                    output_transform(&L->out, d, nc, o0, oc, pix, a->k_scale, a->y);                                     \
                }                                                                                                        \
                if (L->out.n_steps)                                                                                      \
                    output_steps(&L->out, np, nc, o0, oc, ((size_t)n * L->out_h + oy) * L->out_w + ox0, a->r, a->y);     \
            }                                                                                                            \
        }                                                                                                                \
    }

#define RUN_TASK_BODY RUN_TASK_BODY_WITH(bnn_output_transform, bnn_output_steps)
static void run_task_portable(void *p, int64_t begin, int64_t end) RUN_TASK_BODY
#if defined(BNN_X86)
BNN_DEF_X86_KERNELS(run_task, (void *p, int64_t begin, int64_t end), RUN_TASK_BODY)
#endif
#if defined(BNN_HAVE_NEON) && !defined(__aarch64__)
/* armv7: FLOAT's output transform and the output steps on NEON, guarded (NEON's float
 * flushes denormals to zero; the guards keep the reference's bits: output_transform.h,
 * eltwise/steps_neon.h).  aarch64 vectorises the epilogue with NEON anyway (its baseline,
 * IEEE). */
BNN_DEF_OUTPUT_STEPS(bnn_output_steps_neon, bnn_ew_steps_neon)
static void run_task_neon(void *p, int64_t begin, int64_t end)
    RUN_TASK_BODY_WITH(bnn_output_transform_neon, bnn_output_steps_neon)
#else
#define run_task_neon run_task_portable
#endif

int bnn_bconv2d_run(bnn_ctx *ctx, const bnn_bconv2d *L, const uint32_t *x, size_t x_len, const float *k_scale,
                    size_t k_len, void *y, size_t y_len) {
    return bnn_bconv2d_run_residual(ctx, L, x, x_len, k_scale, k_len, NULL, 0, y, y_len);
}

int bnn_bconv2d_run_residual(bnn_ctx *ctx, const bnn_bconv2d *L, const uint32_t *x, size_t x_len,
                             const float *k_scale, size_t k_len, const float *r, size_t r_len, void *y,
                             size_t y_len) {
    if (!ctx || !L || !x || !y) return BNN_E_NULL;
    int adds = bnn_ew_steps_add(L->out.steps, L->out.n_steps);
    if (adds && !r) return BNN_E_NULL;
    if (r && !adds) return BNN_E_SHAPE;
    if (x_len < L->in_len || y_len < L->out_len || (r && r_len < L->out_len)) return BNN_E_SIZE;
    if (k_scale) {
        if (L->out.mode != BNN_OUT_FLOAT) return BNN_E_SHAPE;
        if (k_len < L->pix_len) return BNN_E_SIZE;
    }
    const bnn_window *w = &L->win;
    const int32_t cw = L->cw;
    bnn_bconv2d_kernel kern = select_kernel(&ctx->cpu, ctx->path);
    const int32_t split = kernel_splits_nibbles(kern) ? 2 : 1;
    run_args a = {L, x, split == 2 ? L->wnib : L->wblk, split, w->in_h, w->in_w, k_scale, r, y, kern,
                  (L->ocb + BNN_CHUNK_BLOCKS - 1) / BNN_CHUNK_BLOCKS};
    const int padded = w->pad_top || w->pad_left || w->pad_bottom || w->pad_right;
    if (padded || split == 2) { /* a copy: padded with bit 0 = +1 (the correction makes it 0
                                 * for BNN_PAD_ZERO), and / or nibble-split */
        int32_t hp = w->in_h + w->pad_top + w->pad_bottom, wp = w->in_w + w->pad_left + w->pad_right;
        size_t len = bnn_elems4(w->n, hp, wp, (int64_t)cw * split);
        if (!len || len > SIZE_MAX / 4) return BNN_E_SHAPE;
        uint32_t *xp = bnn_scratch(ctx, len * 4);
        if (!xp) return BNN_E_NOMEM;
        if (padded) memset(xp, 0, len * 4);
        for (int32_t n = 0; n < w->n; n++)
            for (int32_t yy = 0; yy < w->in_h; yy++) {
                uint32_t *dst = xp + (((size_t)n * hp + yy + w->pad_top) * wp + w->pad_left) * cw * split;
                const uint32_t *src = x + (((size_t)n * w->in_h + yy) * w->in_w) * cw;
                if (split == 1) {
                    memcpy(dst, src, (size_t)w->in_w * cw * 4);
                    continue;
                }
                for (size_t i = 0; i < (size_t)w->in_w * cw; i++) {
                    dst[2 * i] = bnn_nibbles_lo(src[i]);
                    dst[2 * i + 1] = bnn_nibbles_hi(src[i]);
                }
            }
        a.xp = xp;
        a.hp = hp;
        a.wp = wp;
    }
    int64_t items = (int64_t)w->n * L->out_h * a.nchunks;
    bnn_parallel_for(ctx, items, 1, BNN_KERNEL_FOR_PATH(run_task, ctx->path), &a);
    return BNN_OK;
}
