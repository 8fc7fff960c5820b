/* Context: thread pool (pthreads; waiters spin briefly, then sleep), scratch arena, CPU features
 * (bnn_cpu, detected once per context) and code-path choice. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#include "internal.h"

const char *bnn_version(void) {
#define BNN_STR2(x) #x
#define BNN_STR(x) BNN_STR2(x)
    return BNN_STR(BNN_VERSION_MAJOR) "." BNN_STR(BNN_VERSION_MINOR) "." BNN_STR(BNN_VERSION_PATCH);
}

const char *bnn_status_str(int s) {
    switch (s) {
    case BNN_OK: return "ok";
    case BNN_E_NULL: return "a required pointer is NULL";
    case BNN_E_SHAPE: return "a shape or layer parameter is out of range or inconsistent";
    case BNN_E_SIZE: return "a buffer is shorter than its shape requires";
    case BNN_E_PATH: return "the requested code path is not available on this CPU or build";
    case BNN_E_NOMEM: return "out of memory";
    case BNN_E_THREAD: return "a worker thread could not be started";
    default: return "unknown status";
    }
}

const char *bnn_path_name(int path) {
    switch (path) {
    case BNN_PATH_AUTO: return "auto";
    case BNN_PATH_PORTABLE: return "portable";
    case BNN_PATH_NEON:
#if defined(__aarch64__)
        return "neon-aarch64";
#else
        return "neon-armv7";
#endif
    case BNN_PATH_AVX2: return "avx2";
    case BNN_PATH_AVX512: return "avx512-vpopcntdq";
    default: return "unknown";
    }
}

/* ---- CPU features ------------------------------------------------------------------ */
#if defined(BNN_X86)
#include <cpuid.h>
static uint64_t bnn_xgetbv0(void) {
    uint32_t a, d;
    __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return ((uint64_t)d << 32) | a;
}
#endif

bnn_cpu bnn_cpu_detect(void) {
    bnn_cpu cpu = {0, 0, 0, 0, 0};
#if defined(BNN_HAVE_NEON)
    cpu.neon = 1;
#endif
#if defined(__aarch64__) && defined(__linux__)
    if (getauxval(AT_HWCAP) & (1ul << 11)) { /* HWCAP_CPUID: the kernel emulates MIDR_EL1 reads */
        uint64_t midr;
        __asm__("mrs %0, MIDR_EL1" : "=r"(midr));
        unsigned part = (unsigned)(midr >> 4) & 0xfffu;
        cpu.inorder = (midr >> 24) == 0x41 && (part == 0xd03 || part == 0xd04 || part == 0xd05); /* Arm A53 A35 A55 */
    }
#endif
#if defined(BNN_X86)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return cpu;
    if (!(c & (1u << 27)) || !(c & (1u << 28)) || !(c & (1u << 23))) return cpu; /* osxsave, avx, popcnt */
    const int fma = (c & (1u << 12)) != 0;
    const uint64_t xcr0 = bnn_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return cpu; /* xmm, ymm state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return cpu;
    if (!(b & (1u << 5))) return cpu; /* avx2 */
    cpu.avx2 = 1;
    cpu.fma = fma;
    cpu.avx512_vpopcntdq = (xcr0 & 0xe6) == 0xe6 /* opmask, zmm state */
                           && (b & (1u << 16)) && (b & (1u << 30)) && (c & (1u << 14)); /* f, bw, vpopcntdq */
#endif
    return cpu;
}

static int path_supported(const bnn_cpu *cpu, int path) {
    switch (path) {
    case BNN_PATH_AUTO:
    case BNN_PATH_PORTABLE: return 1;
    case BNN_PATH_NEON: return cpu->neon;
    case BNN_PATH_AVX2: return cpu->avx2;
    case BNN_PATH_AVX512: return cpu->avx512_vpopcntdq;
    default: return 0;
    }
}

int bnn_path_available(int path) {
    bnn_cpu cpu = bnn_cpu_detect();
    return path_supported(&cpu, path);
}

