/* Tests of the float ops (fconv2d, max/avg pool, add, elementwise chains, float bit
 * packing with and without an affine), binary max pool and xnor_scale against naive
 * references (double precision, or the same float operations where the result is exact);
 * bit-identity across thread counts 1..3 and every available code path (fconv2d: per path;
 * x86 uses FMA); argument checking (NULL, short buffers, bad geometry). */
#include <math.h>
#include <string.h>
#include "bnn.h"
#include "check.h"

#define EXTRA 4 /* sentinel elements after every output, must stay untouched */
static const float SENT = 12345.5f;
static const uint32_t SENT_U = 0xDEADBEEFu;

static bnn_ctx *ctxs[3]; /* 1, 2, 3 threads */

/* ---- helpers ------------------------------------------------------------------------- */
static int32_t out_dim(int32_t in, int32_t k, int32_t s, int32_t p0, int32_t p1) { return (in + p0 + p1 - k) / s + 1; }
static size_t words(int32_t c) { return ((size_t)c + 31) / 32; }

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) abort();
    return p;
}
static void ffill(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}
static void frand(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = check_rand_float(-1.0f, 1.0f);
}
static int all_sent(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&p[i], &SENT, sizeof SENT) != 0) return 0;
    return 1;
}

static bnn_window rand_win(int max_c) {
    static const int ks[] = {1, 3, 5, 7};
    bnn_window w;
    memset(&w, 0, sizeof w);
    w.kernel_h = ks[check_rand_int(0, 3)];
    w.kernel_w = check_rand_int(0, 2) ? w.kernel_h : ks[check_rand_int(0, 3)];
    w.stride_h = check_rand_int(1, 2);
    w.stride_w = check_rand_int(0, 3) ? w.stride_h : check_rand_int(1, 2);
    w.pad_top = check_rand_int(0, w.kernel_h - 1);
    w.pad_bottom = check_rand_int(0, w.kernel_h - 1);
    w.pad_left = check_rand_int(0, w.kernel_w - 1);
    w.pad_right = check_rand_int(0, w.kernel_w - 1);
    int mh = w.kernel_h - w.pad_top - w.pad_bottom, mw = w.kernel_w - w.pad_left - w.pad_right;
    w.in_h = (mh > 1 ? mh : 1) + check_rand_int(0, 12);
    w.in_w = (mw > 1 ? mw : 1) + check_rand_int(0, 14);
    w.in_c = check_rand_int(1, max_c);
    w.n = check_rand_int(1, 2);
    w.out_c = check_rand_int(1, 40);
    return w;
}

#define WFMT "n%d %dx%dx%d oc%d k%dx%d s%dx%d p%d,%d,%d,%d"
#define WARGS(w) (w).n, (w).in_h, (w).in_w, (w).in_c, (w).out_c, (w).kernel_h, (w).kernel_w, (w).stride_h, \
                 (w).stride_w, (w).pad_top, (w).pad_left, (w).pad_bottom, (w).pad_right

/* Runs op on every context (thread count) and every available path (only `path` when it
 * is not BNN_PATH_AUTO); all results must be bit-identical to the first one (1 thread on
 * the first path), which is returned (caller frees), and the EXTRA sentinel elements past
 * y_len must stay untouched. */
typedef int (*op_fn)(bnn_ctx *ctx, const void *state, void *y, size_t y_len);

/* When set, floats compare equal when both are NaN (any payload): a NaN's payload depends on
 * the order of the operands of an add of two NaNs, which vectorised code may swap. */
static int nan_equal;
static int same_bits(const void *a, const void *b, size_t n_floats) {
    if (!nan_equal) return memcmp(a, b, n_floats * 4) == 0;
    const float *fa = a, *fb = b;
    for (size_t i = 0; i < n_floats; i++)
        if (memcmp(&fa[i], &fb[i], 4) != 0 && !(fa[i] != fa[i] && fb[i] != fb[i])) return 0;
    return 1;
}

static void *run_paths(op_fn op, const void *state, size_t y_len, size_t esz, const char *what, int path) {
    size_t bytes = (y_len + EXTRA) * esz;
    unsigned char *base = malloc(bytes), *y = malloc(bytes);
    if (!base || !y) abort();
    int first = 1;
    for (int p = BNN_PATH_PORTABLE; p <= BNN_PATH_AVX512; p++) {
        if (!bnn_path_available(p) || (path != BNN_PATH_AUTO && p != path)) continue;
        for (int t = 0; t < 3; t++) {
            CHECK(bnn_ctx_set_path(ctxs[t], p) == BNN_OK, "set path %d", p);
            unsigned char *dst = first ? base : y;
            for (size_t i = 0; i < y_len + EXTRA; i++) memcpy(dst + i * esz, &SENT, esz); /* esz is 4 */
            int rc = op(ctxs[t], state, dst, y_len);
            CHECK(rc == BNN_OK, "%s: rc %d (path %s, %d threads)", what, rc, bnn_path_name(p), t + 1);
            for (size_t i = y_len; i < y_len + EXTRA; i++)
                CHECK(memcmp(dst + i * esz, &SENT, esz) == 0, "%s: wrote past the output", what);
            if (!first)
                CHECK(same_bits(base, y, y_len * esz / 4), "%s: path %s, %d threads differs from %s/1",
                      what, bnn_path_name(p), t + 1, path == BNN_PATH_AUTO ? "portable" : bnn_path_name(p));
            first = 0;
        }
    }
    free(y);
    return base;
}

static void *run_variants(op_fn op, const void *state, size_t y_len, size_t esz, const char *what) {
    return run_paths(op, state, y_len, esz, what, BNN_PATH_AUTO);
}

static int close_enough(double got, double ref, double scale) {
    return fabs(got - ref) <= 1e-5 * scale + 1e-30;
}

/* ---- fconv2d --------------------------------------------------------------------------- */
typedef struct {
    const bnn_fconv2d *layer;
    const float *x;
    size_t x_len;
} fconv_state;

static int fconv_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const fconv_state *st = s;
    return bnn_fconv2d_run(ctx, st->layer, st->x, st->x_len, y, y_len);
}

