/* Binary convolution and bit packing: every code path and thread count against a naive
 * +-1 convolution written here (zero padding contributes 0, one padding +1), all output
 * modes, and bad input (error codes, outputs untouched). */
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include "../../csrc/neon/include/bnn.h"
#include "check.h"

const char *bnn_bconv2d_kernel_name(const bnn_ctx *ctx); /* internal (core/internal.h) */

static int32_t naive_dot(const float *x, const float *w, const bnn_window *win, int pad_one, int n, int oy, int ox,
                         int o) {
    int32_t d = 0;
    for (int ky = 0; ky < win->kernel_h; ky++)
        for (int kx = 0; kx < win->kernel_w; kx++) {
            int iy = oy * win->stride_h + ky - win->pad_top, ix = ox * win->stride_w + kx - win->pad_left;
            int inside = iy >= 0 && iy < win->in_h && ix >= 0 && ix < win->in_w;
            for (int c = 0; c < win->in_c; c++) {
                float wv = w[(((size_t)o * win->kernel_h + ky) * win->kernel_w + kx) * win->in_c + c];
                float xv = inside ? x[(((size_t)n * win->in_h + iy) * win->in_w + ix) * win->in_c + c]
                                  : (pad_one ? 1.0f : 0.0f);
                d += (int32_t)(xv * wv);
            }
        }
    return d;
}

static float *rand_pm1(size_t n) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (check_rand_u64() & 1) ? 1.0f : -1.0f;
    return v;
}

static void test_bitpack(bnn_ctx *ctx) {
    const int cs[] = {1, 3, 17, 31, 32, 33, 40, 65, 130};
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        int c = cs[t], pixels = 7;
        size_t words = bnn_packed_words(c);
        float *x = malloc((size_t)pixels * c * sizeof(float));
        int8_t *xi = malloc((size_t)pixels * c);
        uint8_t *xu = malloc((size_t)pixels * c);
        for (int i = 0; i < pixels * c; i++) {
            x[i] = check_rand_float(-2, 2);
            if (i % 11 == 0) x[i] = 0.0f; /* 0 -> +1 */
            xi[i] = (int8_t)check_rand_int(-128, 127);
            xu[i] = (uint8_t)check_rand_int(0, 255);
        }
        uint32_t *b = calloc((size_t)pixels * words, 4), *bi = calloc((size_t)pixels * words, 4),
                 *bu = calloc((size_t)pixels * words, 4);
        CHECK(bnn_bitpack_f32(ctx, x, (size_t)pixels * c, pixels, c, 0.0f, b, pixels * words) == BNN_OK, "f32");
        CHECK(bnn_bitpack_i8(ctx, xi, (size_t)pixels * c, pixels, c, 0, bi, pixels * words) == BNN_OK, "i8");
        CHECK(bnn_bitpack_u8(ctx, xu, (size_t)pixels * c, pixels, c, 128, bu, pixels * words) == BNN_OK, "u8");
        int bad = 0;
        for (int p = 0; p < pixels; p++)
            for (int wd = 0; wd < (int)words; wd++)
                for (int bit = 0; bit < 32; bit++) {
                    int ch = wd * 32 + bit;
                    uint32_t got = (b[p * words + wd] >> bit) & 1, goti = (bi[p * words + wd] >> bit) & 1,
                             gotu = (bu[p * words + wd] >> bit) & 1;
                    uint32_t want = ch < c ? x[p * c + ch] < 0 : 0, wanti = ch < c ? xi[p * c + ch] < 0 : 0,
                             wantu = ch < c ? xu[p * c + ch] < 128 : 0;
                    bad += got != want || goti != wanti || gotu != wantu;
                }
        CHECK(bad == 0, "bitpack c=%d: %d wrong bits", c, bad);
        float *u = malloc((size_t)pixels * c * sizeof(float));
        CHECK(bnn_unpack_f32(ctx, b, pixels * words, pixels, c, u, (size_t)pixels * c) == BNN_OK, "unpack");
        bad = 0;
        for (int i = 0; i < pixels * c; i++) bad += u[i] != (x[i] < 0 ? -1.0f : 1.0f);
        CHECK(bad == 0, "unpack c=%d", c);
        /* short output buffer: error, untouched */
        uint32_t sentinel[64];
        memset(sentinel, 0xAB, sizeof sentinel);
        CHECK(bnn_bitpack_f32(ctx, x, (size_t)pixels * c, pixels, c, 0.0f, sentinel, pixels * words - 1) == BNN_E_SIZE,
              "short out");
        CHECK(sentinel[0] == 0xABABABABu, "untouched");
        CHECK(bnn_bitpack_f32(ctx, x, (size_t)pixels * c - 1, pixels, c, 0.0f, b, pixels * words) == BNN_E_SIZE,
              "short in");
        CHECK(bnn_bitpack_f32(ctx, NULL, 0, pixels, c, 0.0f, b, pixels * words) == BNN_E_NULL, "null");
        CHECK(bnn_bitpack_f32(ctx, x, 0, pixels, 0, 0.0f, b, pixels * words) == BNN_E_SHAPE, "c=0");
        free(x); free(xi); free(xu); free(b); free(bi); free(bu); free(u);
    }
}

