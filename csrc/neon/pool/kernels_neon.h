/* NEON pooling: the reference.  On aarch64 NEON is the baseline, so the compiler already
 * vectorises the reference's loops with it; armv7 NEON flushes denormals to zero, which
 * would change results, so armhf runs the scalar VFP code. */
#ifndef BNN_POOL_KERNELS_NEON_H
#define BNN_POOL_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "reference.h"

#define pool_neon pool_portable

#endif /* defined(BNN_HAVE_NEON) */
#endif