static void test_fconv_case_g(const bnn_window *w, int with_bias, int groups) {
    const int icg = w->in_c / groups, ocg = w->out_c / groups;
    int32_t oh = out_dim(w->in_h, w->kernel_h, w->stride_h, w->pad_top, w->pad_bottom);
    int32_t ow = out_dim(w->in_w, w->kernel_w, w->stride_w, w->pad_left, w->pad_right);
    size_t x_len = (size_t)w->n * w->in_h * w->in_w * w->in_c;
    size_t w_len = (size_t)w->out_c * w->kernel_h * w->kernel_w * icg;
    size_t y_len = (size_t)w->n * oh * ow * w->out_c;
    float *x = falloc(x_len), *wt = falloc(w_len), *bias = falloc(w->out_c);
    frand(x, x_len);
    frand(wt, w_len);
    frand(bias, w->out_c);
    bnn_fconv2d *L = NULL;
    int rc = bnn_fconv2d_create(&L, w, groups, wt, w_len, with_bias ? bias : NULL, with_bias ? (size_t)w->out_c : 0);
    CHECK(rc == BNN_OK && L, "fconv create rc %d groups %d " WFMT, rc, groups, WARGS(*w));
    if (!L) goto done;
    CHECK(bnn_fconv2d_input_len(L) == x_len, "input_len");
    CHECK(bnn_fconv2d_output_len(L) == y_len, "output_len");
    fconv_state st = {L, x, x_len};
    /* Each path: bit-identical for 1..3 threads and close to the double reference.  NEON
     * does the portable arithmetic (bit-identical to it); x86 uses FMA (rounding only). */
    float *ref = NULL;
    for (int path = BNN_PATH_PORTABLE; path <= BNN_PATH_AVX512; path++) {
        if (!bnn_path_available(path)) continue;
        float *y = run_paths(fconv_op, &st, y_len, sizeof(float), "fconv2d", path);
        if (!ref) ref = y;
        else if (path == BNN_PATH_NEON)
            CHECK(memcmp(ref, y, y_len * sizeof(float)) == 0, "fconv2d groups %d " WFMT ": neon differs from portable",
                  groups, WARGS(*w));
        int bad = 0;
        for (int b = 0; b < w->n; b++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    for (int o = 0; o < w->out_c; o++) {
                        double acc = with_bias ? bias[o] : 0.0, mag = fabs(acc);
                        for (int ky = 0; ky < w->kernel_h; ky++)
                            for (int kx = 0; kx < w->kernel_w; kx++) {
                                int iy = oy * w->stride_h - w->pad_top + ky, ix = ox * w->stride_w - w->pad_left + kx;
                                if (iy < 0 || iy >= w->in_h || ix < 0 || ix >= w->in_w) continue;
                                for (int c = 0; c < icg; c++) {
                                    double p = (double)x[(((size_t)b * w->in_h + iy) * w->in_w + ix) * w->in_c
                                                         + (size_t)(o / ocg) * icg + c]
                                               * wt[(((size_t)o * w->kernel_h + ky) * w->kernel_w + kx) * icg + c];
                                    acc += p;
                                    mag += fabs(p);
                                }
                            }
                        float got = y[(((size_t)b * oh + oy) * ow + ox) * w->out_c + o];
                        if (!close_enough(got, acc, mag) && bad++ < 3)
                            CHECK(0, "fconv2d %s groups %d " WFMT " at b%d y%d x%d o%d: %.9g vs %.9g",
                                  bnn_path_name(path), groups, WARGS(*w), b, oy, ox, o, got, acc);
                    }
        CHECK(bad == 0, "fconv2d %s groups %d " WFMT ": %d mismatches", bnn_path_name(path), groups, WARGS(*w), bad);
        if (y != ref) free(y);
    }
    free(ref);
    bnn_fconv2d_destroy(L);
done:
    free(x);
    free(wt);
    free(bias);
}

static void test_fconv_case(const bnn_window *w, int with_bias) { test_fconv_case_g(w, with_bias, 1); }

/* grouped and depthwise convolutions: random windows with groups dividing both channel
 * counts (depthwise: groups = in_c = out_c, its own kernels), then the shapes of QuickNet's
 * stem and blur pools and channel counts around the vector widths */
static void test_fconv_groups(void) {
    for (int i = 0; i < 40; i++) {
        bnn_window w = rand_win(40);
        int groups;
        if (i % 2) { /* depthwise */
            w.out_c = w.in_c;
            groups = w.in_c;
        } else {
            groups = check_rand_int(1, 8);
            w.in_c = groups * check_rand_int(1, 6);
            w.out_c = groups * check_rand_int(1, 20);
        }
        test_fconv_case_g(&w, i % 3 != 0, groups);
    }
    static const int cs[] = {1, 3, 4, 5, 8, 15, 16, 17, 31, 33, 64};
    for (int i = 0; i < (int)(sizeof cs / sizeof cs[0]); i++) {
        bnn_window w = {1, 9, 23, cs[i], cs[i], 3, 3, 2, 2, 1, 1, 1, 1}; /* blur pool: 3x3 s2 depthwise */
        test_fconv_case_g(&w, i % 2, cs[i]);
        w = (bnn_window){2, 7, 30, cs[i], cs[i], 3, 3, 1, 1, 1, 1, 1, 1};
        test_fconv_case_g(&w, 1, cs[i]);
    }
    bnn_window w = {1, 16, 16, 64, 64, 3, 3, 2, 2, 1, 1, 1, 1}; /* group 8, as QuickNet's stem */
    test_fconv_case_g(&w, 1, 8);
    w = (bnn_window){1, 12, 20, 32, 64, 3, 3, 2, 2, 0, 0, 1, 1}; /* 4 in / 8 out per group */
    test_fconv_case_g(&w, 0, 8);
    w = (bnn_window){1, 5, 6, 48, 24, 1, 1, 1, 1, 0, 0, 0, 0}; /* flat 1x1, 3 groups */
    test_fconv_case_g(&w, 1, 3);
    w = (bnn_window){1, 5, 200, 8, 24, 3, 3, 1, 1, 1, 1, 1, 1}; /* channel multiplier 3 */
    test_fconv_case_g(&w, 1, 8);
}

static void test_fconv(void) {
    for (int i = 0; i < 60; i++) {
        bnn_window w = rand_win(70);
        test_fconv_case(&w, i % 3 != 0);
    }
    /* first layer: 3x3 stride 2 on a 3-channel image */
    bnn_window w = {1, 37, 41, 3, 16, 3, 3, 2, 2, 1, 1, 1, 1};
    test_fconv_case(&w, 1);
    w = (bnn_window){2, 20, 19, 1, 32, 3, 3, 2, 2, 0, 0, 1, 1};
    test_fconv_case(&w, 0);
    /* 1x1 convolution, out_c multiple and non-multiple of the block */
    w = (bnn_window){1, 9, 7, 64, 24, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 1);
    w = (bnn_window){2, 5, 6, 33, 8, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 1);
    /* dense heads: 1x1 convolution on a 1x1 image */
    w = (bnn_window){1, 1, 1, 4096, 37, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 1);
    w = (bnn_window){2, 1, 1, 512, 10, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 0);
    /* the detector's stem (3x3 s2, 3 -> 32) and shortcuts / heads (1x1: flat), sizes that
     * exercise every x86 tile (remainders of 6 pixels, 1-4 blocks of 16, tail blocks) */
    w = (bnn_window){1, 32, 32, 3, 32, 3, 3, 2, 2, 1, 1, 1, 1};
    test_fconv_case(&w, 1);
    w = (bnn_window){1, 8, 8, 96, 80, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 1);
    w = (bnn_window){2, 7, 9, 40, 18, 1, 1, 1, 1, 0, 0, 0, 0};
    test_fconv_case(&w, 1);
    w = (bnn_window){1, 13, 11, 17, 100, 3, 3, 1, 1, 1, 1, 1, 1};
    test_fconv_case(&w, 0);
    w = (bnn_window){1, 3, 200, 5, 48, 1, 3, 1, 2, 0, 1, 0, 1};
    test_fconv_case(&w, 1);
    /* rows longer than one kernel call (the portable, NEON and AVX2 kernels run up to 96
     * pixels a call): runs of 96, 96 and 36 pixels; 3 blocks of 8 channels on ARM (a 2-block
     * and a 1-block NEON tile) */
    w = (bnn_window){1, 2, 230, 6, 24, 3, 3, 1, 1, 1, 1, 1, 1};
    test_fconv_case(&w, 1);
    /* kernel as big as the padded image; wide stride */
    w = (bnn_window){1, 4, 5, 2, 9, 7, 7, 8, 8, 2, 1, 1, 1};
    test_fconv_case(&w, 1);
}

/* ---- pools, xnor_scale ------------------------------------------------------------------ */
typedef struct {
    int kind; /* 0 max, 1 avg exclude pad, 2 avg include pad, 3 bmax, 4 xnor_scale */
    const bnn_window *w;
    const void *x;
    size_t x_len;
} pool_state;

static int pool_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const pool_state *st = s;
    switch (st->kind) {
    case 0: return bnn_maxpool2d(ctx, st->w, st->x, st->x_len, y, y_len);
    case 1: return bnn_avgpool2d(ctx, st->w, 0, st->x, st->x_len, y, y_len);
    case 2: return bnn_avgpool2d(ctx, st->w, 1, st->x, st->x_len, y, y_len);
    case 3: return bnn_bmaxpool2d(ctx, st->w, st->x, st->x_len, y, y_len);
    default: return bnn_xnor_scale(ctx, st->w, st->x, st->x_len, y, y_len);
    }
}

