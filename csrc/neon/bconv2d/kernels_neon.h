/* NEON binary-convolution kernels (see kernel.h) for aarch64 and armv7 (-mfpu=neon-vfpv4).
 * One q register = one input word for 4 output channels; per 128 binary MACs:
 *   EOR (broadcast activation ^ weights), CNT (bytes), UADALP (byte pairs into 16-bit lanes).
 * The 16-bit lanes gain at most 16 per word, so they are widened (UADDLP / UADALP) into
 * 32-bit totals every BNN_NEON_FLUSH words.
 * Tiles: aarch64 (32 q registers): 4 pixels x 16 channels = 16 accumulators;
 *        armv7 (16 q registers):   2 pixels x 16 channels = 8 accumulators. */
#ifndef BNN_BCONV2D_KERNELS_NEON_H
#define BNN_BCONV2D_KERNELS_NEON_H
#include "../core/internal.h"
#if defined(BNN_HAVE_NEON)
#include <arm_neon.h>
#include "kernel.h"

#define BNN_NEON_FLUSH 2048

/* Broadcast one activation word and advance the pointer: one LD1R with post-increment on
 * aarch64 (compilers otherwise emit LDR + DUP with a shared index register). */
static inline uint32x4_t bnn_ld1r_post(const uint32_t **p) {
#if defined(__aarch64__) && defined(__GNUC__)
    uint32x4_t a;
    __asm__("ld1r {%0.4s}, [%1], #4" : "=w"(a), "+r"(*p) : "m"(**p));
    return a;
#else
    return vld1q_dup_u32((*p)++);
#endif
}

/* acc (16-bit lanes) into tot (32-bit lanes), for every accumulator of a P-pixel tile */
#define BNN_NEON_WIDEN(P)                                                                      \
    BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                    \
        tot[p][v] = vpadalq_u16(tot[p][v], acc[p][v]);                                         \
        acc[p][v] = vdupq_n_u16(0);                                                            \
    }

#define BNN_DEF_TILE_NEON(P)                                                                   \
    BNN_INLINE void bnn_tile_neon_##P(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, \
                                      int32_t *pop) {                                          \
        uint16x8_t acc[P][4];                                                                  \
        uint32x4_t tot[P][4];                                                                  \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                \
            acc[p][v] = vdupq_n_u16(0);                                                        \
            tot[p][v] = vdupq_n_u32(0);                                                        \
        }                                                                                      \
        int steps = 0;                                                                         \
        const ptrdiff_t ps = g->pix_stride;                                                    \
        for (int ky = 0; ky < g->kh; ky++)                                                     \
            for (int kx = 0; kx < g->kw; kx++) {                                               \
                const uint32_t *xr[P];                                                         \
                BNN_UNROLLED(p, P) xr[p] = x + ky * g->row_stride + kx * g->cw + p * ps;       \
                const uint32_t *wk = w + (size_t)(ky * g->kw + kx) * g->cw * 16;               \
                for (int c0 = 0; c0 < g->cw;) {                                                \
                    int n = g->cw - c0 < BNN_NEON_FLUSH - steps ? g->cw - c0 : BNN_NEON_FLUSH - steps; \
                    for (int c = 0; c < n; c++) {                                              \
                        uint32x4_t wv[4];                                                      \
                        BNN_UNROLLED(v, 4) wv[v] = vld1q_u32(wk + 4 * v);                      \
                        wk += 16;                                                              \
                        BNN_UNROLLED(p, P) {                                                   \
                            uint32x4_t a = bnn_ld1r_post(&xr[p]);                              \
                            BNN_UNROLLED(v, 4)                                                 \
                                acc[p][v] = vpadalq_u8(                                        \
                                    acc[p][v], vcntq_u8(vreinterpretq_u8_u32(veorq_u32(a, wv[v])))); \
                        }                                                                      \
                    }                                                                          \
                    c0 += n;                                                                   \
                    steps += n;                                                                \
                    if (steps == BNN_NEON_FLUSH) {                                             \
                        BNN_NEON_WIDEN(P)                                                      \
                        steps = 0;                                                             \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                \
            tot[p][v] = vpadalq_u16(tot[p][v], acc[p][v]);                                     \
            vst1q_s32(pop + p * BNN_BCONV_POP_STRIDE + 4 * v, vreinterpretq_s32_u32(tot[p][v])); \
        }                                                                                      \
    }

#if defined(__aarch64__)
#define BNN_NEON_P 4
BNN_DEF_TILE_NEON(4)
#define bnn_tile_neon_big bnn_tile_neon_4
#else
#define BNN_NEON_P 2
BNN_DEF_TILE_NEON(2)
#define bnn_tile_neon_big bnn_tile_neon_2
#endif
BNN_DEF_TILE_NEON(1)

static void bconv2d_neon(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks, int npix,
                         int32_t *pop) {
    for (int b = 0; b < nblocks; b++) {
        const uint32_t *wb = w + b * g->wblock_stride;
        int32_t *pb = pop + 16 * b;
        int p = 0;
        for (; p + BNN_NEON_P <= npix; p += BNN_NEON_P)
            bnn_tile_neon_big(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
        for (; p < npix; p++) bnn_tile_neon_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);
    }
}
#endif /* defined(BNN_HAVE_NEON) */
#endif
