/* Output transforms of a binary convolution, applied to the integer dot products d of one
 * pixel and a run of output channels [o0, o0 + nc):
 *   INT32: y = d
 *   FLOAT: y = ((float)d * mul[o]) * K[pixel] + add[o]   (float32, in this order; no K: * 1),
 *          then bnn_output_steps over the run
 *   BITS:  bit = flip[o] ? d > threshold[o] : d < threshold[o]  (bit 1 = -1), packed 32 per
 *          word for the next binary layer; o0 is a multiple of 32 and the channels past
 *          out_c stay 0. */
#ifndef BNN_BCONV2D_OUTPUT_TRANSFORM_H
#define BNN_BCONV2D_OUTPUT_TRANSFORM_H
#include <stdint.h>
#include "../core/internal.h" /* BNN_INLINE */
#include "../eltwise/steps.h"

typedef struct {
    int32_t mode;
    const float *mul, *add;
    const int32_t *threshold;
    const uint8_t *flip;
    int32_t n_steps;                       /* FLOAT: output steps, their arrays [step_pix][out_c]: */
    int32_t step_pix;                      /* out_c's parameters repeated for step_pix pixels */
    bnn_ew_step steps[BNN_EW_MAX_STEPS];
} bnn_out_params;

BNN_INLINE void bnn_output_transform(const bnn_out_params *op, const int32_t *d, int nc, int32_t o0,
                                        int32_t out_c, size_t pix, const float *k_scale, void *y) {
    if (op->mode == BNN_OUT_INT32) {
        int32_t *yo = (int32_t *)y + pix * (size_t)out_c + o0;
        for (int j = 0; j < nc; j++) yo[j] = d[j];
    } else if (op->mode == BNN_OUT_FLOAT) {
        float *yo = (float *)y + pix * (size_t)out_c + o0;
        const float *mul = op->mul + o0, *add = op->add + o0;
        if (k_scale) {
            float k = k_scale[pix];
            for (int j = 0; j < nc; j++) {
                float v = (float)d[j] * mul[j];
                v = v * k;
                yo[j] = v + add[j];
            }
        } else {
            for (int j = 0; j < nc; j++) {
                float v = (float)d[j] * mul[j];
                yo[j] = v + add[j];
            }
        }
    } else {
        size_t words = ((size_t)out_c + 31) / 32;
        uint32_t *yo = (uint32_t *)y + pix * words + (size_t)o0 / 32;
        const int32_t *thr = op->threshold + o0;
        const uint8_t *flip = op->flip + o0;
        for (int j0 = 0; j0 < nc; j0 += 32) {
            uint32_t word = 0;
            int n = nc - j0 < 32 ? nc - j0 : 32;
            for (int j = 0; j < n; j++) {
                int32_t v = d[j0 + j], t = thr[j0 + j];
                uint32_t bit = flip[j0 + j] ? (v > t) : (v < t);
                word |= bit << j;
            }
            yo[j0 / 32] = word;
        }
    }
}
/* FLOAT's output steps (eltwise/steps.h: what bnn_eltwise_f32 would do to these floats,
 * the same bits) over the channels [o0, o0 + nc) of npix consecutive output pixels from
 * pix on, after bnn_output_transform wrote them; r: the residual (float NHWC like y) when a
 * step is BNN_EW_ADD, else NULL.  When the run covers every channel (nc == out_c) and the
 * parameters are repeated for npix pixels, the pixels are one contiguous row of npix * nc
 * floats: one pass per step instead of one per pixel (narrow layers: a row of 16-64 floats
 * is mostly loop overhead).  BNN_DEF_OUTPUT_STEPS(name, ew_steps) defines it with the steps
 * of ew_steps (steps.h's bnn_ew_steps, or armv7's bnn_ew_steps_neon). */
#define BNN_DEF_OUTPUT_STEPS(name, ew_steps)                                                                          \
    BNN_INLINE void name(const bnn_out_params *op, int npix, int nc, int32_t o0, int32_t out_c, size_t pix,           \
                         const float *r, void *y) {                                                                    \
        float *yo = (float *)y + pix * (size_t)out_c + o0;                                                             \
        const float *ro = r ? r + pix * (size_t)out_c + o0 : NULL;                                                     \
        if (nc == out_c && npix <= op->step_pix)                                                                       \
            ew_steps(op->steps, op->n_steps, yo, ro, 1, npix * nc, (size_t)npix * nc, 0);                              \
        else                                                                                                           \
            ew_steps(op->steps, op->n_steps, yo, ro, npix, nc, (size_t)out_c, o0);                                     \
    }

BNN_DEF_OUTPUT_STEPS(bnn_output_steps, bnn_ew_steps)
#endif