/* When set, test_pool_case's float inputs are near and below FLT_MIN, zeros, and pairs that
 * cancel to a tiny sum (armv7 NEON flushes such values to zero; its kernels must notice). */
static int pool_tiny;
/* a value of magnitude 2^-150 .. 2^-95: normal, denormal or 0 */
static float rand_tiny(void) { return ldexpf(check_rand_float(-2.0f, 2.0f), -check_rand_int(96, 150)); }
static void frand_tiny(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int k = check_rand_int(0, 4);
        p[i] = k == 0   ? (check_rand_int(0, 1) ? 0.0f : -0.0f)
               : k == 1 ? check_rand_float(-2.0f, 2.0f)
               : k == 2 && i ? -p[i - 1] * (1.0f + ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(1, 23)))
                             : rand_tiny();
    }
}

static void test_pool_case(const bnn_window *w, int kind) {
    static const char *names[] = {"maxpool", "avgpool", "avgpool(include_pad)", "bmaxpool", "xnor_scale"};
    int32_t oh = out_dim(w->in_h, w->kernel_h, w->stride_h, w->pad_top, w->pad_bottom);
    int32_t ow = out_dim(w->in_w, w->kernel_w, w->stride_w, w->pad_left, w->pad_right);
    size_t c = kind == 3 ? words(w->in_c) : (size_t)w->in_c;
    size_t oc = kind == 4 ? 1 : c;
    size_t x_len = (size_t)w->n * w->in_h * w->in_w * c, y_len = (size_t)w->n * oh * ow * oc;
    void *xv = malloc(x_len * 4);
    if (!xv) abort();
    if (kind == 3) {
        uint32_t *xb = xv;
        for (size_t i = 0; i < x_len; i++) {
            uint32_t v = (uint32_t)check_rand_u64() | (uint32_t)check_rand_u64(); /* mostly 1 bits: ANDs stay interesting */
            size_t wi = i % c;
            if (wi == c - 1 && w->in_c % 32) v &= (1u << (w->in_c % 32)) - 1;
            xb[i] = v;
        }
    } else if (pool_tiny) {
        frand_tiny(xv, x_len);
    } else {
        frand(xv, x_len);
    }
    pool_state st = {kind, w, xv, x_len};
    void *yv = run_variants(pool_op, &st, y_len, 4, names[kind]);
    int bad = 0;
    for (int b = 0; b < w->n; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (size_t ch = 0; ch < oc; ch++) {
                    double acc = kind == 0 ? -INFINITY : 0.0, mag = 0.0;
                    uint32_t band = 0xFFFFFFFFu;
                    int cnt = 0;
                    for (int ky = 0; ky < w->kernel_h; ky++)
                        for (int kx = 0; kx < w->kernel_w; kx++) {
                            int iy = oy * w->stride_h - w->pad_top + ky, ix = ox * w->stride_w - w->pad_left + kx;
                            if (iy < 0 || iy >= w->in_h || ix < 0 || ix >= w->in_w) continue;
                            size_t pix = ((size_t)b * w->in_h + iy) * w->in_w + ix;
                            cnt++;
                            if (kind == 3) {
                                band &= ((const uint32_t *)xv)[pix * c + ch];
                            } else if (kind == 4) {
                                double s = 0.0;
                                for (size_t i = 0; i < c; i++) s += fabs(((const float *)xv)[pix * c + i]);
                                acc += s / (double)c;
                            } else {
                                double v = ((const float *)xv)[pix * c + ch];
                                acc = kind == 0 ? (v > acc ? v : acc) : acc + v;
                                mag += fabs(v);
                            }
                        }
                    size_t oi = (((size_t)b * oh + oy) * ow + ox) * oc + ch;
                    if (kind == 3) {
                        uint32_t got = ((const uint32_t *)yv)[oi];
                        if (got != band && bad++ < 3)
                            CHECK(0, "bmaxpool " WFMT " at %d,%d,%d,%d: %08x vs %08x", WARGS(*w), b, oy, ox, (int)ch, got, band);
                        continue;
                    }
                    double div = kind == 0 ? 1.0 : kind == 1 ? cnt : (double)(w->kernel_h * w->kernel_w);
                    if (kind == 4) {
                        mag = acc;
                        div = (double)(w->kernel_h * w->kernel_w);
                    }
                    double ref = acc / div, got = ((const float *)yv)[oi];
                    if (!close_enough(got, ref, kind == 0 ? fabs(ref) : mag / div) && bad++ < 3)
                        CHECK(0, "%s " WFMT " at %d,%d,%d,%d: %.9g vs %.9g", names[kind], WARGS(*w), b, oy, ox,
                              (int)ch, got, ref);
                }
    CHECK(bad == 0, "%s " WFMT ": %d mismatches", names[kind], WARGS(*w), bad);
    free(xv);
    free(yv);
}

static void test_pools(void) {
    for (int i = 0; i < 40; i++) {
        bnn_window w = rand_win(70);
        for (int kind = 0; kind < 5; kind++) test_pool_case(&w, kind);
        w.in_c = check_rand_int(1, 130); /* several packed words */
        test_pool_case(&w, 3);
    }
    /* 2x2 windows (the downsampling shortcut; a one-pass fast path), with and without pads */
    bnn_window w2[] = {{1, 8, 8, 32, 0, 2, 2, 2, 2, 0, 0, 0, 0}, {2, 9, 7, 5, 0, 2, 2, 2, 2, 1, 0, 0, 1},
                       {1, 6, 5, 70, 0, 2, 2, 1, 1, 1, 1, 1, 1}, {1, 3, 4, 1, 0, 2, 2, 1, 2, 0, 1, 1, 0}};
    for (size_t i = 0; i < sizeof w2 / sizeof w2[0]; i++)
        for (int kind = 0; kind < 4; kind++) test_pool_case(&w2[i], kind);
    pool_tiny = 1;
    for (size_t i = 0; i < sizeof w2 / sizeof w2[0]; i++)
        for (int kind = 0; kind < 3; kind++) test_pool_case(&w2[i], kind);
    pool_tiny = 0;
    /* global average pooling; out_c is ignored by pools and xnor_scale */
    bnn_window w = {2, 7, 7, 64, 0, 7, 7, 1, 1, 0, 0, 0, 0};
    for (int kind = 0; kind < 5; kind++) test_pool_case(&w, kind);
    w = (bnn_window){1, 1, 1, 33, -5, 1, 1, 1, 1, 0, 0, 0, 0};
    for (int kind = 0; kind < 5; kind++) test_pool_case(&w, kind);
}

/* ---- add -------------------------------------------------------------------------------- */
typedef struct {
    const float *a, *b;
    size_t n;
} add_state;

static int add_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const add_state *st = s;
    return bnn_add_f32(ctx, st->a, st->n, st->b, st->n, y, y_len, st->n);
}

static void test_add(void) {
    static const size_t ns[] = {0, 1, 7, 100, 70001, 300000};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k];
        float *a = falloc(n), *b = falloc(n), *c = falloc(n);
        frand(a, n);
        frand(b, n);
        add_state st = {a, b, n};
        float *y = run_variants(add_op, &st, n, sizeof(float), "add");
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != a[i] + b[i];
        CHECK(bad == 0, "add n=%zu: %d mismatches", n, bad);
        /* in place: y aliases a, then b */
        memcpy(c, a, n * sizeof *c);
        CHECK(bnn_add_f32(ctxs[2], c, n, b, n, c, n, n) == BNN_OK, "add in place (a)");
        CHECK(n == 0 || memcmp(c, y, n * sizeof *c) == 0, "add in place (a) differs");
        memcpy(c, b, n * sizeof *c);
        CHECK(bnn_add_f32(ctxs[1], a, n, c, n, c, n, n) == BNN_OK, "add in place (b)");
        CHECK(n == 0 || memcmp(c, y, n * sizeof *c) == 0, "add in place (b) differs");
        free(a);
        free(b);
        free(c);
        free(y);
    }
}

