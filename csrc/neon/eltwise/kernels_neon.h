/* NEON elementwise chains: the reference.  On aarch64 NEON is the baseline, so the
 * compiler already vectorises the reference's loops with it; armv7 NEON flushes denormals
 * to zero, which would change results, so armhf runs the scalar VFP code. */
#ifndef BNN_ELTWISE_KERNELS_NEON_H
#define BNN_ELTWISE_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "reference.h"

#define eltwise_neon eltwise_portable

#endif /* defined(BNN_HAVE_NEON) */
#endif
