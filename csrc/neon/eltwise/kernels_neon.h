/* NEON elementwise chains.  On aarch64 NEON is the baseline and IEEE, so the compiler
 * already vectorises the reference's loops with it: the NEON kernel is the reference.
 * armv7 NEON flushes denormals to zero, so its kernel runs the steps by steps_neon.h's
 * guarded rows, which give the reference's bits. */
#ifndef BNN_ELTWISE_KERNELS_NEON_H
#define BNN_ELTWISE_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "reference.h"

#if defined(__aarch64__)
#define eltwise_neon eltwise_portable
#else
#include "steps_neon.h"
static void ew_block_neon(const ew_job *j, int64_t p0, int64_t np) EW_BLOCK_BODY_WITH(bnn_ew_steps_neon)
static void eltwise_neon(void *arg, int64_t begin, int64_t end) EW_TASK_BODY(ew_block_neon)
#endif

#endif /* defined(BNN_HAVE_NEON) */
#endif
