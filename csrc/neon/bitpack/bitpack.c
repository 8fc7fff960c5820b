/* Bit packing along channels (the convention is in bnn.h): bit = (x < threshold), LSB first,
 * 32 channels per word, tail bits 0.  Pixels are independent: split over threads.
 *
 * Float input can first go through a per-channel affine t = x * scale[ch] + bias[ch]
 * (bnn_bitpack_affine_f32; the product rounded, then the sum, never fused), so that
 * ReActNet's RSign, sign(x - b), is one pass.  The float rows are packed by a kernel per
 * path: portable C, AVX2 (VCMPPS + VMOVMSKPS, 8 channels), AVX-512 (VCMPPS into a mask
 * register, 16 channels), aarch64 NEON (FCMGT + weighted add across, 4 channels).  Every
 * one computes the same IEEE products, sums and ordered compares (NaN never below), so the
 * bits are identical on every path.  armv7 NEON flushes denormals to zero, so armhf keeps
 * the portable kernel. */
#include <string.h>
#include "../core/internal.h"
#if defined(BNN_X86)
#include <immintrin.h>
#endif
#if defined(BNN_HAVE_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define PACK_NEON 1
#endif

size_t bnn_packed_words(int32_t c) { return c <= 0 ? 0 : ((size_t)c + 31) / 32; }

/* Packs np pixels of c float channels, each into words(c) words. */
typedef void (*pack_row_fn)(const float *x, int64_t np, int32_t c, const float *scale, const float *bias,
                            float thr, uint32_t *out);

typedef struct {
    const void *x;
    int dtype; /* 0 f32, 1 u8, 2 i8 */
    int32_t c;
    float fthr;
    int32_t ithr;
    const float *scale, *bias; /* f32 only; NULL = 1 / 0 */
    pack_row_fn row;
    uint32_t *out;
} pack_args;

/* One word from up to 32 values; n <= 32.  Written as a loop the compilers vectorise. */
#define PACK_WORD(T, x, n, thr, out)                                  \
    do {                                                              \
        uint32_t w_ = 0;                                              \
        for (int i_ = 0; i_ < (n); i_++) w_ |= (uint32_t)((x)[i_] < (thr)) << i_; \
        *(out) = w_;                                                  \
    } while (0)

/* The affine of one value, rounded as bnn.h says (two statements: never contracted). */
static inline float affine1(float x, const float *scale, const float *bias, int32_t ch) {
    float m = scale ? x * scale[ch] : x;
    float t = bias ? m + bias[ch] : m;
    return t;
}

static void pixel_portable(const float *x, int32_t c, const float *scale, const float *bias, float thr,
                          uint32_t *out) {
    const size_t words = bnn_packed_words(c);
    for (size_t wd = 0; wd < words; wd++) {
        int n = (int)(c - 32 * (int32_t)wd);
        if (n > 32) n = 32;
        const float *xw = x + 32 * wd;
        if (scale || bias) {
            float t[32];
            for (int i = 0; i < n; i++) t[i] = affine1(xw[i], scale, bias, (int32_t)(32 * wd) + i);
            xw = t;
            if (n == 32) PACK_WORD(float, xw, 32, thr, out + wd);
            else PACK_WORD(float, xw, n, thr, out + wd);
        } else if (n == 32) PACK_WORD(float, xw, 32, thr, out + wd);
        else PACK_WORD(float, xw, n, thr, out + wd);
    }
}

/* One pixel's words, then the same over np pixels. */
#define PACK_ROWS(name, attr)                                                                   \
    attr static void name(const float *x, int64_t np, int32_t c, const float *scale, const float *bias, \
                          float thr, uint32_t *out) {                                           \
        const size_t words = bnn_packed_words(c);                                               \
        for (int64_t p = 0; p < np; p++)                                                        \
            name##_pixel(x + (size_t)p * (size_t)c, c, scale, bias, thr, out + (size_t)p * words); \
    }