/* ---- concat ----------------------------------------------------------------------------- */
typedef struct {
    int32_t n_in;
    const float *const *x;
    const size_t *x_len;
    const int32_t *c;
    int64_t rows;
} concat_state;

static int concat_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const concat_state *st = s;
    return bnn_concat_f32(ctx, st->n_in, st->x, st->x_len, st->c, st->rows, y, y_len);
}

/* random channel counts (0 included: an empty input) and row counts, against the copy
 * loop written out; every path and thread count the same bits */
static void test_concat(void) {
    for (int t = 0; t < 40; t++) {
        int32_t n_in = check_rand_int(1, 6), cs[6], cy = 0;
        int64_t rows = t == 0 ? 0 : check_rand_int(1, t < 30 ? 50 : 5000);
        const float *xs[6];
        size_t lens[6];
        float *own[6];
        for (int k = 0; k < n_in; k++) {
            cs[k] = check_rand_int(0, 4) ? check_rand_int(1, t % 3 ? 70 : 9) : 0;
            cy += cs[k];
            lens[k] = (size_t)rows * cs[k];
            own[k] = falloc(lens[k]);
            frand(own[k], lens[k]);
            xs[k] = own[k];
        }
        size_t ny = (size_t)rows * cy;
        concat_state st = {n_in, xs, lens, cs, rows};
        float *y = run_variants(concat_op, &st, ny, sizeof(float), "concat");
        int bad = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int k = 0, off = 0; k < n_in; off += cs[k], k++)
                bad += memcmp(y + r * cy + off, xs[k] + r * cs[k], (size_t)cs[k] * sizeof(float)) != 0;
        CHECK(bad == 0, "concat %d inputs, %lld rows: %d mismatching runs", n_in, (long long)rows, bad);
        for (int k = 0; k < n_in; k++) free(own[k]);
        free(y);
    }
}

/* ---- special float values mixed into the random data ------------------------------------ */
static float special_float(void) {
    static const float vals[] = {0.0f, -0.0f, 1.0f, -1.0f, 1e-40f, -1e-40f, 3e38f, -3e38f, INFINITY, -INFINITY, NAN, 0.5f};
    return vals[check_rand_int(0, (int)(sizeof vals / sizeof vals[0]) - 1)];
}
static void frand_special(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = check_rand_int(0, 9) ? check_rand_float(-2.0f, 2.0f) : special_float();
}
static int same_float(float a, float b) { return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

/* ---- unpack on every path: each float's bits against the bit ------------------------------ */
typedef struct {
    const uint32_t *x;
    int32_t pixels, c;
} unpack_state;

static int unpack_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const unpack_state *st = s;
    return bnn_unpack_f32(ctx, st->x, (size_t)st->pixels * words(st->c), st->pixels, st->c, y, y_len);
}

static void test_unpack(void) {
    static const int32_t cs[] = {1, 3, 4, 8, 15, 31, 32, 33, 63, 64, 65, 96, 100, 257};
    static const int32_t ps[] = {0, 1, 5, 3000}; /* 3000 x 64+ channels: several threads */
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
            int32_t c = cs[ci], pixels = ps[pi];
            size_t nw = (size_t)pixels * words(c), n = (size_t)pixels * c;
            uint32_t *x = malloc((nw ? nw : 1) * sizeof *x);
            if (!x) abort();
            for (size_t i = 0; i < nw; i++) {
                x[i] = (uint32_t)check_rand_int(0, 0xFFFF) << 16 | (uint32_t)check_rand_int(0, 0xFFFF);
                if (c % 32 && i % words(c) == words(c) - 1) x[i] &= (1u << (c % 32)) - 1u; /* tail bits 0 */
            }
            unpack_state st = {x, pixels, c};
            float *y = run_variants(unpack_op, &st, n, sizeof(float), "unpack");
            int bad = 0;
            for (size_t p = 0; p < (size_t)pixels; p++)
                for (int32_t ch = 0; ch < c; ch++) {
                    float want = (x[p * words(c) + (size_t)ch / 32] >> (ch % 32)) & 1u ? -1.0f : 1.0f;
                    bad += memcmp(&y[p * (size_t)c + (size_t)ch], &want, sizeof want) != 0;
                }
            CHECK(bad == 0, "unpack c=%d pixels=%d: %d wrong", c, pixels, bad);
            free(x);
            free(y);
        }
    uint32_t xb[2] = {5, 1};
    float y[40];
    ffill(y, 40, SENT);
    CHECK(bnn_unpack_f32(NULL, xb, 2, 1, 33, y, 33) == BNN_E_NULL, "unpack ctx NULL");
    CHECK(bnn_unpack_f32(ctxs[0], NULL, 2, 1, 33, y, 33) == BNN_E_NULL, "unpack x NULL");
    CHECK(bnn_unpack_f32(ctxs[0], xb, 1, 1, 33, y, 33) == BNN_E_SIZE, "unpack x short");
    CHECK(bnn_unpack_f32(ctxs[0], xb, 2, 1, 33, y, 32) == BNN_E_SIZE, "unpack y short");
    CHECK(bnn_unpack_f32(ctxs[0], xb, 2, 1, 0, y, 33) == BNN_E_SHAPE, "unpack c 0");
    CHECK(bnn_unpack_f32(ctxs[0], xb, 2, -1, 33, y, 33) == BNN_E_SHAPE, "unpack pixels -1");
    CHECK(all_sent(y, 40), "unpack wrote on error");
}

/* ---- bit packing (plain and after an affine) on every path -------------------------------- */
typedef struct {
    const float *x, *scale, *bias;
    int32_t pixels, c;
    float thr;
    int affine;
} pack_state;

static int pack_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const pack_state *st = s;
    size_t n = (size_t)st->pixels * st->c;
    if (!st->affine) return bnn_bitpack_f32(ctx, st->x, n, st->pixels, st->c, st->thr, y, y_len);
    return bnn_bitpack_affine_f32(ctx, st->x, n, st->pixels, st->c, st->scale, st->bias, (size_t)st->c, st->thr, y,
                                  y_len);
}

/* bits of y that differ from the IEEE operations computed here, in scalar C */
static int pack_wrong_bits(const pack_state *st, const uint32_t *y) {
    const int32_t c = st->c;
    const size_t words = ((size_t)c + 31) / 32;
    int bad = 0;
    for (int32_t p = 0; p < st->pixels; p++)
        for (size_t wd = 0; wd < words; wd++)
            for (int bit = 0; bit < 32; bit++) {
                int32_t ch = (int32_t)(wd * 32) + bit;
                uint32_t want = 0;
                if (ch < c) {
                    float x = st->x[(size_t)p * c + ch];
                    float m = st->scale ? x * st->scale[ch] : x;
                    float t = st->bias ? m + st->bias[ch] : m;
                    want = t < st->thr;
                }
                bad += ((y[(size_t)p * words + wd] >> bit) & 1u) != want;
            }
    return bad;
}

/* Packs x on every path and thread count (mode 0: bnn_bitpack_f32; 1: with scale and bias;
 * 2: bias; 3: scale; 4: neither) and checks the bits against the IEEE operations. */
static void check_pack(const float *x, const float *sc, const float *bi, int mode, int32_t pixels, int32_t c,
                       float thr, const char *what) {
    const float *s_ = mode == 1 || mode == 3 ? sc : NULL, *b_ = mode == 1 || mode == 2 ? bi : NULL;
    pack_state st = {x, s_, b_, pixels, c, thr, mode != 0};
    uint32_t *y = run_variants(pack_op, &st, (size_t)pixels * (((size_t)c + 31) / 32), 4, what);
    int bad = pack_wrong_bits(&st, y);
    CHECK(bad == 0, "%s mode %d c=%d pixels=%d thr=%g: %d wrong bits", what, mode, c, pixels, (double)thr, bad);
    free(y);
}