static int bnn_best_path(const bnn_cpu *cpu) {
    const char *force = getenv("BNN_PATH"); /* e.g. BNN_PATH=portable, for testing */
    if (force && *force) {
        for (int p = BNN_PATH_PORTABLE; p <= BNN_PATH_AVX512; p++) {
            const char *name = bnn_path_name(p);
            if ((strcmp(force, name) == 0 || (p == BNN_PATH_NEON && strcmp(force, "neon") == 0)
                 || (p == BNN_PATH_AVX512 && strcmp(force, "avx512") == 0))
                && path_supported(cpu, p))
                return p;
        }
    }
    if (path_supported(cpu, BNN_PATH_AVX512)) return BNN_PATH_AVX512;
    if (path_supported(cpu, BNN_PATH_AVX2)) return BNN_PATH_AVX2;
    if (path_supported(cpu, BNN_PATH_NEON)) return BNN_PATH_NEON;
    return BNN_PATH_PORTABLE;
}

/* ---- aligned memory ------------------------------------------------------------------ */
void *bnn_aligned_alloc(size_t size) {
    void *p = NULL;
    if (size == 0) size = 64;
    if (posix_memalign(&p, 64, (size + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}
void bnn_aligned_free(void *p) { free(p); }

void *bnn_scratch(bnn_ctx *ctx, size_t size) {
    if (size <= ctx->scratch_size) return ctx->scratch;
    bnn_aligned_free(ctx->scratch);
    ctx->scratch = bnn_aligned_alloc(size);
    ctx->scratch_size = ctx->scratch ? size : 0;
    return ctx->scratch;
}

size_t bnn_elems4(int64_t a, int64_t b, int64_t c, int64_t d) {
    size_t r = 1;
    if (a < 0 || b < 0 || c < 0 || d < 0) return 0;
    if (!bnn_mul_ok(r, (size_t)a, &r) || !bnn_mul_ok(r, (size_t)b, &r) || !bnn_mul_ok(r, (size_t)c, &r)
        || !bnn_mul_ok(r, (size_t)d, &r))
        return 0;
    return r;
}

/* ---- thread pool ----------------------------------------------------------------------- */
/* A thread that waits (a worker for the next op, the caller for the workers) first spins
 * for up to BNN_SPIN_NS, then sleeps on a condition variable.  A network is a chain of
 * ops of tens of microseconds each; waking a sleeping thread costs about as much, so
 * without the spin two threads were slower than one on small layers.  After the last op
 * of a frame the workers sleep again within BNN_SPIN_NS.  While spinning they yield the
 * CPU every 64 pauses, so other runnable threads of the process (capture, decode) are
 * not kept waiting by a spinning worker. */
#define BNN_SPIN_NS 200000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

typedef struct { unsigned n; struct timespec end; } spinner;

/* 1 while the spin budget lasts (every 64 calls: yield the CPU once, read the clock) */
static int spin_on(spinner *s) {
    cpu_relax();
    if ((++s->n & 63) != 0) return 1;
    sched_yield(); /* a runnable thread of the application (capture, decode) goes first */
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (s->n == 64) {
        s->end = t;
        s->end.tv_nsec += BNN_SPIN_NS;
        if (s->end.tv_nsec >= 1000000000L) { s->end.tv_sec++; s->end.tv_nsec -= 1000000000L; }
        return 1;
    }
    return t.tv_sec < s->end.tv_sec || (t.tv_sec == s->end.tv_sec && t.tv_nsec < s->end.tv_nsec);
}

static void run_chunk(bnn_ctx *ctx, int idx) {
    int64_t n_chunks = ctx->num_threads;
    int64_t units = (ctx->n_items + ctx->grain - 1) / ctx->grain;
    int64_t per = units / n_chunks, rem = units % n_chunks;
    int64_t u0 = idx * per + (idx < rem ? idx : rem);
    int64_t u1 = u0 + per + (idx < rem ? 1 : 0);
    int64_t b = u0 * ctx->grain, e = u1 * ctx->grain;
    if (e > ctx->n_items) e = ctx->n_items;
    if (b < e) ctx->fn(ctx->arg, b, e);
}

typedef struct { bnn_ctx *ctx; int idx; } worker_arg;

/* a worker that has run generation `seen` has nothing to do (and is not told to stop) */
static int idle(bnn_ctx *ctx, unsigned seen) {
    return atomic_load(&ctx->generation) == seen && !atomic_load(&ctx->stop);
}

static void *worker_main(void *p) {
    bnn_ctx *ctx = ((worker_arg *)p)->ctx;
    int idx = ((worker_arg *)p)->idx;
    free(p);
    unsigned seen = 0;
    for (;;) {
        spinner sp = {0};
        while (idle(ctx, seen) && spin_on(&sp)) {}
        if (idle(ctx, seen)) {
            pthread_mutex_lock(&ctx->mu);
            while (idle(ctx, seen)) pthread_cond_wait(&ctx->cv_work, &ctx->mu);
            pthread_mutex_unlock(&ctx->mu);
        }
        if (atomic_load(&ctx->stop)) break;
        seen = atomic_load(&ctx->generation);
        run_chunk(ctx, idx);
        pthread_mutex_lock(&ctx->mu); /* the caller may be asleep on cv_done */
        if (atomic_fetch_sub(&ctx->pending, 1) == 1) pthread_cond_signal(&ctx->cv_done);
        pthread_mutex_unlock(&ctx->mu);
    }
    return NULL;
}

void bnn_parallel_for(bnn_ctx *ctx, int64_t n_items, int64_t grain, bnn_task_fn fn, void *arg) {
    if (n_items <= 0) return;
    if (grain < 1) grain = 1;
    if (ctx->n_workers == 0 || n_items <= grain) {
        fn(arg, 0, n_items);
        return;
    }
    pthread_mutex_lock(&ctx->mu);
    ctx->fn = fn;
    ctx->arg = arg;
    ctx->n_items = n_items;
    ctx->grain = grain;
    atomic_store(&ctx->pending, ctx->n_workers);
    atomic_fetch_add(&ctx->generation, 1); /* publishes the fields above to spinning workers */
    pthread_cond_broadcast(&ctx->cv_work);
    pthread_mutex_unlock(&ctx->mu);
    run_chunk(ctx, 0); /* the calling thread takes chunk 0 */
    spinner sp = {0};
    while (atomic_load(&ctx->pending) > 0 && spin_on(&sp)) {}
    if (atomic_load(&ctx->pending) > 0) {
        pthread_mutex_lock(&ctx->mu);
        while (atomic_load(&ctx->pending) > 0) pthread_cond_wait(&ctx->cv_done, &ctx->mu);
        pthread_mutex_unlock(&ctx->mu);
    }
}

static void stop_workers(bnn_ctx *ctx, int started) {
    pthread_mutex_lock(&ctx->mu);
    atomic_store(&ctx->stop, 1);
    pthread_cond_broadcast(&ctx->cv_work);
    pthread_mutex_unlock(&ctx->mu);
    for (int i = 0; i < started; i++) pthread_join(ctx->threads[i], NULL);
}

int bnn_ctx_create(bnn_ctx **out, int num_threads) {
    if (!out) return BNN_E_NULL;
    *out = NULL;
    if (num_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        num_threads = n > 0 ? (int)n : 1;
    }
    if (num_threads > BNN_MAX_THREADS) num_threads = BNN_MAX_THREADS;
    bnn_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return BNN_E_NOMEM;
    ctx->num_threads = num_threads;
    ctx->cpu = bnn_cpu_detect();
    ctx->path = bnn_best_path(&ctx->cpu);
    pthread_mutex_init(&ctx->mu, NULL);
    pthread_cond_init(&ctx->cv_work, NULL);
    pthread_cond_init(&ctx->cv_done, NULL);
    for (int i = 1; i < num_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->ctx = ctx;
            wa->idx = i;
        }
        if (!wa || pthread_create(&ctx->threads[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            stop_workers(ctx, i - 1);
            pthread_cond_destroy(&ctx->cv_work);
            pthread_cond_destroy(&ctx->cv_done);
            pthread_mutex_destroy(&ctx->mu);
            free(ctx);
            return wa ? BNN_E_THREAD : BNN_E_NOMEM;
        }
        ctx->n_workers++;
    }
    *out = ctx;
    return BNN_OK;
}

void bnn_ctx_destroy(bnn_ctx *ctx) {
    if (!ctx) return;
    stop_workers(ctx, ctx->n_workers);
    pthread_cond_destroy(&ctx->cv_work);
    pthread_cond_destroy(&ctx->cv_done);
    pthread_mutex_destroy(&ctx->mu);
    bnn_aligned_free(ctx->scratch);
    free(ctx);
}

int bnn_ctx_num_threads(const bnn_ctx *ctx) { return ctx ? ctx->num_threads : BNN_E_NULL; }
int bnn_ctx_path(const bnn_ctx *ctx) { return ctx ? ctx->path : BNN_E_NULL; }
int bnn_ctx_set_path(bnn_ctx *ctx, int path) {
    if (!ctx) return BNN_E_NULL;
    if (path == BNN_PATH_AUTO) {
        ctx->path = bnn_best_path(&ctx->cpu);
        return BNN_OK;
    }
    if (!path_supported(&ctx->cpu, path)) return BNN_E_PATH;
    ctx->path = path;
    return BNN_OK;
}

/* ---- window geometry -------------------------------------------------------------------- */
int bnn_window_check(const bnn_window *w, int is_conv, int32_t *out_h, int32_t *out_w) {
    if (!w) return BNN_E_NULL;
    if (w->n < 1 || w->in_h < 1 || w->in_w < 1 || w->in_c < 1) return BNN_E_SHAPE;
    if (w->in_h > (1 << 16) || w->in_w > (1 << 16) || w->in_c > (1 << 20) || w->n > (1 << 20)) return BNN_E_SHAPE;
    if (is_conv && (w->out_c < 1 || w->out_c > (1 << 20))) return BNN_E_SHAPE;
    const int32_t kmax = is_conv ? BNN_MAX_CONV_KERNEL : BNN_MAX_POOL; /* pools: up to the whole image (global pooling) */
    if (w->kernel_h < 1 || w->kernel_h > kmax || w->kernel_w < 1 || w->kernel_w > kmax) return BNN_E_SHAPE;
    const int32_t smax = is_conv ? BNN_MAX_CONV_STRIDE : BNN_MAX_POOL;
    if (w->stride_h < 1 || w->stride_h > smax || w->stride_w < 1 || w->stride_w > smax) return BNN_E_SHAPE;
    if (w->pad_top < 0 || w->pad_bottom < 0 || w->pad_left < 0 || w->pad_right < 0) return BNN_E_SHAPE;
    if (w->pad_top >= w->kernel_h || w->pad_bottom >= w->kernel_h || w->pad_left >= w->kernel_w
        || w->pad_right >= w->kernel_w)
        return BNN_E_SHAPE;
    int64_t eh = (int64_t)w->in_h + w->pad_top + w->pad_bottom - w->kernel_h;
    int64_t ew = (int64_t)w->in_w + w->pad_left + w->pad_right - w->kernel_w;
    if (eh < 0 || ew < 0) return BNN_E_SHAPE;
    if (out_h) *out_h = (int32_t)(eh / w->stride_h + 1);
    if (out_w) *out_w = (int32_t)(ew / w->stride_w + 1);
    return BNN_OK;
}

int bnn_window_out(const bnn_window *win, int32_t *out_h, int32_t *out_w) {
    if (!out_h || !out_w) return BNN_E_NULL;
    return bnn_window_check(win, 0, out_h, out_w);
}
