/* NEON float-convolution kernel (see kernel.h) for aarch64 and armv7: a block of OB = 8
 * channels is two q registers; a tile is FC_NEON_P pixels times up to 2 blocks (aarch64,
 * 32 q registers: 4 x 2 x 2 = 16 accumulators; armv7, 16 q registers: 2 x 2 x 2 = 8); a
 * call runs up to FC_RUN pixels, tile after tile; a depthwise tile is FC_NEON_DW_P pixels
 * times 4 channels.  The tiles are kernel.h's template over
 * the FC_NEON_* operations below.  It does exactly
 * the reference's operations (VFMA where the reference fuses, VMLA where it does not), so
 * it is only built where the two agree (else the reference serves); it then gives the same
 * bits (armv7 NEON flushes denormals to zero; the scalar VFP code does not). */
#ifndef BNN_FCONV2D_KERNELS_NEON_H
#define BNN_FCONV2D_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include "kernel.h"
#include "reference.h"
#if defined(__FP_FAST_FMAF) == defined(__ARM_FEATURE_FMA)
#include <arm_neon.h>

#if defined(__aarch64__)
#define FC_NEON_P 4
#else
#define FC_NEON_P 2
#endif
#define FC_NEON_GB 2 /* blocks per work item and tile */

#define FC_NEON_INLINE BNN_INLINE
#define FC_NEON_FN BNN_INLINE /* the tiles function: inlined into the run */
#define FC_NEON_VEC float32x4_t
#define FC_NEON_LANES 4
#define FC_NEON_VPB 2
#define FC_NEON_LOAD vld1q_f32
#define FC_NEON_BCAST(x, i) vdupq_n_f32((x)[i])
#if defined(__ARM_FEATURE_FMA)
#define FC_NEON_FMADD(x, w, acc) vfmaq_f32((acc), (w), (x))
#else
#define FC_NEON_FMADD(x, w, acc) vmlaq_f32((acc), (w), (x))
#endif
#define FC_NEON_STORE(y, acc, b, nc) fc_neon_store((y), (acc)[2 * (b)], (acc)[2 * (b) + 1], (nc))

BNN_INLINE void fc_neon_store(float *y, float32x4_t v0, float32x4_t v1, int nc) {
    if (nc >= OB) {
        vst1q_f32(y, v0);
        vst1q_f32(y + 4, v1);
    } else {
        float tmp[OB];
        vst1q_f32(tmp, v0);
        vst1q_f32(tmp + 4, v1);
        for (int i = 0; i < nc; i++) y[i] = tmp[i];
    }
}

FC_DEF_ISA_TILES(fconv2d_neon_tiles, NEON, FC_NEON_P, FC_NEON_GB)
FC_DEF_RUN_KERNEL(fconv2d_neon_run, , fconv2d_neon_tiles, FC_NEON_P)

/* depthwise: FC_NEON_DW_P pixels x one q register of channels (the last ones through a
 * zeroed copy) */
#define FC_NEON_DW_P 8
BNN_INLINE float32x4_t fc_neon_loadn(const float *p, int n) {
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; i++) tmp[i] = p[i];
    return vld1q_f32(tmp);
}
BNN_INLINE void fc_neon_storen(float *y, float32x4_t v, int n) {
    float tmp[4];
    vst1q_f32(tmp, v);
    for (int i = 0; i < n; i++) y[i] = tmp[i];
}
#define FC_NEON_STORE1 vst1q_f32
#define FC_NEON_LOAD_T(p, n) vld1q_f32(p)
#define FC_NEON_LOADN_T fc_neon_loadn
#define FC_NEON_STOREN fc_neon_storen
FC_DEF_DW(fconv2d_dw_neon, , NEON, FC_NEON_DW_P)

static const bnn_fconv2d_kernel fconv2d_neon = {fconv2d_neon_run, FC_RUN, FC_NEON_GB, fconv2d_dw_neon, FC_NEON_DW_P};

#else
#define fconv2d_neon fconv2d_portable
#endif
#endif /* defined(BNN_HAVE_NEON) */
#endif