#define row_portable_pixel pixel_portable
PACK_ROWS(row_portable, )

#if defined(BNN_X86)
#define ATTR_AVX512 __attribute__((target("avx512f")))
#define ATTR_AVX2 __attribute__((target("avx2")))

ATTR_AVX512 __attribute__((always_inline)) static inline void row_avx512_pixel(const float *x, int32_t c,
                                                                              const float *scale, const float *bias,
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
PACK_ROWS(row_avx512, ATTR_AVX512)

ATTR_AVX2 __attribute__((always_inline)) static inline void row_avx2_pixel(const float *x, int32_t c,
                                                                          const float *scale, const float *bias,
                                                                          float thr, uint32_t *out) {
    const __m256 vt = _mm256_set1_ps(thr);
    const size_t words = bnn_packed_words(c);
    for (size_t wd = 0; wd < words; wd++) {
        int32_t ch0 = (int32_t)(32 * wd);
        if (c - ch0 < 32) { /* tail word */
            pixel_portable(x + ch0, c - ch0, scale ? scale + ch0 : NULL, bias ? bias + ch0 : NULL, thr, out + wd);
            continue;
        }
        uint32_t word = 0;
        for (int q = 0; q < 4; q++) {
            int32_t ch = ch0 + 8 * q;
            __m256 v = _mm256_loadu_ps(x + ch);
            if (scale) v = _mm256_mul_ps(v, _mm256_loadu_ps(scale + ch));
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + ch));
            word |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, vt, _CMP_LT_OQ)) << (8 * q);
        }
        out[wd] = word;
    }
}
PACK_ROWS(row_avx2, ATTR_AVX2)
#endif

#if defined(PACK_NEON)
static inline void row_neon_pixel(const float *x, int32_t c, const float *scale, const float *bias, float thr,
                                  uint32_t *out) {
    static const uint32_t wts[4] = {1, 2, 4, 8};
    const uint32x4_t vw = vld1q_u32(wts);
    const float32x4_t vt = vdupq_n_f32(thr);
    const size_t words = bnn_packed_words(c);
    for (size_t wd = 0; wd < words; wd++) {
        int32_t ch0 = (int32_t)(32 * wd);
        if (c - ch0 < 32) { /* tail word */
            pixel_portable(x + ch0, c - ch0, scale ? scale + ch0 : NULL, bias ? bias + ch0 : NULL, thr, out + wd);
            continue;
        }
        uint32_t word = 0;
        for (int q = 0; q < 8; q++) {
            int32_t ch = ch0 + 4 * q;
            float32x4_t v = vld1q_f32(x + ch);
            if (scale) v = vmulq_f32(v, vld1q_f32(scale + ch));
            if (bias) v = vaddq_f32(v, vld1q_f32(bias + ch));
            word |= vaddvq_u32(vandq_u32(vcltq_f32(v, vt), vw)) << (4 * q);
        }
        out[wd] = word;
    }
}
PACK_ROWS(row_neon, )
#endif

static pack_row_fn row_for(int path) {
    switch (path) {
#if defined(BNN_X86)
    case BNN_PATH_AVX512: return row_avx512;
    case BNN_PATH_AVX2: return row_avx2;
#endif
#if defined(PACK_NEON)
    case BNN_PATH_NEON: return row_neon;
#endif
    default: return row_portable;
    }
}

