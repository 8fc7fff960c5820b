/* x86-64 float-convolution tiles (see fc_tile in fconv2d.c), chosen at run time:
 *   AVX-512F: one zmm = one block of 16 output channels; a tile is FC_X86_P output pixels
 *     times up to 4 blocks (24 accumulators), the input value broadcast from memory and
 *     multiply-added (FMA) into each block;
 *   AVX2 + FMA: one block = two ymm; a tile is FC_X86_P pixels times one block (12
 *     accumulators).
 * Each output element is still accumulated as bias, then ky, then (kx, ic) in order, by one
 * thread, so results do not depend on the thread count; they differ from the portable path
 * only by the rounding of the fused multiply-add (the portable x86-64 build has no FMA).
 * A tile of np < FC_X86_P pixels computes its missing pixels as copies of its last one
 * (same loads, results not stored), so one instantiation serves every remainder. */
#ifndef BNN_FCONV2D_KERNELS_X86_H
#define BNN_FCONV2D_KERNELS_X86_H
#include <immintrin.h>

#define FC_X86_P 6   /* output pixels per tile */
#define FC_X86_GB 4  /* blocks of 16 channels per work item (AVX-512 tiles take up to 4) */

#define FC_AVX512 __attribute__((target("avx512f,avx2,fma"), always_inline)) static inline
#define FC_AVX512_FN __attribute__((target("avx512f,avx2,fma"))) static
#define FC_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline
#define FC_AVX2_FN __attribute__((target("avx2,fma"))) static

/* Stores the first nc (<= 16) floats of a block. */
FC_AVX512 void fc512_store(float *y, __m512 v, int nc) {
    if (nc >= 16) _mm512_storeu_ps(y, v);
    else _mm512_mask_storeu_ps(y, (__mmask16)((1u << nc) - 1u), v);
}

#define FC_DEF512(P, NB)                                                                       \
    FC_AVX512 void fc512_##P##_##NB(const fc_tile *t, int np) {                                \
        __m512 acc[P][NB];                                                                     \
        size_t xo[P];                                                                          \
        _Pragma("GCC unroll 16")                                                               \
        for (int p = 0; p < P; p++) xo[p] = (size_t)(p < np ? p : np - 1) * t->xstep;        \
        _Pragma("GCC unroll 16")                                                               \
        for (int b = 0; b < NB; b++) {                                                         \
            __m512 bv = _mm512_loadu_ps(t->bias + 16 * b);                                     \
            _Pragma("GCC unroll 16")                                                           \
            for (int p = 0; p < P; p++) acc[p][b] = bv;                                        \
        }                                                                                      \
        for (int ky = 0; ky < t->nky; ky++) {                                                  \
            const float *xr = t->xs + (size_t)ky * t->xrow;                                    \
            const float *wr = t->ws + (size_t)ky * t->wrow;                                    \
            for (int j = 0; j < t->nj; j++) {                                                  \
                __m512 wv[NB];                                                                 \
                _Pragma("GCC unroll 16")                                                       \
                for (int b = 0; b < NB; b++) wv[b] = _mm512_loadu_ps(wr + b * t->wblock + (size_t)j * 16); \
                _Pragma("GCC unroll 16")                                                       \
                for (int p = 0; p < P; p++) {                                                  \
                    __m512 xv = _mm512_set1_ps(xr[xo[p] + (size_t)j]);                         \
                    _Pragma("GCC unroll 16")                                                   \
                    for (int b = 0; b < NB; b++) acc[p][b] = _mm512_fmadd_ps(xv, wv[b], acc[p][b]); \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        _Pragma("GCC unroll 16")                                                               \
        for (int p = 0; p < P; p++) {                                                          \
            if (p >= np) break;                                                                \
            float *yp = t->ys + (size_t)p * t->ystep;                                          \
            _Pragma("GCC unroll 16")                                                           \
            for (int b = 0; b < NB; b++) fc512_store(yp + 16 * b, acc[p][b], t->nc - 16 * b);  \
        }                                                                                      \
    }

FC_DEF512(6, 4) /* 6 == FC_X86_P */
FC_DEF512(6, 2)
FC_DEF512(6, 1)
FC_DEF512(1, 4)
FC_DEF512(1, 2)
FC_DEF512(1, 1)

/* np pixels (1 .. FC_X86_P) times nb blocks (1 .. FC_X86_GB); t->nc channels stored. */
FC_AVX512_FN void fc_tile_avx512(const fc_tile *t0, int np, int nb) {
    fc_tile t = *t0;
    while (nb > 0) {
        int k = nb >= 4 ? 4 : nb >= 2 ? 2 : 1;
        if (np == 1) {
            if (k == 4) fc512_1_4(&t, 1);
            else if (k == 2) fc512_1_2(&t, 1);
            else fc512_1_1(&t, 1);
        } else {
            if (k == 4) fc512_6_4(&t, np);
            else if (k == 2) fc512_6_2(&t, np);
            else fc512_6_1(&t, np);
        }
        nb -= k;
        t.ws += (size_t)k * t.wblock;
        t.bias += 16 * k;
        t.ys += 16 * k;
        t.nc -= 16 * k;
    }
}

/* ---- AVX2 + FMA ----------------------------------------------------------------------- */
FC_AVX2 void fc256_store(float *y, __m256 v0, __m256 v1, int nc) {
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

#define FC_DEF256(P)                                                                           \
    FC_AVX2 void fc256_##P(const fc_tile *t, int np) {                                         \
        __m256 a0[P], a1[P];                                                                   \
        size_t xo[P];                                                                          \
        __m256 b0 = _mm256_loadu_ps(t->bias), b1 = _mm256_loadu_ps(t->bias + 8);              \
        _Pragma("GCC unroll 16")                                                               \
        for (int p = 0; p < P; p++) {                                                          \
            xo[p] = (size_t)(p < np ? p : np - 1) * t->xstep;                                  \
            a0[p] = b0;                                                                        \
            a1[p] = b1;                                                                        \
        }                                                                                      \
        for (int ky = 0; ky < t->nky; ky++) {                                                  \
            const float *xr = t->xs + (size_t)ky * t->xrow;                                    \
            const float *wr = t->ws + (size_t)ky * t->wrow;                                    \
            for (int j = 0; j < t->nj; j++) {                                                  \
                __m256 w0 = _mm256_loadu_ps(wr + (size_t)j * 16), w1 = _mm256_loadu_ps(wr + (size_t)j * 16 + 8); \
                _Pragma("GCC unroll 16")                                                       \
                for (int p = 0; p < P; p++) {                                                  \
                    __m256 xv = _mm256_broadcast_ss(xr + xo[p] + (size_t)j);                   \
                    a0[p] = _mm256_fmadd_ps(xv, w0, a0[p]);                                    \
                    a1[p] = _mm256_fmadd_ps(xv, w1, a1[p]);                                    \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        _Pragma("GCC unroll 16")                                                               \
        for (int p = 0; p < P; p++) {                                                          \
            if (p >= np) break;                                                                \
            fc256_store(t->ys + (size_t)p * t->ystep, a0[p], a1[p], t->nc);                   \
        }                                                                                      \
    }

FC_DEF256(6) /* 6 == FC_X86_P */
FC_DEF256(1)

FC_AVX2_FN void fc_tile_avx2(const fc_tile *t0, int np, int nb) {
    fc_tile t = *t0;
    for (int b = 0; b < nb; b++) {
        if (np == 1) fc256_1(&t, 1);
        else fc256_6(&t, np);
        t.ws += t.wblock;
        t.bias += 16;
        t.ys += 16;
        t.nc -= 16;
    }
}
#endif