/* Tiny values: inputs, products and sums near and below FLT_MIN (armv7 NEON flushes them to
 * zero; its kernel must notice and give the IEEE bits), and parameters or thresholds that
 * are denormal or infinite. */
static void test_bitpack_tiny(void) {
    static const int32_t cs[] = {4, 12, 16, 31, 32, 36, 64, 100};
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (int mode = 1; mode < 5; mode++)      /* scale+bias, bias, scale, neither */
            for (int odd = 0; odd < 4; odd++) { /* params normal; a denormal bias; an inf scale; thr denormal */
                int32_t c = cs[ci], pixels = 60;
                size_t n = (size_t)pixels * c;
                float *x = falloc(n), *sc = falloc(c), *bi = falloc(c);
                for (int32_t ch = 0; ch < c; ch++) {
                    sc[ch] = ldexpf(check_rand_float(0.5f, 2.0f), -check_rand_int(0, 30)) * (ch % 3 ? 1 : -1);
                    bi[ch] = ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(100, 126));
                }
                for (size_t i = 0; i < n; i++) {
                    int32_t ch = (int32_t)(i % (size_t)c);
                    switch (check_rand_int(0, 3)) {
                    case 0: x[i] = rand_tiny(); break;
                    case 1: /* x * scale close to -bias: a tiny sum */
                        x[i] = -bi[ch] / sc[ch]
                               * (1.0f + ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(10, 23)));
                        break;
                    case 2: x[i] = special_float(); break;
                    default: x[i] = check_rand_float(-2.0f, 2.0f);
                    }
                }
                if (odd == 1) bi[c / 2] = 1e-40f;
                if (odd == 2) sc[c - 1] = -INFINITY;
                check_pack(x, sc, bi, mode, pixels, c, odd == 3 ? -1e-41f : 0.0f, "bitpack_affine tiny");
                free(x);
                free(sc);
                free(bi);
            }
}

static void test_bitpack_paths(void) {
    static const int32_t cs[] = {1, 3, 4, 8, 12, 15, 16, 17, 24, 28, 31, 32, 33, 44, 48, 64, 65, 100, 256, 257};
    static const int32_t ps[] = {0, 1, 7, 300};
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++)
            for (int mode = 0; mode < 5; mode++) { /* plain; affine: scale+bias, bias, scale, neither */
                int32_t c = cs[ci], pixels = ps[pi];
                size_t n = (size_t)pixels * c;
                float *x = falloc(n), *sc = falloc(c), *bi = falloc(c);
                frand_special(x, n);
                frand(sc, c);
                frand(bi, c);
                for (int32_t i = 0; i < c; i++)
                    if (i % 7 == 3) sc[i] = -sc[i] * 4; /* a negative scale flips bits */
                float thr = mode == 0 && (ci & 1) ? check_rand_float(-1, 1) : 0.0f;
                if (pixels > 1) x[c] = thr; /* exactly at the threshold: +1 */
                check_pack(x, sc, bi, mode, pixels, c, thr, mode ? "bitpack_affine" : "bitpack");
                free(x);
                free(sc);
                free(bi);
            }
    /* bad arguments: error, output untouched */
    bnn_ctx *ctx = ctxs[1];
    float x[40], sc[20], bi[20];
    uint32_t out[8];
    frand(x, 40);
    frand(sc, 20);
    frand(bi, 20);
    memset(out, 0xAB, sizeof out);
    CHECK(bnn_bitpack_affine_f32(NULL, x, 40, 2, 20, sc, bi, 20, 0, out, 2) == BNN_E_NULL, "pack ctx NULL");
    CHECK(bnn_bitpack_affine_f32(ctx, NULL, 40, 2, 20, sc, bi, 20, 0, out, 2) == BNN_E_NULL, "pack x NULL");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 20, sc, bi, 20, 0, NULL, 2) == BNN_E_NULL, "pack out NULL");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 39, 2, 20, sc, bi, 20, 0, out, 2) == BNN_E_SIZE, "pack x short");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 20, sc, bi, 20, 0, out, 1) == BNN_E_SIZE, "pack out short");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 20, sc, bi, 19, 0, out, 2) == BNN_E_SIZE, "pack params short");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 20, NULL, bi, 19, 0, out, 2) == BNN_E_SIZE, "pack bias short");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, -1, 20, sc, bi, 20, 0, out, 2) == BNN_E_SHAPE, "pack pixels -1");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 0, sc, bi, 20, 0, out, 2) == BNN_E_SHAPE, "pack c 0");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 0x7fffffff, 0x7fffffff, sc, bi, 20, 0, out, 2) != BNN_OK, "pack huge");
    int untouched = 1;
    for (int i = 0; i < 8; i++) untouched &= out[i] == 0xABABABABu;
    CHECK(untouched, "bitpack_affine wrote on error");
    CHECK(bnn_bitpack_affine_f32(ctx, x, 40, 2, 20, NULL, NULL, 0, 0, out, 2) == BNN_OK, "pack no params, len 0");
    CHECK(out[2] == 0xABABABABu, "bitpack_affine wrote past out_len");
}

/* ---- elementwise chains ------------------------------------------------------------------- */
typedef struct {
    const float *x, *r;
    int32_t pixels, c, n_steps;
    const bnn_ew_step *steps;
} ew_state;

static int ew_op(bnn_ctx *ctx, const void *s, void *y, size_t y_len) {
    const ew_state *st = s;
    size_t n = (size_t)st->pixels * st->c;
    return bnn_eltwise_f32(ctx, st->x, n, st->r, st->r ? n : 0, st->pixels, st->c, st->steps, st->n_steps,
                           (size_t)st->c, y, y_len);
}

static float ew_ref(const ew_state *st, size_t i) {
    int32_t ch = (int32_t)(i % (size_t)st->c);
    int adds = 0;
    for (int32_t s = 0; s < st->n_steps; s++) adds += st->steps[s].op == BNN_EW_ADD;
    float t = st->r && !adds ? st->x[i] + st->r[i] : st->x[i];
    for (int32_t s = 0; s < st->n_steps; s++) {
        const bnn_ew_step *q = &st->steps[s];
        if (q->op == BNN_EW_PRELU) {
            float m = t * q->a[ch];
            t = t >= 0.0f ? t : m;
        } else if (q->op == BNN_EW_ADD) {
            t = t + st->r[i];
        } else if (q->op == BNN_EW_CLIP) {
            if (q->a && !isnan(t)) t = t > q->a[ch] ? t : q->a[ch];
            if (q->b && !isnan(t)) t = t < q->b[ch] ? t : q->b[ch];
        } else {
            float m = q->a ? t * q->a[ch] : t;
            t = q->b ? m + q->b[ch] : m;
        }
    }
    return t;
}

/* Runs the chain on every path and thread count (the same bits, NaN payloads aside) and
 * checks each float against ew_ref; returns y (caller frees). */
static float *check_ew(const ew_state *st, const char *what) {
    size_t n = (size_t)st->pixels * st->c;
    nan_equal = 1;
    float *y = run_variants(ew_op, st, n, sizeof(float), what);
    nan_equal = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!same_float(y[i], ew_ref(st, i)) && bad++ < 3)
            CHECK(0, "%s c=%d pixels=%d steps=%d at %zu: %.9g vs %.9g", what, st->c, st->pixels, st->n_steps, i,
                  (double)y[i], (double)ew_ref(st, i));
    CHECK(bad == 0, "%s c=%d pixels=%d steps=%d: %d mismatches", what, st->c, st->pixels, st->n_steps, bad);
    return y;
}

/* Tiny values (armv7 NEON flushes denormals to zero; its rows must notice and give the
 * IEEE bits): inputs, residuals and parameters near and below FLT_MIN, products and sums
 * that land there, zeros and denormal clip bounds; each step alone and all of them chained. */
