/* x86-64 float-convolution kernels (see kernel.h; OB = 16), over kernel.h's tile template
 * with the FC_AVX512_* / FC_AVX2_* operations below:
 *   AVX-512F: one zmm = one block of 16 output channels; a tile is FC_X86_P output pixels
 *     times up to 4 blocks (24 accumulators), the input value broadcast from memory and
 *     multiply-added (FMA) into each block; one tile per call.
 *   AVX2 + FMA: one block = two ymm; a tile is FC_X86_P pixels times one block (12
 *     accumulators); a call runs up to FC_RUN pixels, tile after tile.
 *   Depthwise (both): FC_DW_P pixels times one vector of channels (kernel.h's FC_DEF_DW),
 *     masked loads and stores for the last channels.
 * Each output element is still accumulated as bias, then ky, then (kx, ic) in order, by one
 * thread, so results do not depend on the thread count; they differ from the portable path
 * only by the rounding of the fused multiply-add (the portable x86-64 build has no FMA). */
#ifndef BNN_FCONV2D_KERNELS_X86_H
#define BNN_FCONV2D_KERNELS_X86_H
#include "../core/internal.h"
#if defined(BNN_X86)
#include <immintrin.h>
#include "kernel.h"

#define FC_X86_P 6  /* output pixels per tile */
#define FC_X86_GB 4 /* blocks of 16 channels per work item (AVX-512 tiles take up to 4) */
#define FC_DW_P 8   /* depthwise: output pixels per tile */

/* ---- AVX-512F ------------------------------------------------------------------------- */
#define FC_AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) static inline
#define FC_AVX512_FN __attribute__((target("avx512f,avx2,fma"))) static
#define FC_AVX512_VEC __m512
#define FC_AVX512_LANES 16
#define FC_AVX512_VPB 1
#define FC_AVX512_LOAD _mm512_loadu_ps
#define FC_AVX512_BCAST(x, i) _mm512_set1_ps((x)[i]) /* from memory */
#define FC_AVX512_FMADD _mm512_fmadd_ps
#define FC_AVX512_STORE(y, acc, b, nc) fc512_store((y), (acc)[b], (nc))

FC_AVX512_INLINE void fc512_store(float *y, __m512 v, int nc) {
    if (nc >= 16) _mm512_storeu_ps(y, v);
    else _mm512_mask_storeu_ps(y, (__mmask16)((1u << nc) - 1u), v);
}

FC_DEF_ISA_TILES(fconv2d_avx512_tile, AVX512, FC_X86_P, FC_X86_GB)

#define FC_AVX512_STORE1 _mm512_storeu_ps
#define FC_AVX512_LOADN_T(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
#define FC_AVX512_LOAD_T(p, n) _mm512_loadu_ps(p)
#define FC_AVX512_STOREN(y, v, n) _mm512_mask_storeu_ps((y), (__mmask16)((1u << (n)) - 1u), (v))
FC_DEF_DW(fconv2d_dw_avx512, __attribute__((target("avx512f,avx2,fma"))), AVX512, FC_DW_P)

/* ---- AVX2 + FMA ------------------------------------------------------------------------ */
#define FC_AVX2_TARGET __attribute__((target("avx2,fma")))
#define FC_AVX2_INLINE FC_AVX2_TARGET __attribute__((always_inline)) static inline
#define FC_AVX2_FN FC_AVX2_INLINE /* the tiles function: inlined into the run */
#define FC_AVX2_VEC __m256
#define FC_AVX2_LANES 8
#define FC_AVX2_VPB 2
#define FC_AVX2_LOAD _mm256_loadu_ps
#define FC_AVX2_BCAST(x, i) _mm256_broadcast_ss((x) + (i))
#define FC_AVX2_FMADD _mm256_fmadd_ps
#define FC_AVX2_STORE(y, acc, b, nc) fc256_store((y), (acc)[2 * (b)], (acc)[2 * (b) + 1], (nc))

FC_AVX2_INLINE void fc256_store(float *y, __m256 v0, __m256 v1, int nc) {
    if (nc >= 16) {
        _mm256_storeu_ps(y, v0);
        _mm256_storeu_ps(y + 8, v1);
    } else {
        float tmp[16];
        _mm256_storeu_ps(tmp, v0);
        _mm256_storeu_ps(tmp + 8, v1);
        for (int i = 0; i < nc; i++) y[i] = tmp[i];
    }
}

FC_DEF_ISA_TILES(fconv2d_avx2_tiles, AVX2, FC_X86_P, 1)

FC_AVX2_INLINE __m256i fc256_mask(int n) { /* the first n lanes */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define FC_AVX2_STORE1 _mm256_storeu_ps
#define FC_AVX2_LOAD_T(p, n) _mm256_loadu_ps(p)
#define FC_AVX2_LOADN_T(p, n) _mm256_maskload_ps((p), fc256_mask(n))
#define FC_AVX2_STOREN(y, v, n) _mm256_maskstore_ps((y), fc256_mask(n), (v))
FC_DEF_DW(fconv2d_dw_avx2, FC_AVX2_TARGET, AVX2, FC_DW_P)
FC_DEF_RUN_KERNEL(fconv2d_avx2_run, FC_AVX2_TARGET, fconv2d_avx2_tiles, FC_X86_P)

static const bnn_fconv2d_kernel fconv2d_avx512 = {fconv2d_avx512_tile, FC_X86_P, FC_X86_GB, fconv2d_dw_avx512,
                                                   FC_DW_P};
static const bnn_fconv2d_kernel fconv2d_avx2 = {fconv2d_avx2_run, FC_RUN, FC_X86_GB, fconv2d_dw_avx2, FC_DW_P};

#endif /* defined(BNN_X86) */
#endif
