/* x86-64 float bit-packing kernels (see kernel.h):
 *   AVX-512F: VCMPPS into a mask register, 16 channels, masked loads for the tail word;
 *   AVX2: VCMPPS + VMOVMSKPS, 8 channels (the shared vector loop of kernel.h).
 * Unpack (both paths): AVX2, 8 channels a VPSLLVD (kernel.h's BNN_UNPACK_DEF_VEC). */
#ifndef BNN_BITPACK_KERNELS_X86_H
#define BNN_BITPACK_KERNELS_X86_H
#include "../core/internal.h"
#if defined(BNN_X86)
#include <immintrin.h>
#include "kernel.h"
#include "reference.h"

#define BITPACK_AVX512 __attribute__((target("avx512f")))
#define BITPACK_AVX2 __attribute__((target("avx2")))

BITPACK_AVX512 BNN_INLINE void bitpack_pixel_avx512(const float *x, int32_t c, const float *scale, const float *bias,
                                                    float thr, uint32_t *out) {
    const __m512 vt = _mm512_set1_ps(thr);
    const size_t words = bnn_packed_words(c);
    for (size_t wd = 0; wd < words; wd++) {
        uint32_t word = 0;
        for (int h = 0; h < 2; h++) {
            int32_t ch = (int32_t)(32 * wd) + 16 * h, n = c - ch;
            if (n <= 0) break;
            __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
            __m512 v = _mm512_maskz_loadu_ps(m, x + ch);
            if (scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, scale + ch));
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + ch));
            word |= (uint32_t)_mm512_mask_cmp_ps_mask(m, v, vt, _CMP_LT_OQ) << (16 * h);
        }
        out[wd] = word;
    }
}
BNN_PACK_DEF_ROWS(bitpack_rows_avx512, BITPACK_AVX512, bitpack_pixel_avx512)

#define PACK_AVX2_LANES 8
#define PACK_AVX2_VEC __m256
#define PACK_AVX2_SET1 _mm256_set1_ps
#define PACK_AVX2_LOAD _mm256_loadu_ps
#define PACK_AVX2_MUL _mm256_mul_ps
#define PACK_AVX2_ADD _mm256_add_ps
#define PACK_AVX2_LT_BITS(v, t) ((uint32_t)_mm256_movemask_ps(_mm256_cmp_ps((v), (t), _CMP_LT_OQ)))
BNN_PACK_DEF_VEC_PIXEL(bitpack_pixel_avx2, BITPACK_AVX2, PACK_AVX2)
BNN_PACK_DEF_ROWS(bitpack_rows_avx2, BITPACK_AVX2, bitpack_pixel_avx2)

/* unpack: the word in every lane, shifted left by 31 - bit index (VPSLLVD), the sign kept */
BITPACK_AVX2 BNN_INLINE __m256i unpack_avx2_signs(uint32_t word, int q) {
    const __m256i sh = _mm256_sub_epi32(_mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24), _mm256_set1_epi32(8 * q));
    return _mm256_and_si256(_mm256_sllv_epi32(_mm256_set1_epi32((int)word), sh),
                            _mm256_set1_epi32((int)0x80000000u));
}
#define UNPACK_AVX2_LANES 8
#define UNPACK_AVX2_SIGNS unpack_avx2_signs
#define UNPACK_AVX2_OR_ONE(v) _mm256_or_si256((v), _mm256_set1_epi32((int)BNN_UNPACK_ONE))
#define UNPACK_AVX2_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), (v))
BNN_UNPACK_DEF_VEC(unpack_rows_avx2, BITPACK_AVX2, UNPACK_AVX2)

static const bnn_bitpack_kernel bitpack_avx2 = {bitpack_rows_avx2, unpack_rows_avx2};
static const bnn_bitpack_kernel bitpack_avx512 = {bitpack_rows_avx512, unpack_rows_avx2};

#endif /* defined(BNN_X86) */
#endif
