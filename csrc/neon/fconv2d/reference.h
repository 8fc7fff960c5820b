/* Portable float-convolution kernel: plain C, defines the semantics (see kernel.h).  Its
 * multiply-add is fused where the compiler says fmaf is fast (the hardware has it:
 * aarch64, armv7 with VFPv4), separate multiply and add otherwise (x86-64, armv6). */
#ifndef BNN_FCONV2D_REFERENCE_H
#define BNN_FCONV2D_REFERENCE_H
#include <math.h>
#include <string.h>
#include "kernel.h"

#define FC_PX 4 /* output pixels per tile */

#if defined(__FP_FAST_FMAF)
#define MADD(acc, a, b) fmaf((a), (b), (acc))
#else
#define MADD(acc, a, b) ((acc) + (a) * (b))
#endif

/* np (FC_PX or 1: a constant, so that the compiler unrolls the pixel loop) pixels x one block */
BNN_INLINE void tile_portable(const fc_tile *t, int np) {
    float acc[FC_PX][OB];
    for (int p = 0; p < np; p++)
        for (int o = 0; o < OB; o++) acc[p][o] = t->bias[o];
    for (int ky = 0; ky < t->nky; ky++)
        for (int kx = 0; kx < t->nkx; kx++) {
            const float *xr = t->xs + (size_t)ky * t->xrow + (size_t)kx * t->xcol;
            const float *wr = t->ws + (size_t)ky * t->wrow + (size_t)kx * t->wcol;
            for (int j = 0; j < t->nj; j++) {
                const float *wv = wr + (size_t)j * OB;
                for (int p = 0; p < np; p++) {
                    float xv = xr[(size_t)p * t->xstep + (size_t)j];
                    for (int o = 0; o < OB; o++) acc[p][o] = MADD(acc[p][o], xv, wv[o]);
                }
            }
        }
    for (int p = 0; p < np; p++) memcpy(t->ys + (size_t)p * t->ystep, acc[p], (size_t)t->nc * sizeof(float));
}

/* np <= FC_PX pixels as one full tile, else one by one; nb is 1 (gb 1) */
BNN_INLINE void fconv2d_portable_tiles(const fc_tile *t0, int np, int nb) {
    (void)nb;
    if (np == FC_PX) {
        tile_portable(t0, FC_PX);
        return;
    }
    fc_tile t = *t0;
    for (int p = 0; p < np; p++, t.xs += t.xstep, t.ys += t.ystep) tile_portable(&t, 1);
}

FC_DEF_RUN_KERNEL(fconv2d_portable_run, , fconv2d_portable_tiles, FC_PX)

/* depthwise: each pixel, each channel, in the order of kernel.h */
static void fconv2d_dw_portable(const fc_dw_tile *t, int np) {
    for (int p = 0; p < np; p++) {
        const float *xp = t->xs + (size_t)p * t->xstep;
        float *yp = t->ys + (size_t)p * t->ystep;
        for (int c = 0; c < t->nc; c++) {
            float acc = t->bias[c];
            for (int ky = 0; ky < t->nky; ky++)
                for (int kx = 0; kx < t->nkx; kx++)
                    acc = MADD(acc, xp[(size_t)ky * t->xrow + (size_t)kx * t->xcol + (size_t)c],
                               t->ws[(size_t)ky * t->wrow + (size_t)kx * t->wcol + (size_t)c]);
            yp[c] = acc;
        }
    }
}

static const bnn_fconv2d_kernel fconv2d_portable = {fconv2d_portable_run, FC_RUN, 1, fconv2d_dw_portable, 1};

#endif
