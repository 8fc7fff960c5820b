/* The contract every binary-convolution kernel (reference.h, kernels_*.h) implements;
 * bconv2d.c's select_kernel picks one per call from the context's path.
 *
 * Weights are blocked at layer creation: blocks of 16 output channels, each block laid
 * out [K][16] with K = kernel_h * kernel_w * words(in_c) in OHWI order, so one vector
 * holds the same input word for 4 / 8 / 16 output channels; the activation word is
 * broadcast and one popcount per lane accumulates per output channel (no horizontal sums
 * in the inner loop).  Output channels past out_c are zero weights whose results are
 * dropped.
 *
 * A kernel computes, for npix <= BNN_BCONV_PMAX output pixels of one output row and
 * nblocks <= BNN_BCONV_BMAX blocks:
 *     pop[p * BNN_BCONV_POP_STRIDE + 16 * b + j] =
 *         sum over (ky, kx, c) of popcount(x_p[ky][kx][c] XOR w[b][(ky, kx, c)][j])
 * where pixel p's patch starts at x + p * pix_stride, kernel row ky at + ky * row_stride,
 * kernel column kx at + kx * cw.  The input is already padded (padding bits are 0 = +1);
 * the zero-padding correction and the output transform are applied by the caller.
 */
#ifndef BNN_BCONV2D_KERNEL_H
#define BNN_BCONV2D_KERNEL_H
#include <stddef.h>
#include <stdint.h>
#include "../core/internal.h"

#define BNN_BCONV_PMAX 8
#define BNN_BCONV_BMAX 4
#define BNN_BCONV_POP_STRIDE (16 * BNN_BCONV_BMAX)

typedef struct {
    ptrdiff_t pix_stride;    /* words between neighbouring output pixels' patches */
    ptrdiff_t row_stride;    /* words between input rows */
    ptrdiff_t wblock_stride; /* words between weight blocks = K * 16 */
    int kh, kw, cw;
} bnn_bconv_geom;

typedef void (*bnn_bconv2d_kernel)(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w,
                                   int nblocks, int npix, int32_t *pop);

/* Nibble-split operands (x86 AVX2, whose popcount is a 16-entry table lookup per nibble):
 * every word v of the input and of the blocked weights is stored as the two words
 * bnn_nibbles_lo(v), bnn_nibbles_hi(v), side by side, so that the nibbles of x XOR w are
 * lo(x) XOR lo(w) and hi(x) XOR hi(w), with no masking or shifting in the inner loop.  A
 * kernel on split operands computes the same pop; its geometry counts split words
 * (pix_stride, row_stride, wblock_stride and cw twice the plain ones). */
static inline uint32_t bnn_nibbles_lo(uint32_t v) { return v & 0x0F0F0F0Fu; }
static inline uint32_t bnn_nibbles_hi(uint32_t v) { return (v >> 4) & 0x0F0F0F0Fu; }

#endif
