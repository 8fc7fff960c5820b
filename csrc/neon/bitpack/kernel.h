/* The contract every float bit-packing kernel (reference.h, kernels_*.h) implements;
 * bitpack.c's select_kernel picks one per call from the context's path.
 *
 * A kernel (its pack rows) packs np pixels of c float channels, x[np][c], into out[np][words(c)]:
 * bit i of word w of a pixel is (t < thr) for its channel ch = 32 * w + i, where t is x,
 * x * scale[ch], x + bias[ch] or x * scale[ch] + bias[ch] (scale / bias NULL: left out;
 * the product rounded, then the sum, never fused), the compare ordered (NaN: bit 0), the
 * bits past c 0.  Every kernel computes exactly these IEEE operations, so the bits are the
 * same on every path. */
#ifndef BNN_BITPACK_KERNEL_H
#define BNN_BITPACK_KERNEL_H
#include <stddef.h>
#include <stdint.h>
#include "../core/internal.h"

typedef void (*bnn_pack_rows_fn)(const float *x, int64_t np, int32_t c, const float *scale, const float *bias,
                                 float thr, uint32_t *out);

/* The inverse (bnn_unpack_f32): np pixels of packed bits x[np][words(c)] to
 * out[np][c] = -1.0f where the bit is 1, +1.0f where it is 0 (no arithmetic: the same bits
 * on every path). */
typedef void (*bnn_unpack_rows_fn)(const uint32_t *x, int64_t np, int32_t c, float *out);

typedef struct {
    bnn_pack_rows_fn pack;
    bnn_unpack_rows_fn unpack;
} bnn_bitpack_kernel;

/* The float of a bit: +1.0f (0x3f800000) with the bit as its sign. */
#define BNN_UNPACK_ONE 0x3f800000u

/* An unpack kernel for a vector ISA of ISA##_LANES 32-bit lanes (ggml style): ISA##_IVEC,
 * ISA##_SIGNS(word, q) (lane i: bit ISA##_LANES * q + i of word moved to bit 31, the
 * others 0), ISA##_OR_ONE(v) (v | BNN_UNPACK_ONE in every lane) and ISA##_STORE(p, v)
 * (the lanes as floats).  The tail word's channels are the reference's
 * (unpack_pixel_portable, reference.h). */
#define BNN_UNPACK_DEF_VEC(name, ATTR, ISA)                                                         \
    ATTR static void name(const uint32_t *x, int64_t np, int32_t c, float *out) {                  \
        const size_t words = bnn_packed_words(c), full = (size_t)c / 32;                           \
        if (c < 32) {                                                                              \
            unpack_small_portable(x, np, c, out);                                                  \
            return;                                                                                \
        }                                                                                          \
        for (int64_t p = 0; p < np; p++) {                                                         \
            const uint32_t *xp = x + (size_t)p * words;                                            \
            float *op = out + (size_t)p * (size_t)c;                                               \
            for (size_t wd = 0; wd < full; wd++)                                                   \
                for (int q = 0; q < 32 / ISA##_LANES; q++)                                         \
                    ISA##_STORE(op + 32 * wd + ISA##_LANES * q, ISA##_OR_ONE(ISA##_SIGNS(xp[wd], q))); \
            if (full < words) unpack_pixel_portable(xp + full, c - 32 * (int32_t)full, op + 32 * full); \
        }                                                                                          \
    }

/* A kernel from its function of one pixel, pixel(x, c, scale, bias, thr, out): np pixels in
 * turn; pixels of fewer than 32 channels (one tail word each) by the reference's
 * bitpack_small_portable (reference.h), without a call per pixel. */
#define BNN_PACK_DEF_ROWS(name, ATTR, pixel)                                                         \
    ATTR static void name(const float *x, int64_t np, int32_t c, const float *scale, const float *bias, \
                          float thr, uint32_t *out) {                                                \
        const size_t words = bnn_packed_words(c);                                                    \
        if (c < 32) {                                                                                \
            bitpack_small_portable(x, np, c, scale, bias, thr, out);                                 \
            return;                                                                                  \
        }                                                                                            \
        for (int64_t p = 0; p < np; p++)                                                             \
            pixel(x + (size_t)p * (size_t)c, c, scale, bias, thr, out + (size_t)p * words);          \
    }

/* The function of one pixel for a vector ISA of ISA##_LANES floats (AVX2, NEON; ggml style:
 * kernels_<isa>.h maps the operations to its intrinsics): ISA##_VEC (the type), ISA##_SET1(f),
 * ISA##_LOAD(p), ISA##_MUL(a, b), ISA##_ADD(a, b), ISA##_LT_BITS(v, t) (ISA##_LANES bits,
 * bit i = v[i] < t[i], ordered).  Each full word is 32 / ISA##_LANES such compares; the tail
 * word (c % 32 channels) is the reference's (bitpack_pixel_portable, reference.h). */
#define BNN_PACK_DEF_VEC_PIXEL(name, ATTR, ISA)                                                     \
    ATTR BNN_INLINE void name(const float *x, int32_t c, const float *scale, const float *bias, float thr, \
                              uint32_t *out) {                                                     \
        const ISA##_VEC vt = ISA##_SET1(thr);                                                      \
        const size_t words = bnn_packed_words(c);                                                  \
        for (size_t wd = 0; wd < words; wd++) {                                                    \
            int32_t ch0 = (int32_t)(32 * wd);                                                      \
            if (c - ch0 < 32) { /* tail word */                                                    \
                bitpack_pixel_portable(x + ch0, c - ch0, scale ? scale + ch0 : NULL, bias ? bias + ch0 : NULL, \
                                       thr, out + wd);                                             \
                continue;                                                                          \
            }                                                                                      \
            uint32_t word = 0;                                                                     \
            for (int q = 0; q < 32 / ISA##_LANES; q++) {                                           \
                int32_t ch = ch0 + ISA##_LANES * q;                                                \
                ISA##_VEC v = ISA##_LOAD(x + ch);                                                  \
                if (scale) v = ISA##_MUL(v, ISA##_LOAD(scale + ch));                               \
                if (bias) v = ISA##_ADD(v, ISA##_LOAD(bias + ch));                                 \
                word |= ISA##_LT_BITS(v, vt) << (ISA##_LANES * q);                                 \
            }                                                                                      \
            out[wd] = word;                                                                        \
        }                                                                                          \
    }

#endif
