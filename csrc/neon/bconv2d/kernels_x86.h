/* x86-64 binary-convolution kernels (see kernel.h), chosen at run time from the CPU:
 *   AVX-512F + VPOPCNTDQ: one zmm = one input word for 16 output channels;
 *     per 512 binary MACs: VPXORD (activation broadcast from memory) + VPOPCNTD + VPADDD;
 *     tile 8 pixels x 2 blocks = 16 accumulators.
 *   AVX2: nibble-table popcount (VPSHUFB), summed in 8-bit lanes for up to 31 input words,
 *     then widened to 32 bits (VPMADDUBSW, VPMADDWD). */
#ifndef BNN_BCONV2D_KERNELS_X86_H
#define BNN_BCONV2D_KERNELS_X86_H
#include "../core/internal.h"
#if defined(BNN_X86)
#include <immintrin.h>
#include "kernel.h"

#define BNN_AVX512 __attribute__((target("avx512f,avx512vpopcntdq"), always_inline)) static inline
#define BNN_AVX512_FN __attribute__((target("avx512f,avx512vpopcntdq"))) static

#define BNN_DEF_TILE512(P, NB)                                                                 \
    BNN_AVX512 void bnn_tile512_##P##_##NB(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, \
                                           int32_t *pop) {                                      \
        __m512i acc[P][NB];                                                                     \
        BNN_UNROLLED(p, P) BNN_UNROLLED(b, NB) acc[p][b] = _mm512_setzero_si512();              \
        const ptrdiff_t ps = g->pix_stride, wbs = g->wblock_stride;                             \
        for (int ky = 0; ky < g->kh; ky++)                                                      \
            for (int kx = 0; kx < g->kw; kx++) {                                                \
                const uint32_t *xr = x + ky * g->row_stride + kx * g->cw;                       \
                const uint32_t *wk = w + (size_t)(ky * g->kw + kx) * g->cw * 16;                \
                for (int c = 0; c < g->cw; c++) {                                               \
                    __m512i wv[NB];                                                             \
                    BNN_UNROLLED(b, NB) wv[b] = _mm512_loadu_si512(wk + b * wbs + 16 * c);      \
                    BNN_UNROLLED(p, P) {                                                        \
                        __m512i a = _mm512_set1_epi32((int)xr[p * ps + c]);                     \
                        BNN_UNROLLED(b, NB)                                                     \
                            acc[p][b] = _mm512_add_epi32(acc[p][b], _mm512_popcnt_epi32(_mm512_xor_si512(a, wv[b]))); \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        BNN_UNROLLED(p, P) BNN_UNROLLED(b, NB)                                                  \
            _mm512_storeu_si512(pop + p * BNN_BCONV_POP_STRIDE + 16 * b, acc[p][b]);            \
    }

BNN_DEF_TILE512(8, 2)
BNN_DEF_TILE512(4, 2)
BNN_DEF_TILE512(2, 2)
BNN_DEF_TILE512(1, 2)
BNN_DEF_TILE512(8, 1)
BNN_DEF_TILE512(4, 1)
BNN_DEF_TILE512(2, 1)
BNN_DEF_TILE512(1, 1)

BNN_AVX512_FN void bconv2d_avx512(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks,
                                  int npix, int32_t *pop) {
    int b = 0;
    for (; b < nblocks; b += 2) {
        const uint32_t *wb = w + b * g->wblock_stride;
        int32_t *pb = pop + 16 * b;
        int two = (nblocks - b) >= 2;
        int p = 0;
        for (; p + 8 <= npix; p += 8) {
            if (two) bnn_tile512_8_2(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            else bnn_tile512_8_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
        }
        if (p + 4 <= npix) {
            if (two) bnn_tile512_4_2(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            else bnn_tile512_4_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            p += 4;
        }
        if (p + 2 <= npix) {
            if (two) bnn_tile512_2_2(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            else bnn_tile512_2_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            p += 2;
        }
        if (p < npix) {
            if (two) bnn_tile512_1_2(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            else bnn_tile512_1_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
        }
    }
}

/* ---- AVX2 ---------------------------------------------------------------------------- */
#define BNN_AVX2 __attribute__((target("avx2"), always_inline)) static inline
#define BNN_AVX2_FN __attribute__((target("avx2"))) static

/* Per step (one input word, 8 output channels per vector) the nibble counts lo + hi <= 8
 * per byte are summed in 8-bit lanes: at most 31 steps (248 <= 255), then flushed. */
#define BNN_AVX2_FLUSH 31

/* acc (8-bit lanes) into tot (32-bit lanes: byte pairs summed by VPMADDUBSW, then 16-bit
 * pairs by VPMADDWD), for every accumulator of a P-pixel tile */
#define BNN_AVX2_WIDEN(P)                                                                      \
    BNN_UNROLLED(p, P) BNN_UNROLLED(v, 2) {                                                    \
        tot[p][v] = _mm256_add_epi32(                                                          \
            tot[p][v], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[p][v], ones8), ones16));      \
        acc[p][v] = _mm256_setzero_si256();                                                    \
    }

#define BNN_DEF_TILE256(P)                                                                     \
    BNN_AVX2 void bnn_tile256_##P(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, \
                                  int32_t *pop) {                                              \
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, \
                                             1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);        \
        const __m256i m4 = _mm256_set1_epi8(0x0f), ones8 = _mm256_set1_epi8(1);                 \
        const __m256i ones16 = _mm256_set1_epi16(1);                                            \
        __m256i acc[P][2], tot[P][2];                                                          \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 2) acc[p][v] = tot[p][v] = _mm256_setzero_si256();  \
        int steps = 0;                                                                         \
        const ptrdiff_t ps = g->pix_stride;                                                    \
        const int row_words = g->kw * g->cw; /* a kernel row's taps: one contiguous run */     \
        for (int ky = 0; ky < g->kh; ky++) {                                                   \
            const uint32_t *xr = x + ky * g->row_stride;                                       \
            const uint32_t *wk = w + (size_t)ky * row_words * 16;                              \
            for (int c = 0; c < row_words; c++) {                                              \
                if (++steps > BNN_AVX2_FLUSH) {                                                \
                    BNN_AVX2_WIDEN(P)                                                          \
                    steps = 1;                                                                 \
                }                                                                              \
                __m256i wv0 = _mm256_loadu_si256((const __m256i *)(wk + 16 * c));               \
                __m256i wv1 = _mm256_loadu_si256((const __m256i *)(wk + 16 * c + 8));           \
                BNN_UNROLLED(p, P) {                                                           \
                    __m256i a = _mm256_set1_epi32((int)xr[p * ps + c]);                        \
                    BNN_UNROLLED(v, 2) {                                                       \
                        __m256i t = _mm256_xor_si256(a, v ? wv1 : wv0);                        \
                        __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(t, m4));        \
                        __m256i hi = _mm256_shuffle_epi8(                                      \
                            lut, _mm256_and_si256(_mm256_srli_epi16(t, 4), m4));               \
                        acc[p][v] = _mm256_add_epi8(acc[p][v], _mm256_add_epi8(lo, hi));       \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BNN_AVX2_WIDEN(P)                                                                      \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 2)                                                  \
            _mm256_storeu_si256((__m256i *)(pop + p * BNN_BCONV_POP_STRIDE + 8 * v), tot[p][v]); \
    }

BNN_DEF_TILE256(4)
BNN_DEF_TILE256(1)

BNN_AVX2_FN void bconv2d_avx2(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks,
                              int npix, int32_t *pop) {
    for (int b = 0; b < nblocks; b++) {
        const uint32_t *wb = w + b * g->wblock_stride;
        int32_t *pb = pop + 16 * b;
        int p = 0;
        for (; p + 4 <= npix; p += 4) bnn_tile256_4(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
        for (; p < npix; p++) bnn_tile256_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
    }
}
#endif /* defined(BNN_X86) */
#endif
