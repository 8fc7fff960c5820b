/* Portable binary-convolution kernel: plain C, defines the semantics (see kernel.h).
 * Used on armv6 (Pi 1 / Zero) and anything without a SIMD path. */
#ifndef BNN_BCONV2D_REFERENCE_H
#define BNN_BCONV2D_REFERENCE_H
#include "kernel.h"

static inline uint32_t bnn_popcount32(uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    return (v * 0x01010101u) >> 24;
}

static void bconv2d_portable(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks, int npix,
                             int32_t *pop) {
    for (int p = 0; p < npix; p++) {
        const uint32_t *xp = x + p * g->pix_stride;
        for (int b = 0; b < nblocks; b++) {
            const uint32_t *wb = w + b * g->wblock_stride;
            uint32_t acc[16] = {0};
            for (int ky = 0; ky < g->kh; ky++)
                for (int kx = 0; kx < g->kw; kx++) {
                    const uint32_t *xr = xp + ky * g->row_stride + kx * g->cw;
                    const uint32_t *wk = wb + (size_t)(ky * g->kw + kx) * g->cw * 16;
                    for (int c = 0; c < g->cw; c++) {
                        uint32_t a = xr[c];
                        for (int j = 0; j < 16; j++) acc[j] += bnn_popcount32(a ^ wk[16 * c + j]);
                    }
                }
            for (int j = 0; j < 16; j++) pop[p * BNN_BCONV_POP_STRIDE + 16 * b + j] = (int32_t)acc[j];
        }
    }
}
#endif
