/* x86-64 pooling kernels (see kernel.h): pool_avx2 and pool_avx512 are the reference's C
 * compiled for AVX2 and AVX-512F; the same elementwise IEEE operations, the same results. */
#ifndef BNN_POOL_KERNELS_X86_H
#define BNN_POOL_KERNELS_X86_H
#include "../core/internal.h"
#if defined(BNN_X86)
#include "kernel.h"
#include "reference.h"

BNN_DEF_X86_KERNELS(pool, (void *arg, int64_t begin, int64_t end), POOL_ROWS_BODY)

#endif /* defined(BNN_X86) */
#endif
