/* Internal helpers shared by the ops: context, thread pool, scratch, checks. Not installed. */
#ifndef BNN_INTERNAL_H
#define BNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include "../include/bnn.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BNN_X86 1
#endif
#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#define BNN_HAVE_NEON 1
#endif

#define BNN_MAX_THREADS 64

/* A task of parallel_for: processes items [begin, end). */
typedef void (*bnn_task_fn)(void *arg, int64_t begin, int64_t end);

struct bnn_ctx {
    int num_threads;
    int path;
    int cpu_fma; /* x86: the CPU has FMA3 (the AVX2 float kernels need it) */
    /* pool */
    pthread_t threads[BNN_MAX_THREADS];
    int n_workers; /* num_threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    /* written under mu; read lock-free by the spinning waiters (32-bit: lock-free on every
     * target, armv6 included, without libatomic) */
    atomic_uint generation;
    atomic_int pending;
    atomic_int stop;
    bnn_task_fn fn;
    void *arg;
    int64_t n_items, grain;
    /* scratch: one arena, grown on demand, reused across calls */
    void *scratch;
    size_t scratch_size;
};

/* Splits [0, n_items) into num_threads contiguous chunks (multiples of `grain` items,
 * the last one shorter) and runs fn on each; returns when all are done.  The split
 * depends only on n_items, grain and num_threads. */
void bnn_parallel_for(bnn_ctx *ctx, int64_t n_items, int64_t grain, bnn_task_fn fn, void *arg);

/* Scratch memory of at least `size` bytes, 64-byte aligned; NULL on failure.
 * Valid until the next call on the same context. */
void *bnn_scratch(bnn_ctx *ctx, size_t size);

/* Checked arithmetic for sizes: returns 0 on overflow. */
static inline int bnn_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
size_t bnn_elems4(int64_t a, int64_t b, int64_t c, int64_t d); /* 0 on overflow/negative */

/* Validates a window (pools when is_conv == 0), fills out_h/out_w. */
int bnn_window_check(const bnn_window *w, int is_conv, int32_t *out_h, int32_t *out_w);

int bnn_cpu_has_avx2(void);
int bnn_cpu_has_avx512_vpopcnt(void);
int bnn_cpu_has_fma(void);

void *bnn_aligned_alloc(size_t size);
void bnn_aligned_free(void *p);

#endif
