/* Binary convolution micro-benchmark: a static program so that qemu's instruction counter
 * (shared/tools/arm-icount) can count the kernel by name, and a host timer.
 * usage: bench_bconv CIN COUT K H W [REPS] [THREADS] [PATH]
 * Prints one JSON object: shape, path, reps, ms_per_run (wall time; meaningless under qemu),
 * binary_macs (per run). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../neon/include/bnn.h"

/* noinline: the instruction counter resolves this symbol in the executable */
__attribute__((noinline)) int bench_bconv_run(bnn_ctx *ctx, bnn_bconv2d *L, const uint32_t *x, size_t xl, int32_t *y,
                                              size_t yl) {
    return bnn_bconv2d_run(ctx, L, x, xl, NULL, 0, y, yl);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s CIN COUT K H W [REPS] [THREADS] [PATH]\n", argv[0]);
        return 2;
    }
    int cin = atoi(argv[1]), cout = atoi(argv[2]), k = atoi(argv[3]), h = atoi(argv[4]), w = atoi(argv[5]);
    int reps = argc > 6 ? atoi(argv[6]) : 20, threads = argc > 7 ? atoi(argv[7]) : 1;
    int path = argc > 8 ? atoi(argv[8]) : BNN_PATH_AUTO;
    bnn_ctx *ctx;
    if (bnn_ctx_create(&ctx, threads) || bnn_ctx_set_path(ctx, path)) {
        fprintf(stderr, "context/path not available\n");
        return 1;
    }
    int pad = k / 2;
    bnn_window win = {1, h, w, cin, cout, k, k, 1, 1, pad, pad, pad, pad};
    size_t cw = bnn_packed_words(cin), wl = (size_t)cout * k * k * cw, xl = (size_t)h * w * cw;
    uint32_t *wt = malloc(wl * 4), *x = malloc(xl * 4);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < wl; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; wt[i] = (uint32_t)s; }
    for (size_t i = 0; i < xl; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; x[i] = (uint32_t)s; }
    if (cin % 32) { /* tail bits must be 0 */
        for (size_t i = cw - 1; i < xl; i += cw) x[i] &= (1u << (cin % 32)) - 1u;
    }
    bnn_output out = {BNN_OUT_INT32, NULL, NULL, NULL, NULL};
    bnn_bconv2d *L;
    if (bnn_bconv2d_create(&L, &win, BNN_PAD_ZERO, wt, wl, &out)) return 1;
    size_t yl = bnn_bconv2d_output_len(L);
    int32_t *y = malloc(yl * 4);
    bench_bconv_run(ctx, L, x, xl, y, yl); /* warm-up */
    struct timespec t0, t1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bench_bconv_run(ctx, L, x, xl, y, yl);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
        if (ms < best) best = ms;
    }
    long long checksum = 0;
    for (size_t i = 0; i < yl; i++) checksum += y[i] * (long long)(i % 7 + 1);
    printf("{\"cin\": %d, \"cout\": %d, \"k\": %d, \"h\": %d, \"w\": %d, \"threads\": %d, \"path\": \"%s\", "
           "\"reps\": %d, \"ms_best\": %.4f, \"binary_macs\": %lld, \"checksum\": %lld}\n",
           cin, cout, k, h, w, threads, bnn_path_name(bnn_ctx_path(ctx)), reps, best,
           (long long)h * w * cout * k * k * cin, checksum);
    bnn_bconv2d_destroy(L);
    bnn_ctx_destroy(ctx);
    free(wt); free(x); free(y);
    return 0;
}
