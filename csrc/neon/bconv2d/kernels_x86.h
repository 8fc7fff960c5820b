/* x86-64 binary-convolution kernels (see kernel.h), chosen at run time from the CPU:
 *   AVX-512F + VPOPCNTDQ: one zmm = one input word for 16 output channels;
 *     per 512 binary MACs: VPXORD (activation broadcast from memory) + VPOPCNTD + VPADDD;
 *     tile 8 pixels x 2 blocks = 16 accumulators.
 *   AVX2: nibble-table popcount (VPSHUFB) on nibble-split operands (kernel.h), summed in
 *     8-bit lanes for up to 31 input words, then widened to 32 bits (VPMADDUBSW, VPMADDWD). */
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

/* Nibble-split operands (kernel.h): per input word c, the activation's low and high nibble
 * words are broadcast from x[2c], x[2c + 1], the weights' from w[32c .. 32c + 15] (low, 16
 * channels) and w[32c + 16 .. 32c + 31] (high); per vector of 8 channels: 2 XOR, 2 table
 * lookups, 2 adds (the plain operands needed 2 ANDs and a shift more). */
#define BNN_DEF_TILE256(P)                                                                     \
    BNN_AVX2 void bnn_tile256_##P(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, \
                                  int32_t *pop) {                                              \
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, \
                                             1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);        \
        const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);              \
        __m256i acc[P][2], tot[P][2];                                                          \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 2) acc[p][v] = tot[p][v] = _mm256_setzero_si256();  \
        const ptrdiff_t ps = g->pix_stride;                                                    \
        const int row_words = g->kw * g->cw; /* a kernel row's taps: one contiguous run */     \
        int budget = 2 * BNN_AVX2_FLUSH;      /* split words until the 8-bit lanes are widened */ \
        for (int ky = 0; ky < g->kh; ky++) {                                                   \
            const uint32_t *xr = x + ky * g->row_stride;                                       \
            const uint32_t *wk = w + (size_t)ky * row_words * 16;                              \
            for (int c0 = 0; c0 < row_words;) {                                                \
                const int c1 = row_words - c0 < budget ? row_words : c0 + budget;              \
                for (int c = c0; c < c1; c += 2) { /* no branch inside: acc stays in registers */ \
                    const uint32_t *wc = wk + 16 * c;                                          \
                    __m256i wl[2], wh[2];                                                      \
                    BNN_UNROLLED(v, 2) {                                                       \
                        wl[v] = _mm256_loadu_si256((const __m256i *)(wc + 8 * v));             \
                        wh[v] = _mm256_loadu_si256((const __m256i *)(wc + 16 + 8 * v));        \
                    }                                                                          \
                    BNN_UNROLLED(p, P) {                                                       \
                        __m256i lo = _mm256_set1_epi32((int)xr[p * ps + c]);                   \
                        __m256i hi = _mm256_set1_epi32((int)xr[p * ps + c + 1]);               \
                        BNN_UNROLLED(v, 2) {                                                   \
                            __m256i tl = _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo, wl[v])); \
                            __m256i th = _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi, wh[v])); \
                            acc[p][v] = _mm256_add_epi8(acc[p][v], _mm256_add_epi8(tl, th));   \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
                budget -= c1 - c0;                                                             \
                c0 = c1;                                                                       \
                if (budget == 0) {                                                             \
                    BNN_AVX2_WIDEN(P)                                                          \
                    budget = 2 * BNN_AVX2_FLUSH;                                               \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BNN_AVX2_WIDEN(P)                                                                      \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 2)                                                  \
            _mm256_storeu_si256((__m256i *)(pop + p * BNN_BCONV_POP_STRIDE + 8 * v), tot[p][v]); \
    }

BNN_DEF_TILE256(3) /* 6 accumulators + 4 weight vectors + the table: 16 registers with the temporaries */
BNN_DEF_TILE256(2)
BNN_DEF_TILE256(1)

BNN_AVX2_FN void bconv2d_avx2(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks,
                              int npix, int32_t *pop) {
    for (int b = 0; b < nblocks; b++) {
        const uint32_t *wb = w + b * g->wblock_stride;
        int32_t *pb = pop + 16 * b;
        int p = 0;
        for (; p + 3 <= npix; p += 3) bnn_tile256_3(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
        if (p + 2 <= npix) {
            bnn_tile256_2(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
            p += 2;
        }
        if (p < npix) bnn_tile256_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
    }
}
#endif /* defined(BNN_X86) */
#endif