static void test_eltwise_tiny(void) {
    static const int32_t cs[] = {4, 16, 20, 37, 64};
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (int kind = 0; kind < 9; kind++) { /* affine ab, a, b; prelu; clip lo, hi, both; add; a chain */
            int32_t c = cs[ci], pixels = 50;
            size_t n = (size_t)pixels * c;
            float *x = falloc(n), *r = falloc(n), *a = falloc(c), *b = falloc(c), *lo = falloc(c), *hi = falloc(c);
            for (int32_t ch = 0; ch < c; ch++) {
                a[ch] = ldexpf(check_rand_float(0.5f, 2.0f), -check_rand_int(0, 30)) * (ch % 3 ? 1 : -1);
                b[ch] = ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(100, 126));
                lo[ch] = ch % 4 == 0 ? 0.0f : ldexpf(check_rand_float(-2.0f, 0.0f), -check_rand_int(0, 140));
                hi[ch] = ch % 4 == 1 ? 0.0f : ldexpf(check_rand_float(0.0f, 2.0f), -check_rand_int(0, 140));
            }
            if (c > 8) {
                a[5] = 1e-40f;
                b[6] = -1e-40f;
                a[7] = INFINITY;
            }
            for (size_t i = 0; i < n; i++) {
                int32_t ch = (int32_t)(i % (size_t)c);
                r[i] = check_rand_float(-2.0f, 2.0f);
                switch (check_rand_int(0, 4)) {
                case 0: x[i] = rand_tiny(); break;
                case 1: /* x * a close to -b: a tiny sum */
                    x[i] = -b[ch] / a[ch] * (1.0f + ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(10, 23)));
                    break;
                case 2: /* x + r tiny */
                    x[i] = ldexpf(check_rand_float(1.0f, 2.0f), -check_rand_int(110, 126));
                    r[i] = -x[i] * (1.0f + ldexpf(check_rand_float(-1.0f, 1.0f), -check_rand_int(1, 23)));
                    break;
                case 3: x[i] = special_float(); break;
                default: x[i] = check_rand_float(-2.0f, 2.0f);
                }
            }
            bnn_ew_step chain[6] = {{BNN_EW_ADD, NULL, NULL}, {BNN_EW_AFFINE, a, b}, {BNN_EW_PRELU, a, NULL},
                                    {BNN_EW_CLIP, lo, hi},    {BNN_EW_AFFINE, NULL, b}, {BNN_EW_AFFINE, a, NULL}};
            bnn_ew_step one[8] = {{BNN_EW_AFFINE, a, b},   {BNN_EW_AFFINE, a, NULL}, {BNN_EW_AFFINE, NULL, b},
                                  {BNN_EW_PRELU, a, NULL}, {BNN_EW_CLIP, lo, NULL},  {BNN_EW_CLIP, NULL, hi},
                                  {BNN_EW_CLIP, lo, hi},   {BNN_EW_ADD, NULL, NULL}};
            int add = kind >= 7;
            ew_state st = {x, add ? r : NULL, pixels, c, kind == 8 ? 6 : 1, kind == 8 ? chain : &one[kind]};
            free(check_ew(&st, "eltwise tiny"));
            free(x);
            free(r);
            free(a);
            free(b);
            free(lo);
            free(hi);
        }
}

static void test_eltwise(void) {
    static const int32_t cs[] = {1, 3, 16, 17, 32, 64, 100, 256, 512, 5000};
    for (int iter = 0; iter < 80; iter++) {
        int32_t c = cs[iter % (int)(sizeof cs / sizeof cs[0])];
        int32_t pixels = iter % 9 == 0 ? 0 : check_rand_int(1, c > 1000 ? 5 : 200);
        size_t n = (size_t)pixels * c;
        int32_t n_steps = check_rand_int(0, 5);
        bnn_ew_step steps[5];
        float *params = falloc((size_t)c * 10);
        frand_special(params, (size_t)c * 10);
        int with_r = iter % 3 != 0, adds = 0;
        for (int32_t s = 0; s < n_steps; s++) {
            int kind = check_rand_int(0, with_r ? 8 : 7);
            float *a = params + (size_t)c * 2 * s, *b = a + c;
            steps[s].op = kind == 0 ? BNN_EW_PRELU : kind <= 3 ? BNN_EW_AFFINE : kind <= 7 ? BNN_EW_CLIP : BNN_EW_ADD;
            steps[s].a = kind == 0 || kind == 1 || kind == 2 || kind == 4 || kind == 5 ? a : NULL;
            steps[s].b = kind == 1 || kind == 3 || kind == 5 || kind == 6 ? b : NULL;
            adds += kind == 8;
        }
        float *x = falloc(n), *r = falloc(n), *z = falloc(n);
        frand_special(x, n);
        frand_special(r, n);
        ew_state st = {x, with_r ? r : NULL, pixels, c, n_steps, steps};
        float *y = check_ew(&st, "eltwise");
        int bad;
        /* in place: y is x, then y is r */
        memcpy(z, x, n * sizeof *z);
        CHECK(bnn_eltwise_f32(ctxs[2], z, n, st.r, st.r ? n : 0, pixels, c, steps, n_steps, (size_t)c, z, n) == BNN_OK,
              "eltwise in place (x)");
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += !same_float(z[i], y[i]);
        CHECK(bad == 0, "eltwise in place (x) differs");
        if (st.r && adds) {
            CHECK(bnn_eltwise_f32(ctxs[1], x, n, r, n, pixels, c, steps, n_steps, (size_t)c, r, n) == BNN_E_SHAPE,
                  "eltwise in place (r) with an add step is refused");
        } else if (st.r) {
            memcpy(z, r, n * sizeof *z);
            CHECK(bnn_eltwise_f32(ctxs[1], x, n, z, n, pixels, c, steps, n_steps, (size_t)c, z, n) == BNN_OK,
                  "eltwise in place (r)");
            bad = 0;
            for (size_t i = 0; i < n; i++) bad += !same_float(z[i], y[i]);
            CHECK(bad == 0, "eltwise in place (r) differs");
        }
        free(x);
        free(r);
        free(z);
        free(y);
        free(params);
    }
    /* bad arguments: error, output untouched */
    bnn_ctx *ctx = ctxs[1];
    float x[40], r[40], y[44], a[20], b[20];
    frand(x, 40);
    frand(r, 40);
    frand(a, 20);
    frand(b, 20);
    ffill(y, 44, SENT);
    bnn_ew_step st[2] = {{BNN_EW_AFFINE, a, b}, {BNN_EW_PRELU, a, NULL}};
    bnn_ew_step bad_op[1] = {{7, a, b}}, no_slope[1] = {{BNN_EW_PRELU, NULL, b}};
    CHECK(bnn_eltwise_f32(NULL, x, 40, r, 40, 2, 20, st, 2, 20, y, 40) == BNN_E_NULL, "ew ctx NULL");
    CHECK(bnn_eltwise_f32(ctx, NULL, 40, r, 40, 2, 20, st, 2, 20, y, 40) == BNN_E_NULL, "ew x NULL");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, st, 2, 20, NULL, 40) == BNN_E_NULL, "ew y NULL");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, NULL, 2, 20, y, 40) == BNN_E_NULL, "ew steps NULL");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, no_slope, 1, 20, y, 40) == BNN_E_NULL, "ew prelu without slope");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, bad_op, 1, 20, y, 40) == BNN_E_SHAPE, "ew bad op");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, st, -1, 20, y, 40) == BNN_E_SHAPE, "ew n_steps -1");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, st, BNN_EW_MAX_STEPS + 1, 20, y, 40) == BNN_E_SHAPE, "ew n_steps");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, -1, 20, st, 2, 20, y, 40) == BNN_E_SHAPE, "ew pixels -1");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 0, st, 2, 20, y, 40) == BNN_E_SHAPE, "ew c 0");
    CHECK(bnn_eltwise_f32(ctx, x, 39, r, 40, 2, 20, st, 2, 20, y, 40) == BNN_E_SIZE, "ew x short");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 39, 2, 20, st, 2, 20, y, 40) == BNN_E_SIZE, "ew r short");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, st, 2, 20, y, 39) == BNN_E_SIZE, "ew y short");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 2, 20, st, 2, 19, y, 40) == BNN_E_SIZE, "ew params short");
    CHECK(bnn_eltwise_f32(ctx, x, 40, r, 40, 0x7fffffff, 0x7fffffff, st, 2, 20, y, 40) != BNN_OK, "ew huge");
    bnn_ew_step add_step[1] = {{BNN_EW_ADD, NULL, NULL}};
    CHECK(bnn_eltwise_f32(ctx, x, 40, NULL, 0, 2, 20, add_step, 1, 20, y, 40) == BNN_E_NULL, "ew add without r");
    CHECK(all_sent(y, 44), "eltwise wrote on error");
    CHECK(bnn_eltwise_f32(ctx, x, 40, NULL, 0, 2, 20, NULL, 0, 0, y, 40) == BNN_OK, "ew copy");
    CHECK(memcmp(x, y, sizeof x) == 0 && all_sent(y + 40, 4), "ew copy: y = x, nothing past y_len");
}