/* run_case's tiny: 0 normal float parameters; 1 mul, add and K near FLT_MIN, so that d * mul * K + add
 * lands near and below it (armv7 NEON flushes such values to zero; its transform must give
 * the IEEE bits), adds that cancel d * mul, K that is 0, denormal or infinite; 2 normal
 * parameters but a denormal mul and a denormal add */
typedef struct { int n, h, w, c, oc, k, s, pad_same, asym; } conv_case;

static void run_case(bnn_ctx **ctxs, int nctx, const conv_case *cc, int tiny) {
    bnn_window win = {cc->n, cc->h, cc->w, cc->c, cc->oc, cc->k, cc->k, cc->s, cc->s, 0, 0, 0, 0};
    if (cc->pad_same) {
        int tot = cc->k - 1;
        win.pad_top = win.pad_left = tot / 2;
        win.pad_bottom = win.pad_right = tot - tot / 2;
        if (cc->asym) { win.pad_top = tot; win.pad_bottom = 0; win.pad_left = 0; win.pad_right = tot; }
    }
    int32_t oh, ow;
    if (bnn_window_out(&win, &oh, &ow) != BNN_OK) return;
    size_t words = bnn_packed_words(cc->c), owords = bnn_packed_words(cc->oc);
    size_t xn = (size_t)cc->n * cc->h * cc->w * cc->c, wn = (size_t)cc->oc * cc->k * cc->k * cc->c;
    size_t pix = (size_t)cc->n * oh * ow;
    float *x = rand_pm1(xn), *w = rand_pm1(wn);
    uint32_t *xb = malloc(xn / cc->c * words * 4), *wb = malloc(wn / cc->c * words * 4);
    bnn_bitpack_f32(ctxs[0], x, xn, (int32_t)(xn / cc->c), cc->c, 0.0f, xb, xn / cc->c * words);
    bnn_bitpack_f32(ctxs[0], w, wn, (int32_t)(wn / cc->c), cc->c, 0.0f, wb, wn / cc->c * words);
    float *mul = malloc(cc->oc * sizeof(float)), *add = malloc(cc->oc * sizeof(float)), *ks = malloc(pix * 4);
    int32_t *thr = malloc(cc->oc * 4);
    uint8_t *flip = malloc(cc->oc);
    for (int o = 0; o < cc->oc; o++) {
        mul[o] = check_rand_float(-1, 1);
        add[o] = check_rand_float(-3, 3);
        thr[o] = check_rand_int(-6, 6);
        flip[o] = (uint8_t)(check_rand_u64() & 1);
    }
    for (size_t i = 0; i < pix; i++) ks[i] = check_rand_float(0.1f, 2.0f);
    if (tiny == 1) {
        for (int o = 0; o < cc->oc; o++) {
            mul[o] = ldexpf(check_rand_float(0.5f, 2.0f), -check_rand_int(118, 126)) * (o % 3 ? 1 : -1);
            int kind = o % 4;
            add[o] = kind == 0   ? 0.0f
                     : kind == 1 ? ldexpf(check_rand_float(0.5f, 2.0f), -check_rand_int(100, 126)) * (o % 5 ? 1 : -1)
                     : kind == 2 ? -(float)check_rand_int(-4, 4) * mul[o]
                                 : check_rand_float(-3, 3);
        }
        for (size_t i = 0; i < pix; i++) {
            int kind = check_rand_int(0, 9);
            ks[i] = kind == 0 ? 0.0f : kind == 1 ? 1e-40f : kind == 2 ? INFINITY
                                                           : ldexpf(check_rand_float(0.5f, 2.0f), -check_rand_int(0, 8));
        }
    }
    if (tiny == 2) { /* among normal parameters (so that no other lane of a chunk is small) */
        mul[cc->oc / 2] = -1e-40f; /* d * mul denormal, or 0 when flushed */
        add[cc->oc / 2] = 0.0f;
        mul[cc->oc - 1] = 0x1p-120f; /* d * mul + add changed by the denormal add */
        add[cc->oc - 1] = 1e-41f;
    }
    float *lo = malloc(cc->oc * 4), *sc = malloc(cc->oc * 4), *bi = malloc(cc->oc * 4), *sl = malloc(cc->oc * 4);
    float *res = malloc(pix * cc->oc * 4);
    for (int o = 0; o < cc->oc; o++) {
        lo[o] = check_rand_float(-2, 2);
        sc[o] = check_rand_float(-2, 2);
        bi[o] = check_rand_float(-2, 2);
        sl[o] = check_rand_float(-1, 1);
    }
    for (size_t i = 0; i < pix * cc->oc; i++) res[i] = check_rand_float(-5, 5);
    for (int pad_one = 0; pad_one < 2; pad_one++) {
        int32_t *want = malloc(pix * cc->oc * 4);
        for (int n = 0; n < cc->n; n++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    for (int o = 0; o < cc->oc; o++)
                        want[(((size_t)n * oh + oy) * ow + ox) * cc->oc + o] = naive_dot(x, w, &win, pad_one, n, oy, ox, o);
        bnn_output o_int = {BNN_OUT_INT32, NULL, NULL, NULL, NULL, NULL, 0};
        bnn_output o_flt = {BNN_OUT_FLOAT, mul, add, NULL, NULL, NULL, 0};
        bnn_output o_bit = {BNN_OUT_BITS, NULL, NULL, thr, flip, NULL, 0};
        bnn_bconv2d *li, *lf, *lb;
        int pm = pad_one ? BNN_PAD_ONE : BNN_PAD_ZERO;
        CHECK(bnn_bconv2d_create(&li, &win, pm, wb, wn / cc->c * words, &o_int) == BNN_OK, "create");
        CHECK(bnn_bconv2d_create(&lf, &win, pm, wb, wn / cc->c * words, &o_flt) == BNN_OK, "create");
        CHECK(bnn_bconv2d_create(&lb, &win, pm, wb, wn / cc->c * words, &o_bit) == BNN_OK, "create");
        int32_t *yi = malloc(pix * cc->oc * 4);
        float *yf = malloc(pix * cc->oc * 4), *yk = malloc(pix * cc->oc * 4);
        uint32_t *yb = malloc(pix * owords * 4);
        for (int ci = 0; ci < nctx; ci++) {
            bnn_ctx *ctx = ctxs[ci];
            CHECK(bnn_bconv2d_run(ctx, li, xb, xn / cc->c * words, NULL, 0, yi, pix * cc->oc) == BNN_OK, "run");
            CHECK(bnn_bconv2d_run(ctx, lf, xb, xn / cc->c * words, NULL, 0, yf, pix * cc->oc) == BNN_OK, "run");
            CHECK(bnn_bconv2d_run(ctx, lf, xb, xn / cc->c * words, ks, pix, yk, pix * cc->oc) == BNN_OK, "run");
            CHECK(bnn_bconv2d_run(ctx, lb, xb, xn / cc->c * words, NULL, 0, yb, pix * owords) == BNN_OK, "run");
            int bad_i = 0, bad_f = 0, bad_k = 0, bad_b = 0;
            for (size_t p = 0; p < pix; p++) {
                for (int o = 0; o < cc->oc; o++) {
                    int32_t d = want[p * cc->oc + o];
                    bad_i += yi[p * cc->oc + o] != d;
                    float v = (float)d * mul[o];
                    bad_f += memcmp(&yf[p * cc->oc + o], &(float){v + add[o]}, 4) != 0;
                    float vk = v * ks[p];
                    bad_k += memcmp(&yk[p * cc->oc + o], &(float){vk + add[o]}, 4) != 0;
                    uint32_t bit = (yb[p * owords + o / 32] >> (o % 32)) & 1;
                    bad_b += bit != (uint32_t)(flip[o] ? d > thr[o] : d < thr[o]);
                }
                for (int o = cc->oc; o < (int)owords * 32; o++) bad_b += (yb[p * owords + o / 32] >> (o % 32)) & 1;
            }
            CHECK(bad_i + bad_f + bad_k + bad_b == 0,
                  "ctx %d (path %s, %d threads) n%d %dx%dx%d->%d k%d s%d same%d asym%d pad_one%d: wrong int %d float %d "
                  "k %d bits %d",
                  ci, bnn_path_name(bnn_ctx_path(ctx)), bnn_ctx_num_threads(ctx), cc->n, cc->h, cc->w, cc->c, cc->oc,
                  cc->k, cc->s, cc->pad_same, cc->asym, pad_one, bad_i, bad_f, bad_k, bad_b);
        }
        /* output steps (ReLU-like clip, BN affine, the residual add, PReLU) in the same pass:
         * the same bits as the float output followed by bnn_eltwise_f32 */
        bnn_ew_step steps[4] = {{BNN_EW_CLIP, lo, NULL}, {BNN_EW_AFFINE, sc, bi}, {BNN_EW_ADD, NULL, NULL},
                                {BNN_EW_PRELU, sl, NULL}};
        bnn_output o_st = {BNN_OUT_FLOAT, mul, add, NULL, NULL, steps, 4};
        bnn_bconv2d *ls;
        CHECK(bnn_bconv2d_create(&ls, &win, pm, wb, wn / cc->c * words, &o_st) == BNN_OK, "create with steps");
        float *ref = malloc(pix * cc->oc * 4), *ys = malloc(pix * cc->oc * 4);
        CHECK(bnn_bconv2d_run(ctxs[0], lf, xb, xn / cc->c * words, ks, pix, ref, pix * cc->oc) == BNN_OK, "run");
        CHECK(bnn_eltwise_f32(ctxs[0], ref, pix * cc->oc, res, pix * cc->oc, (int32_t)pix, cc->oc, steps, 4,
                              (size_t)cc->oc, ref, pix * cc->oc) == BNN_OK, "eltwise");
        for (int ci = 0; ci < nctx; ci++) {
            CHECK(bnn_bconv2d_run_residual(ctxs[ci], ls, xb, xn / cc->c * words, ks, pix, res, pix * cc->oc, ys,
                                           pix * cc->oc) == BNN_OK, "run with steps");
            CHECK(memcmp(ys, ref, pix * cc->oc * 4) == 0, "ctx %d (path %s, %d threads) n%d %dx%dx%d->%d k%d s%d: "
                  "output steps differ from bconv2d + eltwise", ci, bnn_path_name(bnn_ctx_path(ctxs[ci])),
                  bnn_ctx_num_threads(ctxs[ci]), cc->n, cc->h, cc->w, cc->c, cc->oc, cc->k, cc->s);
        }
        CHECK(bnn_bconv2d_run(ctxs[0], ls, xb, xn / cc->c * words, ks, pix, ys, pix * cc->oc) == BNN_E_NULL,
              "steps with an add need the residual");
        CHECK(bnn_bconv2d_run_residual(ctxs[0], lf, xb, xn / cc->c * words, ks, pix, res, pix * cc->oc, ys,
                                       pix * cc->oc) == BNN_E_SHAPE, "a residual without an add step");
        CHECK(bnn_bconv2d_run_residual(ctxs[0], ls, xb, xn / cc->c * words, ks, pix, res, pix * cc->oc - 1, ys,
                                       pix * cc->oc) == BNN_E_SIZE, "short residual");
        bnn_bconv2d_destroy(ls);
        free(ref); free(ys);
        bnn_bconv2d_destroy(li); bnn_bconv2d_destroy(lf); bnn_bconv2d_destroy(lb);
        free(yi); free(yf); free(yk); free(yb); free(want);
    }
    free(x); free(w); free(xb); free(wb); free(mul); free(add); free(ks); free(thr); free(flip);
    free(lo); free(sc); free(bi); free(sl); free(res);
}

static void test_bad_input(bnn_ctx *ctx) {
    bnn_window win = {1, 8, 8, 40, 20, 3, 3, 1, 1, 1, 1, 1, 1};
    uint32_t w[20 * 9 * 2] = {0}, x[8 * 8 * 2] = {0};
    int32_t y[8 * 8 * 20];
    bnn_output oi = {BNN_OUT_INT32, NULL, NULL, NULL, NULL, NULL, 0};
    bnn_bconv2d *L = NULL;
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2 - 1, &oi) == BNN_E_SIZE && L == NULL, "short w");
    CHECK(bnn_bconv2d_create(&L, &win, 7, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "pad mode");
    CHECK(bnn_bconv2d_create(NULL, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_NULL, "null out");
    bnn_output ob = {BNN_OUT_BITS, NULL, NULL, NULL, NULL, NULL, 0};
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &ob) == BNN_E_NULL, "bits without thresholds");
    float par[20] = {0};
    bnn_ew_step st_ok[1] = {{BNN_EW_CLIP, par, NULL}}, st_bad[1] = {{9, par, NULL}}, st_prelu[1] = {{BNN_EW_PRELU, NULL, NULL}};
    bnn_output os = {BNN_OUT_INT32, NULL, NULL, NULL, NULL, st_ok, 1};
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &os) == BNN_E_SHAPE, "steps on int32 output");
    os.out_mode = BNN_OUT_FLOAT;
    os.n_steps = BNN_EW_MAX_STEPS + 1;
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &os) == BNN_E_SHAPE, "too many steps");
    os.n_steps = 1;
    os.steps = NULL;
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &os) == BNN_E_NULL, "steps NULL");
    os.steps = st_bad;
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &os) == BNN_E_SHAPE, "unknown step");
    os.steps = st_prelu;
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &os) == BNN_E_NULL, "prelu without slope");
    bnn_window bad = win;
    bad.kernel_h = 0;
    CHECK(bnn_bconv2d_create(&L, &bad, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "kernel 0");
    bad = win; bad.stride_w = 9;
    CHECK(bnn_bconv2d_create(&L, &bad, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "stride 9");
    bad = win; bad.pad_left = 3;
    CHECK(bnn_bconv2d_create(&L, &bad, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "pad >= kernel");
    bad = win; bad.in_h = 1; bad.pad_top = bad.pad_bottom = 0;
    CHECK(bnn_bconv2d_create(&L, &bad, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "kernel > input");
    bad = win; bad.in_c = -5;
    CHECK(bnn_bconv2d_create(&L, &bad, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_E_SHAPE, "negative c");
    CHECK(bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, w, 20 * 9 * 2, &oi) == BNN_OK, "create");
    CHECK(bnn_bconv2d_input_len(L) == 8 * 8 * 2 && bnn_bconv2d_output_len(L) == 8 * 8 * 20, "lens");
    for (int i = 0; i < 8 * 8 * 20; i++) y[i] = 12345;
    CHECK(bnn_bconv2d_run(ctx, L, x, 8 * 8 * 2 - 1, NULL, 0, y, 8 * 8 * 20) == BNN_E_SIZE, "short x");
    CHECK(bnn_bconv2d_run(ctx, L, x, 8 * 8 * 2, NULL, 0, y, 8 * 8 * 20 - 1) == BNN_E_SIZE, "short y");
    float k[64];
    CHECK(bnn_bconv2d_run(ctx, L, x, 8 * 8 * 2, k, 64, y, 8 * 8 * 20) == BNN_E_SHAPE, "K needs float output");
    CHECK(bnn_bconv2d_run(ctx, L, NULL, 8 * 8 * 2, NULL, 0, y, 8 * 8 * 20) == BNN_E_NULL, "null x");
    int untouched = 1;
    for (int i = 0; i < 8 * 8 * 20; i++) untouched &= y[i] == 12345;
    CHECK(untouched, "output untouched after errors");
    CHECK(bnn_bconv2d_run(ctx, L, x, 8 * 8 * 2, NULL, 0, y, 8 * 8 * 20) == BNN_OK, "run");
    /* all +1 input and weights, zero padding: interior 9*40, corner 4*40 */
    CHECK(y[0] == 4 * 40 && y[1 * 20] == 6 * 40 && y[(8 + 1) * 20] == 9 * 40, "known values %d %d %d", y[0], y[1 * 20],
          y[(8 + 1) * 20]);
    bnn_bconv2d_destroy(L);
    CHECK(bnn_ctx_set_path(ctx, 99) == BNN_E_PATH, "bad path");
    CHECK(bnn_ctx_create(NULL, 1) == BNN_E_NULL, "ctx null");
}

int main(void) {
    bnn_ctx *ctxs[16];
    int nctx = 0;
    /* portable first (the semantics), then every other available path, each with 1..3 threads */
    for (int path = BNN_PATH_PORTABLE; path <= BNN_PATH_AVX512; path++) {
        if (!bnn_path_available(path)) continue;
        for (int t = 1; t <= 3; t++) {
            bnn_ctx *c;
            if (bnn_ctx_create(&c, t) != BNN_OK) return 2;
            CHECK(bnn_ctx_set_path(c, path) == BNN_OK, "set path");
            ctxs[nctx++] = c;
        }
        printf("path %s available, bconv2d kernel %s\n", bnn_path_name(path), bnn_bconv2d_kernel_name(ctxs[nctx - 1]));
    }
    /* ./build.sh test runs this under qemu-aarch64 -cpu cortex-a53 with the in-order kernel expected */
    const char *want = getenv("BNN_EXPECT_BCONV2D_KERNEL");
    if (want) CHECK(strcmp(bnn_bconv2d_kernel_name(ctxs[nctx - 1]), want) == 0, "bconv2d kernel %s, expected %s",
                    bnn_bconv2d_kernel_name(ctxs[nctx - 1]), want);
    test_bitpack(ctxs[0]);
    test_bad_input(ctxs[nctx - 1]);
    check_seed(42);
    const conv_case fixed[] = {
        {1, 7, 9, 64, 32, 3, 1, 1, 0}, {2, 6, 6, 17, 20, 3, 2, 1, 0}, {1, 9, 11, 40, 65, 5, 1, 1, 0},
        {1, 12, 10, 65, 16, 7, 2, 1, 0}, {1, 5, 5, 130, 40, 1, 1, 0, 0}, {1, 9, 9, 3, 8, 3, 2, 1, 1},
        {1, 10, 13, 33, 70, 3, 1, 1, 1}, {1, 4, 4, 256, 128, 3, 1, 1, 0}, {1, 3, 3, 100, 3, 3, 1, 0, 0},
        {1, 1, 1, 1000, 10, 1, 1, 0, 0},
        {1, 4, 5, 8000, 20, 3, 1, 1, 0}, /* 2,250 words per output: the 16-bit counters widen mid-row */
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) run_case(ctxs, nctx, &fixed[i], 0);
    for (int tiny = 1; tiny <= 2; tiny++) {
        const size_t some[] = {0, 1, 6, 7};
        for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) run_case(ctxs, nctx, &fixed[some[i]], tiny);
    }
    for (int i = 0; i < 30; i++) {
        const int ks[] = {1, 3, 5, 7};
        conv_case cc = {check_rand_int(1, 2), check_rand_int(1, 12), check_rand_int(1, 12), check_rand_int(1, 140),
                        check_rand_int(1, 90), ks[check_rand_int(0, 3)], check_rand_int(1, 2), check_rand_int(0, 1),
                        check_rand_int(0, 1)};
        run_case(ctxs, nctx, &cc, 0);
    }
    for (int i = 0; i < nctx; i++) bnn_ctx_destroy(ctxs[i]);
    return check_summary("test_bconv2d");
}
