/* Bit packing along channels (the convention is in bnn.h): bit = (x < threshold), LSB first,
 * 32 channels per word, tail bits 0.  Pixels are independent: split over threads.
 *
 * Float input can first go through a per-channel affine t = x * scale[ch] + bias[ch]
 * (bnn_bitpack_affine_f32; the product rounded, then the sum, never fused), so that
 * ReActNet's RSign, sign(x - b), is one pass.  The float rows are packed by a kernel
 * (the pattern of every op, see core/internal.h): kernel.h is the contract, reference.h
 * the portable kernel (the semantics), kernels_x86.h (AVX2, AVX-512) and kernels_neon.h
 * (aarch64, armv7) the SIMD ones; select_kernel below picks one from the context's path.  Every
 * one computes the same IEEE products, sums and ordered compares, so the bits are
 * identical on every path.  Integer input is packed by the reference's PACK_WORD.
 * bnn_unpack_f32, the inverse, has its kernels in the same files (bnn_bitpack_kernel.unpack). */
#include <string.h>
#include "../core/internal.h"
#include "kernel.h"
#include "reference.h"
#include "kernels_x86.h"  /* x86-64 builds only */
#include "kernels_neon.h" /* NEON builds only */

size_t bnn_packed_words(int32_t c) { return c <= 0 ? 0 : ((size_t)c + 31) / 32; }

static bnn_bitpack_kernel select_kernel(const bnn_cpu *cpu, int path) {
    (void)cpu; /* each kernel needs only what its path guarantees */
    return BNN_KERNEL_FOR_PATH(bitpack, path);
}

typedef struct {
    const void *x;
    int dtype; /* 0 f32, 1 u8, 2 i8 */
    int32_t c;
    float fthr;
    int32_t ithr;
    const float *scale, *bias; /* f32 only; NULL = 1 / 0 */
    bnn_bitpack_kernel k;      /* f32 only: k.pack */
    uint32_t *out;
} pack_args;

static void pack_task(void *p, int64_t begin, int64_t end) {
    const pack_args *a = p;
    const int32_t c = a->c;
    const size_t words = bnn_packed_words(c);
    if (a->dtype == 0) {
        a->k.pack((const float *)a->x + (size_t)begin * (size_t)c, end - begin, c, a->scale, a->bias, a->fthr,
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
    pack_args a = {x, dtype, c, fthr, ithr, scale, bias, select_kernel(&ctx->cpu, ctx->path), out};
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

typedef struct {
    const uint32_t *x;
    int32_t c;
    bnn_unpack_rows_fn unpack;
    float *out;
} unpack_args;

static void unpack_task(void *p, int64_t begin, int64_t end) {
    const unpack_args *a = p;
    a->unpack(a->x + (size_t)begin * bnn_packed_words(a->c), end - begin, a->c, a->out + (size_t)begin * (size_t)a->c);
}

int bnn_unpack_f32(bnn_ctx *ctx, const uint32_t *x, size_t x_len, int32_t pixels, int32_t c, float *out,
                   size_t out_len) {
    if (!ctx || !x || !out) return BNN_E_NULL;
    if (pixels < 0 || c < 1) return BNN_E_SHAPE;
    size_t words = bnn_packed_words(c), need_in, need_out;
    if (!bnn_mul_ok((size_t)pixels, words, &need_in) || !bnn_mul_ok((size_t)pixels, (size_t)c, &need_out))
        return BNN_E_SHAPE;
    if (x_len < need_in || out_len < need_out) return BNN_E_SIZE;
    unpack_args a = {x, c, select_kernel(&ctx->cpu, ctx->path).unpack, out};
    /* a thread only for >= 64k floats: below that, waking one costs more than the stores */
    bnn_parallel_for(ctx, pixels, 1 + 65536 / c, unpack_task, &a);
    return BNN_OK;
}
