/* Internal helpers shared by the ops: context, thread pool, scratch, checks. Not installed. */
#ifndef BNN_INTERNAL_H
#define BNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

/* ---- kernels: one pattern for every op ------------------------------------------------
 * An op with per-ISA kernels (bconv2d/, bitpack/, fconv2d/, pool/, eltwise/) has, in its
 * folder:
 *   kernel.h        the contract: the kernel's type bnn_<op>_kernel and exactly what a
 *                   kernel computes; a loop that several ISAs share, once, as a macro over
 *                   per-ISA operations that each kernels_<isa>.h maps (ggml style)
 *   reference.h     <op>_portable, plain C: it defines the semantics
 *   kernels_x86.h   <op>_avx2 and <op>_avx512 (empty unless BNN_X86)
 *   kernels_neon.h  <op>_neon, or #define <op>_neon <op>_portable and why (empty unless
 *                   BNN_HAVE_NEON)
 *   <op>.c          the public API (checks, layout, the parallel task) and one
 *                   static bnn_<op>_kernel select_kernel(const bnn_cpu *cpu, int path):
 *                   BNN_KERNEL_FOR_PATH(<op>, path), after a test of any CPU feature a
 *                   kernel needs beyond what its path guarantees (the AVX2 float
 *                   convolution: FMA).
 * The context's path is always one its CPU runs (ctx.c).  A new ISA path adds its case to
 * BNN_KERNEL_FOR_PATH and a kernels_<isa>.h to every op.  eltwise/add.c,
 * bconv2d/xnor_scale.c and concat/concat.c have no per-ISA kernels: plain C, nothing to
 * select. */
#if defined(BNN_X86)
#define BNN_KERNEL_FOR_PATH(op, path) \
    ((path) == BNN_PATH_AVX512 ? op##_avx512 : (path) == BNN_PATH_AVX2 ? op##_avx2 : op##_portable)
#elif defined(BNN_HAVE_NEON)
#define BNN_KERNEL_FOR_PATH(op, path) ((path) == BNN_PATH_NEON ? op##_neon : op##_portable)
#else
#define BNN_KERNEL_FOR_PATH(op, path) ((void)(path), op##_portable)
#endif

/* x86-64 kernels that are the reference's C compiled for AVX2 / AVX-512F (the compilers
 * vectorise its loops with ymm / zmm registers): op##_avx2 and op##_avx512 with the
 * reference's parameter list and body.  The body is a macro (not an inline function), so
 * that each copy is compiled for its target from the start, exactly as the reference is. */
#define BNN_DEF_X86_KERNELS(op, params, BODY)                        \
    __attribute__((target("avx2"))) static void op##_avx2 params BODY \
    __attribute__((target("avx512f"))) static void op##_avx512 params BODY

/* What this build and the running CPU can execute: detected once per context (ctx.c). */
typedef struct bnn_cpu {
    int neon;             /* NEON compiled in: aarch64, or armv7 built with -mfpu=neon-vfpv4 */
    int avx2;             /* x86-64 AVX2 + POPCNT, ymm state enabled by the OS */
    int fma;              /* x86-64 FMA3 (and avx2): the AVX2 float convolution needs it */
    int avx512_vpopcntdq; /* x86-64 AVX-512F + BW + VPOPCNTDQ (and avx2), zmm state enabled */
    int inorder;          /* aarch64: an in-order core (Cortex-A53 / A55 / A35, MIDR_EL1 read via
                           * HWCAP_CPUID); bconv2d then runs its in-order schedule */
} bnn_cpu;
bnn_cpu bnn_cpu_detect(void);
/* The bconv2d kernel a context runs ("neon-a53" on in-order aarch64 cores, else its path's
 * name); not exported from libbnn.so: for the C tests, which link libbnn.a. */
const char *bnn_bconv2d_kernel_name(const bnn_ctx *ctx);

/* A fully unrolled loop over a register tile (pixels x vectors): for (int i = 0; i < n; i++) */
#define BNN_UNROLLED(i, n) _Pragma("GCC unroll 16") for (int i = 0; i < (n); i++)
#define BNN_INLINE __attribute__((always_inline)) static inline

struct bnn_ctx {
    int num_threads;
    int path;    /* never AUTO; available on `cpu` */
    bnn_cpu cpu; /* what select_kernel in each op reads */
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

/* 1 when v is denormal (not 0): what armv7 NEON's float arithmetic counts as 0 */
static inline int bnn_denormal(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x7FFFFFFFu) - 1u < 0x007FFFFFu;
}

/* Validates a window (pools when is_conv == 0), fills out_h/out_w. */
int bnn_window_check(const bnn_window *w, int is_conv, int32_t *out_h, int32_t *out_w);

void *bnn_aligned_alloc(size_t size);
void bnn_aligned_free(void *p);

#endif
