/* The context's thread pool: waiting threads spin for a while, then sleep.  Every op call
 * must see its own arguments and finish all of its chunks whether the workers were
 * spinning (back-to-back calls) or asleep (a pause between calls), and contexts must
 * stop cleanly in either state.  Uses the residual add (its parallel split: 65536
 * elements per chunk) on inputs that change with every call, so a chunk computed from a
 * stale call or skipped is seen. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>
#include "../../csrc/neon/include/bnn.h"
#include "check.h"

#define N 300000 /* 5 chunks of 65536: every thread of a 2..4-thread pool gets work */

static void pause_ms(int ms) {
    struct timespec t = {0, ms * 1000000L};
    nanosleep(&t, NULL);
}

static int run_and_check(bnn_ctx *ctx, float *a, float *b, float *y, int call) {
    for (int i = 0; i < N; i++) {
        a[i] = (float)(i % 1000 + call);
        b[i] = (float)(call % 7);
        y[i] = -1.0f;
    }
    if (bnn_add_f32(ctx, a, N, b, N, y, N, N) != BNN_OK) return 0;
    int bad = 0;
    for (int i = 0; i < N; i++) bad += y[i] != (float)(i % 1000 + call + call % 7);
    return bad == 0;
}

int main(void) {
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *y = malloc(N * sizeof *y);
    if (!a || !b || !y) return 2;
    for (int t = 2; t <= 4; t++) {
        bnn_ctx *ctx;
        if (bnn_ctx_create(&ctx, t) != BNN_OK) return 2;
        int ok = 0, calls = 0;
        for (int i = 0; i < 300; i++, calls++) ok += run_and_check(ctx, a, b, y, calls); /* workers spinning */
        for (int i = 0; i < 12; i++, calls++) { /* workers asleep: the spin lasts 0.2 ms */
            pause_ms(i % 2 ? 1 : 3);
            ok += run_and_check(ctx, a, b, y, calls);
        }
        CHECK(ok == calls, "%d threads: %d of %d calls right", t, ok, calls);
        bnn_ctx_destroy(ctx);
    }
    /* stop right after a call (workers spinning) and after a pause (asleep), and unused */
    int created = 0;
    for (int i = 0; i < 40; i++) {
        bnn_ctx *ctx;
        if (bnn_ctx_create(&ctx, 2 + i % 3) != BNN_OK) continue;
        created++;
        if (i % 4 != 3) CHECK(run_and_check(ctx, a, b, y, i), "call %d before destroy", i);
        if (i % 2) pause_ms(1);
        bnn_ctx_destroy(ctx);
    }
    CHECK(created == 40, "%d of 40 contexts created", created);
    free(a);
    free(b);
    free(y);
    return check_summary("test_thread_pool");
}