static void pack_task(void *p, int64_t begin, int64_t end) {
    const pack_args *a = p;
    const int32_t c = a->c;
    const size_t words = bnn_packed_words(c);
    if (a->dtype == 0) {
        a->row((const float *)a->x + (size_t)begin * (size_t)c, end - begin, c, a->scale, a->bias, a->fthr,
               a->out + (size_t)begin * words);
        return;
    }
    for (int64_t px = begin; px < end; px++) {
        uint32_t *o = a->out + (size_t)px * words;
        for (size_t wd = 0; wd < words; wd++) {
            int n = (int)(c - 32 * (int32_t)wd);
            if (n > 32) n = 32;
            size_t off = (size_t)px * (size_t)c + 32 * wd;
            int32_t t = a->ithr;
            if (a->dtype == 1) {
                const uint8_t *x = (const uint8_t *)a->x + off;
                PACK_WORD(int32_t, x, n, t, o + wd);
            } else {
                const int8_t *x = (const int8_t *)a->x + off;
                PACK_WORD(int32_t, x, n, t, o + wd);
            }
        }
    }
}

static int bitpack_any(bnn_ctx *ctx, int dtype, const void *x, size_t x_len, int32_t pixels, int32_t c,
                       float fthr, int32_t ithr, const float *scale, const float *bias, size_t param_len,
                       uint32_t *out, size_t out_len) {
    if (!ctx || !x || !out) return BNN_E_NULL;
    if (pixels < 0 || c < 1) return BNN_E_SHAPE;
    size_t need_in, need_out;
    if (!bnn_mul_ok((size_t)pixels, (size_t)c, &need_in)
        || !bnn_mul_ok((size_t)pixels, bnn_packed_words(c), &need_out))
        return BNN_E_SHAPE;
    if (x_len < need_in || out_len < need_out) return BNN_E_SIZE;
    if ((scale || bias) && param_len < (size_t)c) return BNN_E_SIZE;
    pack_args a = {x, dtype, c, fthr, ithr, scale, bias, row_for(ctx->path), out};
    int64_t grain = 1 + 4096 / c;
    bnn_parallel_for(ctx, pixels, grain, pack_task, &a);
    return BNN_OK;
}

int bnn_bitpack_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c, float threshold,
                    uint32_t *out, size_t out_len) {
    return bitpack_any(ctx, 0, x, x_len, pixels, c, threshold, 0, NULL, NULL, 0, out, out_len);
}
int bnn_bitpack_affine_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c,
                           const float *scale, const float *bias, size_t param_len, float threshold,
                           uint32_t *out, size_t out_len) {
    return bitpack_any(ctx, 0, x, x_len, pixels, c, threshold, 0, scale, bias, param_len, out, out_len);
}
int bnn_bitpack_u8(bnn_ctx *ctx, const uint8_t *x, size_t x_len, int32_t pixels, int32_t c, int32_t zero_point,
                   uint32_t *out, size_t out_len) {
    return bitpack_any(ctx, 1, x, x_len, pixels, c, 0.0f, zero_point, NULL, NULL, 0, out, out_len);
}
int bnn_bitpack_i8(bnn_ctx *ctx, const int8_t *x, size_t x_len, int32_t pixels, int32_t c, int32_t zero_point,
                   uint32_t *out, size_t out_len) {
    return bitpack_any(ctx, 2, x, x_len, pixels, c, 0.0f, zero_point, NULL, NULL, 0, out, out_len);
}

int bnn_unpack_f32(const uint32_t *x, size_t x_len, int32_t pixels, int32_t c, float *out, size_t out_len) {
    if (!x || !out) return BNN_E_NULL;
    if (pixels < 0 || c < 1) return BNN_E_SHAPE;
    size_t words = bnn_packed_words(c), need_in, need_out;
    if (!bnn_mul_ok((size_t)pixels, words, &need_in) || !bnn_mul_ok((size_t)pixels, (size_t)c, &need_out))
        return BNN_E_SHAPE;
    if (x_len < need_in || out_len < need_out) return BNN_E_SIZE;
    for (size_t p = 0; p < (size_t)pixels; p++)
        for (int32_t ch = 0; ch < c; ch++)
            out[p * (size_t)c + ch] = ((x[p * words + ch / 32] >> (ch % 32)) & 1u) ? -1.0f : 1.0f;
    return BNN_OK;
}
