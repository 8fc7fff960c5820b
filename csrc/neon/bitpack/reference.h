/* Portable float bit-packing kernel: plain C, defines the semantics (see kernel.h).  Used
 * on armv6, for the tail words of the vector kernels and for the words in which armv7's
 * NEON kernel meets a tiny value (armv7 NEON flushes denormals to zero); PACK_WORD also
 * packs the integer inputs (bitpack.c) on every path.  The portable unpack writes each
 * float's bits (sign = the bit, then 1.0f). */
#ifndef BNN_BITPACK_REFERENCE_H
#define BNN_BITPACK_REFERENCE_H
#include <string.h>
#include "kernel.h"

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

static void bitpack_pixel_portable(const float *x, int32_t c, const float *scale, const float *bias, float thr,
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

/* np pixels of c < 32 channels: one word each, the same operations */
BNN_INLINE void bitpack_small_portable(const float *x, int64_t np, int32_t c, const float *scale, const float *bias,
                                       float thr, uint32_t *out) {
    for (int64_t p = 0; p < np; p++, x += c) {
        uint32_t w = 0;
        for (int32_t i = 0; i < c; i++) w |= (uint32_t)(affine1(x[i], scale, bias, i) < thr) << i;
        out[p] = w;
    }
}

BNN_PACK_DEF_ROWS(bitpack_rows_portable, , bitpack_pixel_portable)

/* c channels from their words */
static void unpack_pixel_portable(const uint32_t *x, int32_t c, float *out) {
    for (int32_t ch = 0; ch < c; ch++) {
        uint32_t u = BNN_UNPACK_ONE | ((x[ch / 32] >> (ch % 32)) & 1u) << 31;
        memcpy(&out[ch], &u, sizeof u);
    }
}

/* np pixels of c < 32 channels (one word each) */
BNN_INLINE void unpack_small_portable(const uint32_t *x, int64_t np, int32_t c, float *out) {
    for (int64_t p = 0; p < np; p++, out += c)
        for (int32_t ch = 0; ch < c; ch++) {
            uint32_t u = BNN_UNPACK_ONE | ((x[p] >> ch) & 1u) << 31;
            memcpy(&out[ch], &u, sizeof u);
        }
}

static void unpack_rows_portable(const uint32_t *x, int64_t np, int32_t c, float *out) {
    const size_t words = bnn_packed_words(c);
    if (c < 32) {
        unpack_small_portable(x, np, c, out);
        return;
    }
    for (int64_t p = 0; p < np; p++) unpack_pixel_portable(x + (size_t)p * words, c, out + (size_t)p * (size_t)c);
}

static const bnn_bitpack_kernel bitpack_portable = {bitpack_rows_portable, unpack_rows_portable};

#endif