/* ---- bad arguments ------------------------------------------------------------------------ */
static void test_bad_args(void) {
    bnn_ctx *ctx = ctxs[1];
    bnn_window w = {1, 6, 5, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1}; /* out 6x5x4 */
    size_t x_len = 6 * 5 * 3, w_len = 4 * 3 * 3 * 3, y_len = 6 * 5 * 4, k_len = 6 * 5;
    float x[6 * 5 * 3], wt[4 * 3 * 3 * 3], bias[4], y[6 * 5 * 4 + 8];
    frand(x, x_len);
    frand(wt, w_len);
    frand(bias, 4);

    /* fconv2d create */
    bnn_fconv2d *L = (bnn_fconv2d *)&w; /* must be reset to NULL on failure */
    CHECK(bnn_fconv2d_create(NULL, &w, 1, wt, w_len, bias, 4) == BNN_E_NULL, "create out NULL");
    CHECK(bnn_fconv2d_create(&L, NULL, 1, wt, w_len, bias, 4) == BNN_E_NULL && L == NULL, "create win NULL");
    CHECK(bnn_fconv2d_create(&L, &w, 1, NULL, w_len, bias, 4) == BNN_E_NULL && L == NULL, "create weights NULL");
    CHECK(bnn_fconv2d_create(&L, &w, 1, wt, w_len - 1, bias, 4) == BNN_E_SIZE && L == NULL, "create weights short");
    CHECK(bnn_fconv2d_create(&L, &w, 1, wt, w_len, bias, 3) == BNN_E_SIZE && L == NULL, "create bias short");
    bnn_window bw[8];
    for (int i = 0; i < 8; i++) bw[i] = w;
    bw[0].kernel_h = 0;
    bw[1].stride_w = 1 << 17; /* conv: 1..8, pools: 1..65536 */
    bw[2].pad_left = 3;        /* pad >= kernel */
    bw[3].out_c = 0;           /* conv needs out_c */
    bw[4].in_h = 0;
    bw[5].in_w = 1;            /* 1 + 1 + 0 < 3 */
    bw[5].pad_right = 0;
    bw[6].pad_top = -1;
    bw[7].kernel_w = 16;
    for (int i = 0; i < 8; i++)
        CHECK(bnn_fconv2d_create(&L, &bw[i], 1, wt, w_len, bias, 4) == BNN_E_SHAPE && L == NULL, "create bad shape %d", i);
    /* groups that do not divide both channel counts (in 3, out 4) */
    CHECK(bnn_fconv2d_create(&L, &w, 0, wt, w_len, bias, 4) == BNN_E_SHAPE && L == NULL, "create groups 0");
    CHECK(bnn_fconv2d_create(&L, &w, -3, wt, w_len, bias, 4) == BNN_E_SHAPE && L == NULL, "create groups -3");
    CHECK(bnn_fconv2d_create(&L, &w, 2, wt, w_len, bias, 4) == BNN_E_SHAPE && L == NULL, "create groups 2");
    CHECK(bnn_fconv2d_create(&L, &w, 3, wt, w_len, bias, 4) == BNN_E_SHAPE && L == NULL, "create groups 3");
    /* huge but in-range geometry whose weights could never fit */
    bnn_window huge = {1, 1, 1, 1 << 20, 1 << 20, 15, 15, 1, 1, 7, 7, 7, 7};
    int rc = bnn_fconv2d_create(&L, &huge, 1, wt, w_len, NULL, 0);
    CHECK((rc == BNN_E_SHAPE || rc == BNN_E_SIZE) && L == NULL, "create huge rc %d", rc);

    /* fconv2d run */
    CHECK(bnn_fconv2d_create(&L, &w, 1, wt, w_len, NULL, 0) == BNN_OK && L, "create ok without bias");
    ffill(y, y_len + 8, SENT);
    CHECK(bnn_fconv2d_run(NULL, L, x, x_len, y, y_len) == BNN_E_NULL, "run ctx NULL");
    CHECK(bnn_fconv2d_run(ctx, NULL, x, x_len, y, y_len) == BNN_E_NULL, "run layer NULL");
    CHECK(bnn_fconv2d_run(ctx, L, NULL, x_len, y, y_len) == BNN_E_NULL, "run x NULL");
    CHECK(bnn_fconv2d_run(ctx, L, x, x_len, NULL, y_len) == BNN_E_NULL, "run y NULL");
    CHECK(bnn_fconv2d_run(ctx, L, x, x_len - 1, y, y_len) == BNN_E_SIZE, "run x short");
    CHECK(bnn_fconv2d_run(ctx, L, x, x_len, y, y_len - 1) == BNN_E_SIZE, "run y short");
    CHECK(all_sent(y, y_len + 8), "fconv2d wrote on error");
    CHECK(bnn_fconv2d_run(ctx, L, x, x_len, y, y_len) == BNN_OK, "run ok");
    CHECK(all_sent(y + y_len, 8), "fconv2d wrote past y_len");
    bnn_fconv2d_destroy(L);
    bnn_fconv2d_destroy(NULL);
    CHECK(bnn_fconv2d_input_len(NULL) == 0 && bnn_fconv2d_output_len(NULL) == 0, "len of NULL layer");

    /* pools and xnor_scale: out 6x5 pixels of 3 channels (1 word / 1 scale) */
    uint32_t xb[6 * 5], yb[6 * 5 + 8];
    for (int i = 0; i < 30; i++) xb[i] = (uint32_t)check_rand_u64() & 7u;
    size_t py_len = 6 * 5 * 3;
    for (int op = 0; op < 4; op++) {
        const char *nm = op == 0 ? "maxpool" : op == 1 ? "avgpool" : op == 2 ? "xnor_scale" : "bmaxpool";
        size_t need = op == 2 ? k_len : py_len;
#define CALL(c, wp, xp, xl, yp, yl)                                              \
    (op == 0   ? bnn_maxpool2d(c, wp, xp, xl, yp, yl)                            \
     : op == 1 ? bnn_avgpool2d(c, wp, 0, xp, xl, yp, yl)                         \
               : bnn_xnor_scale(c, wp, xp, xl, yp, yl))
        if (op == 3) {
            for (int i = 0; i < 38; i++) yb[i] = SENT_U;
            CHECK(bnn_bmaxpool2d(NULL, &w, xb, 30, yb, 30) == BNN_E_NULL, "bmaxpool ctx NULL");
            CHECK(bnn_bmaxpool2d(ctx, NULL, xb, 30, yb, 30) == BNN_E_NULL, "bmaxpool win NULL");
            CHECK(bnn_bmaxpool2d(ctx, &w, NULL, 30, yb, 30) == BNN_E_NULL, "bmaxpool x NULL");
            CHECK(bnn_bmaxpool2d(ctx, &w, xb, 30, NULL, 30) == BNN_E_NULL, "bmaxpool y NULL");
            CHECK(bnn_bmaxpool2d(ctx, &w, xb, 29, yb, 30) == BNN_E_SIZE, "bmaxpool x short");
            CHECK(bnn_bmaxpool2d(ctx, &w, xb, 30, yb, 29) == BNN_E_SIZE, "bmaxpool y short");
            for (int i = 0; i < 8; i++)
                if (i != 3) CHECK(bnn_bmaxpool2d(ctx, &bw[i], xb, 30, yb, 30) == BNN_E_SHAPE, "bmaxpool bad shape %d", i);
            int untouched = 1;
            for (int i = 0; i < 38; i++) untouched &= yb[i] == SENT_U;
            CHECK(untouched, "bmaxpool wrote on error");
            CHECK(bnn_bmaxpool2d(ctx, &w, xb, 30, yb, 30) == BNN_OK, "bmaxpool ok");
            for (int i = 30; i < 38; i++) untouched &= yb[i] == SENT_U;
            CHECK(untouched, "bmaxpool wrote past y_len");
            continue;
        }
        ffill(y, need + 8, SENT);
        CHECK(CALL(NULL, &w, x, x_len, y, need) == BNN_E_NULL, "%s ctx NULL", nm);
        CHECK(CALL(ctx, NULL, x, x_len, y, need) == BNN_E_NULL, "%s win NULL", nm);
        CHECK(CALL(ctx, &w, NULL, x_len, y, need) == BNN_E_NULL, "%s x NULL", nm);
        CHECK(CALL(ctx, &w, x, x_len, NULL, need) == BNN_E_NULL, "%s y NULL", nm);
        CHECK(CALL(ctx, &w, x, x_len - 1, y, need) == BNN_E_SIZE, "%s x short", nm);
        CHECK(CALL(ctx, &w, x, x_len, y, need - 1) == BNN_E_SIZE, "%s y short", nm);
        for (int i = 0; i < 8; i++)
            if (i != 3) CHECK(CALL(ctx, &bw[i], x, x_len, y, need) == BNN_E_SHAPE, "%s bad shape %d", nm, i);
        CHECK(all_sent(y, need + 8), "%s wrote on error", nm);
        CHECK(CALL(ctx, &bw[3], x, x_len, y, need) == BNN_OK, "%s ignores out_c", nm);
        CHECK(all_sent(y + need, 8), "%s wrote past y_len", nm);
#undef CALL
    }
    ffill(y, py_len, SENT);
    CHECK(bnn_avgpool2d(ctx, &w, 2, x, x_len, y, py_len) == BNN_E_SHAPE, "avgpool count_include_pad 2");
    CHECK(bnn_avgpool2d(ctx, &w, -1, x, x_len, y, py_len) == BNN_E_SHAPE, "avgpool count_include_pad -1");
    CHECK(bnn_avgpool2d(NULL, &w, 2, x, x_len, y, py_len) == BNN_E_NULL, "avgpool NULL before bad flag");
    CHECK(all_sent(y, py_len), "avgpool wrote on error");

    /* add */
    float a[10], b[10], s[12];
    frand(a, 10);
    frand(b, 10);
    ffill(s, 12, SENT);
    CHECK(bnn_add_f32(NULL, a, 10, b, 10, s, 10, 10) == BNN_E_NULL, "add ctx NULL");
    CHECK(bnn_add_f32(ctx, NULL, 10, b, 10, s, 10, 10) == BNN_E_NULL, "add a NULL");
    CHECK(bnn_add_f32(ctx, a, 10, NULL, 10, s, 10, 10) == BNN_E_NULL, "add b NULL");
    CHECK(bnn_add_f32(ctx, a, 10, b, 10, NULL, 10, 10) == BNN_E_NULL, "add y NULL");
    CHECK(bnn_add_f32(ctx, a, 9, b, 10, s, 10, 10) == BNN_E_SIZE, "add a short");
    CHECK(bnn_add_f32(ctx, a, 10, b, 9, s, 10, 10) == BNN_E_SIZE, "add b short");
    CHECK(bnn_add_f32(ctx, a, 10, b, 10, s, 9, 10) == BNN_E_SIZE, "add y short");
    CHECK(all_sent(s, 12), "add wrote on error");
    CHECK(bnn_add_f32(ctx, a, 10, b, 10, s, 12, 10) == BNN_OK && all_sent(s + 10, 2), "add wrote past n");

    /* concat: two inputs of 5 rows x 2 / 3 channels -> 5 x 5 */
    float cy[27];
    const float *cx[2] = {a, b}, *cx_null[2] = {a, NULL};
    size_t cl[2] = {10, 15}, cl_short[2] = {10, 14};
    int32_t cc[2] = {2, 3}, cc_neg[2] = {2, -1};
    ffill(cy, 27, SENT);
    float b15[15];
    frand(b15, 15);
    cx[1] = b15;
    CHECK(bnn_concat_f32(NULL, 2, cx, cl, cc, 5, cy, 25) == BNN_E_NULL, "concat ctx NULL");
    CHECK(bnn_concat_f32(ctx, 2, NULL, cl, cc, 5, cy, 25) == BNN_E_NULL, "concat x NULL");
    CHECK(bnn_concat_f32(ctx, 2, cx_null, cl, cc, 5, cy, 25) == BNN_E_NULL, "concat x[1] NULL");
    CHECK(bnn_concat_f32(ctx, 2, cx, NULL, cc, 5, cy, 25) == BNN_E_NULL, "concat x_len NULL");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, NULL, 5, cy, 25) == BNN_E_NULL, "concat c NULL");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, cc, 5, NULL, 25) == BNN_E_NULL, "concat y NULL");
    CHECK(bnn_concat_f32(ctx, 0, cx, cl, cc, 5, cy, 25) == BNN_E_SHAPE, "concat no input");
    CHECK(bnn_concat_f32(ctx, BNN_CONCAT_MAX_INPUTS + 1, cx, cl, cc, 5, cy, 25) == BNN_E_SHAPE,
          "concat too many inputs");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, cc_neg, 5, cy, 25) == BNN_E_SHAPE, "concat negative c");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, cc, -1, cy, 25) == BNN_E_SHAPE, "concat negative rows");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl_short, cc, 5, cy, 25) == BNN_E_SIZE, "concat x[1] short");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, cc, 5, cy, 24) == BNN_E_SIZE, "concat y short");
    const float *cx_over[2] = {a, cy + 20};
    CHECK(bnn_concat_f32(ctx, 2, cx_over, cl, cc, 5, cy, 25) == BNN_E_SHAPE, "concat y overlaps an input");
    CHECK(all_sent(cy, 27), "concat wrote on error");
    CHECK(bnn_concat_f32(ctx, 2, cx, cl, cc, 5, cy, 27) == BNN_OK && all_sent(cy + 25, 2), "concat wrote past y");
}

int main(void) {
    check_seed(20240611);
    for (int t = 0; t < 3; t++) {
        int rc = bnn_ctx_create(&ctxs[t], t + 1);
        CHECK(rc == BNN_OK, "ctx create %d threads: %d", t + 1, rc);
        if (rc != BNN_OK) return check_summary("test_float_ops");
    }
    printf("paths:");
    for (int p = BNN_PATH_PORTABLE; p <= BNN_PATH_AVX512; p++)
        if (bnn_path_available(p)) printf(" %s", bnn_path_name(p));
    printf("\n");
    test_bad_args();
    test_add();
    test_concat();
    test_bitpack_paths();
    test_bitpack_tiny();
    test_unpack();
    test_eltwise();
    test_eltwise_tiny();
    test_pools();
    test_fconv();
    test_fconv_groups();
    for (int t = 0; t < 3; t++) bnn_ctx_destroy(ctxs[t]);
    return check_summary("test_float_ops");
}
