/* x86-64 elementwise-chain kernels (see kernel.h): eltwise_avx2 and eltwise_avx512 run the
 * reference's block body compiled for AVX2 and AVX-512F; the same IEEE operations in the
 * same order, the same bits. */
#ifndef BNN_ELTWISE_KERNELS_X86_H
#define BNN_ELTWISE_KERNELS_X86_H
#include "../core/internal.h"
#if defined(BNN_X86)
#include "kernel.h"
#include "reference.h"

BNN_DEF_X86_KERNELS(ew_block, (const ew_job *j, int64_t p0, int64_t np), EW_BLOCK_BODY)
static void eltwise_avx2(void *arg, int64_t begin, int64_t end) EW_TASK_BODY(ew_block_avx2)
static void eltwise_avx512(void *arg, int64_t begin, int64_t end) EW_TASK_BODY(ew_block_avx512)

#endif /* defined(BNN_X86) */
#endif
