/* The contract every float-convolution kernel (reference.h, kernels_*.h) implements;
 * fconv2d.c's select_kernel picks one per call from the context's path.
 *
 * The weights are laid out in blocks of OB output channels of one group,
 * w[group][ob][kh][kw][in_c / groups][OB] (each group's last block zero-padded), so that,
 * with groups 1, for one kernel row, the taps (kx, ic) and the OB output channels are one
 * contiguous run, and so is the input row (x at ix .. ix+kw-1, all channels); with groups
 * > 1 a kernel row is nkx runs of the group's in_c / groups channels (xcol / wcol apart).
 * OB is 16 on x86-64 (one AVX-512 register, two AVX2 registers) and 8 elsewhere
 * (two NEON ones).
 *
 * A kernel computes np output pixels (xstep apart in x, ystep apart in y) of one output
 * row times nb blocks of OB channels, of which the first nc are stored (fc_tile); each
 * output element is
 *     bias[o], then + x * w over the nky kernel rows (xrow / wrow apart), in each over nkx
 *     runs (xcol / wcol apart) and, in each, the nj contiguous taps from xs / ws, in this
 *     order (groups 1: nkx 1, nj = (valid kx) * in_c; else nkx = valid kx, nj = in_c / groups),
 * one multiply-add at a time (fused where the kernel says so; see fconv2d.c).  np > 1 only
 * where the whole kernel row is inside the image (the same taps for every pixel). */
#ifndef BNN_FCONV2D_KERNEL_H
#define BNN_FCONV2D_KERNEL_H
#include <stddef.h>
#include <stdint.h>
#include "../core/internal.h"

#if defined(BNN_X86)
#define OB 16 /* output channels per block */
#else
#define OB 8
#endif

typedef struct {
    const float *xs;
    size_t xrow, xcol, xstep;
    int nky, nkx, nj;
    const float *ws;
    size_t wrow, wcol, wblock; /* wblock: floats between the weights of consecutive blocks */
    const float *bias;
    float *ys;
    size_t ystep;
    int nc;
} fc_tile;

/* A depthwise tile (groups = in_c = out_c): np output pixels (xstep / ystep apart) times
 * the nc channels from xs / ys; channel c of each is
 *     bias[c], then + x[c] * w[c] over the nky kernel rows (xrow / wrow apart) and, in
 *     each, the nkx columns (xcol / wcol apart), in this order,
 * one multiply-add at a time as above.  The weights w[kh][kw][cp] and bias[cp] are padded
 * to cp >= nc rounded up to OB, so a kernel may read them past nc (never x past nc). */
typedef struct {
    const float *xs;
    size_t xrow, xcol, xstep;
    int nky, nkx;
    const float *ws;
    size_t wrow, wcol;
    const float *bias;
    float *ys;
    size_t ystep;
    int nc;
} fc_dw_tile;

typedef struct {
    void (*run)(const fc_tile *t, int np, int nb); /* 1 <= np <= px, 1 <= nb <= gb */
    int px;                                         /* output pixels per call, at most */
    int gb;                                         /* blocks per work item, at most */
    void (*dw)(const fc_dw_tile *t, int np);        /* depthwise: 1 <= np <= dwpx */
    int dwpx;
} bnn_fconv2d_kernel;

#define FC_RUN 96 /* px of the kernels that loop over their tiles themselves (FC_DEF_RUN_KERNEL) */

/* ---- the SIMD kernels' tiles, once for every ISA (ggml style): each kernels_<isa>.h maps
 * FC_<ISA>_VEC (the vector type), _LANES (floats per vector), _VPB (vectors per block =
 * OB / LANES), _INLINE (a tile's attributes), _FN (FC_DEF_TILES' attributes), _LOAD(p),
 * _BCAST(x, i) (x[i] in every lane), _FMADD(x, w, acc) (acc + x * w, fused or not as the
 * path says) and _STORE(y, acc[p], b, nc) (the first nc floats of block b, all OB when
 * nc >= OB).
 *
 * FC_DEF_TILE: a tile of P pixels x NB blocks, acc[p][VPB * b + u].  A tile of np < P
 * pixels computes its missing pixels as copies of its last one (same loads, results not
 * stored), so one instantiation serves every remainder. */
#define FC_DEF_TILE(name, ISA, P, NB)                                                          \
    FC_##ISA##_INLINE void name(const fc_tile *t, int np) {                                    \
        FC_##ISA##_VEC acc[P][NB * FC_##ISA##_VPB];                                            \
        size_t xo[P];                                                                          \
        BNN_UNROLLED(p, P) xo[p] = (size_t)(p < np ? p : np - 1) * t->xstep;                   \
        BNN_UNROLLED(v, NB * FC_##ISA##_VPB) {                                                 \
            FC_##ISA##_VEC bv = FC_##ISA##_LOAD(t->bias + FC_##ISA##_LANES * v);                \
            BNN_UNROLLED(p, P) acc[p][v] = bv;                                                 \
        }                                                                                      \
        for (int ky = 0; ky < t->nky; ky++)                                                    \
        for (int kx = 0; kx < t->nkx; kx++) {                                                  \
            const float *xr = t->xs + (size_t)ky * t->xrow + (size_t)kx * t->xcol;             \
            const float *wr = t->ws + (size_t)ky * t->wrow + (size_t)kx * t->wcol;             \
            for (int j = 0; j < t->nj; j++) {                                                  \
                FC_##ISA##_VEC wv[NB * FC_##ISA##_VPB];                                        \
                BNN_UNROLLED(v, NB * FC_##ISA##_VPB)                                           \
                    wv[v] = FC_##ISA##_LOAD(wr + v / FC_##ISA##_VPB * t->wblock + (size_t)j * OB \
                                            + FC_##ISA##_LANES * (v % FC_##ISA##_VPB));        \
                BNN_UNROLLED(p, P) {                                                           \
                    FC_##ISA##_VEC xv = FC_##ISA##_BCAST(xr, xo[p] + (size_t)j);               \
                    BNN_UNROLLED(v, NB * FC_##ISA##_VPB) acc[p][v] = FC_##ISA##_FMADD(xv, wv[v], acc[p][v]); \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BNN_UNROLLED(p, P) {                                                                   \
            if (p >= np) break;                                                                \
            float *yp = t->ys + (size_t)p * t->ystep;                                          \
            BNN_UNROLLED(b, NB) FC_##ISA##_STORE(yp + OB * b, acc[p], b, t->nc - OB * b);      \
        }                                                                                      \
    }

/* FC_DEF_TILES: name(t, np, nb) over an ISA's tiles name##_P_NB (P pixels) and
 * name##_1_NB, NB = 4, 2, 1 (those above NBMAX, the widest that fits the registers, are
 * never called): np <= P pixels, nb blocks, the widest tiles first. */
#define FC_DEF_TILES(name, ISA, NBMAX)                                                         \
    FC_##ISA##_FN void name(const fc_tile *t0, int np, int nb) {                               \
        fc_tile t = *t0;                                                                       \
        while (nb > 0) {                                                                       \
            int k = nb >= 4 && (NBMAX) >= 4 ? 4 : nb >= 2 && (NBMAX) >= 2 ? 2 : 1;             \
            if (np == 1) {                                                                     \
                if (k == 4) name##_1_4(&t, 1);                                                 \
                else if (k == 2) name##_1_2(&t, 1);                                            \
                else name##_1_1(&t, 1);                                                        \
            } else {                                                                           \
                if (k == 4) name##_P_4(&t, np);                                                \
                else if (k == 2) name##_P_2(&t, np);                                           \
                else name##_P_1(&t, np);                                                       \
            }                                                                                  \
            nb -= k;                                                                           \
            t.ws += (size_t)k * t.wblock;                                                      \
            t.bias += OB * k;                                                                  \
            t.ys += OB * k;                                                                    \
            t.nc -= OB * k;                                                                    \
        }                                                                                      \
    }

/* All of an ISA's tiles (P pixels, up to NBMAX blocks) and FC_DEF_TILES over them. */
#define FC_DEF_ISA_TILES(name, ISA, P, NBMAX)                                                  \
    FC_DEF_TILE(name##_P_4, ISA, P, 4)                                                         \
    FC_DEF_TILE(name##_P_2, ISA, P, 2)                                                         \
    FC_DEF_TILE(name##_P_1, ISA, P, 1)                                                         \
    FC_DEF_TILE(name##_1_4, ISA, 1, 4)                                                         \
    FC_DEF_TILE(name##_1_2, ISA, 1, 2)                                                         \
    FC_DEF_TILE(name##_1_1, ISA, 1, 1)                                                         \
    FC_DEF_TILES(name, ISA, NBMAX)

/* FC_DEF_DW: a depthwise kernel (fc_dw_tile) of up to P pixels over an ISA's operations
 * and FC_<ISA>_LOAD_T(p, n) / FC_<ISA>_STORE1(y, v) (a whole vector; n unused),
 * FC_<ISA>_LOADN_T(p, n) / FC_<ISA>_STOREN(y, v, n) (the first n < LANES floats; the
 * others loaded as 0): each LANES channels in turn, the last ones partial; one pixel
 * (np 1, the borders) with one accumulator. */
#define FC_DEF_DW(name, ATTR, ISA, P)                                                          \
    FC_DEF_DW_STEP(name##_step, ATTR, ISA, P, FC_##ISA##_LOAD_T, FC_##ISA##_STORE1(yp, acc[p])) \
    FC_DEF_DW_STEP(name##_tail, ATTR, ISA, P, FC_##ISA##_LOADN_T, FC_##ISA##_STOREN(yp, acc[p], n)) \
    FC_DEF_DW_STEP(name##_step1, ATTR, ISA, 1, FC_##ISA##_LOAD_T, FC_##ISA##_STORE1(yp, acc[p])) \
    FC_DEF_DW_STEP(name##_tail1, ATTR, ISA, 1, FC_##ISA##_LOADN_T, FC_##ISA##_STOREN(yp, acc[p], n)) \
    ATTR static void name(const fc_dw_tile *t, int np) {                                       \
        int c = 0;                                                                             \
        if (np == 1) { /* the border pixels: one accumulator, not P copies */                 \
            for (; c + FC_##ISA##_LANES <= t->nc; c += FC_##ISA##_LANES) name##_step1(t, 1, c, FC_##ISA##_LANES); \
            if (c < t->nc) name##_tail1(t, 1, c, t->nc - c);                                   \
            return;                                                                            \
        }                                                                                      \
        for (; c + FC_##ISA##_LANES <= t->nc; c += FC_##ISA##_LANES) name##_step(t, np, c, FC_##ISA##_LANES); \
        if (c < t->nc) name##_tail(t, np, c, t->nc - c);                                       \
    }

/* One vector of channels from c (n of them: LOAD is the full or the partial load) for np
 * pixels: P accumulators, the weight vector of each tap loaded once. */
#define FC_DEF_DW_STEP(name, ATTR, ISA, P, LOAD, STORE)                                        \
    ATTR BNN_INLINE void name(const fc_dw_tile *t, int np, int c, int n) {                     \
        (void)n;                                                                               \
        FC_##ISA##_VEC acc[P];                                                                 \
        const float *xp[P];                                                                    \
        BNN_UNROLLED(p, P) {                                                                   \
            acc[p] = FC_##ISA##_LOAD(t->bias + c);                                             \
            xp[p] = t->xs + (size_t)(p < np ? p : np - 1) * t->xstep + (size_t)c;              \
        }                                                                                      \
        const float *wp = t->ws + c;                                                           \
        for (int ky = 0; ky < t->nky; ky++) {                                                  \
            for (int kx = 0; kx < t->nkx; kx++) {                                              \
                FC_##ISA##_VEC wv = FC_##ISA##_LOAD(wp + (size_t)kx * t->wcol);                \
                const size_t o = (size_t)kx * t->xcol;                                         \
                BNN_UNROLLED(p, P) acc[p] = FC_##ISA##_FMADD(LOAD(xp[p] + o, n), wv, acc[p]);  \
            }                                                                                  \
            wp += t->wrow;                                                                     \
            BNN_UNROLLED(p, P) xp[p] += t->xrow;                                               \
        }                                                                                      \
        BNN_UNROLLED(p, P) {                                                                   \
            if (p >= np) break;                                                                \
            float *yp = t->ys + (size_t)p * t->ystep + c;                                      \
            STORE;                                                                             \
        }                                                                                      \
    }

/* A kernel's run for up to px = FC_RUN pixels per call from a function `tiles` of up to P
 * pixels (FC_DEF_TILES, or the reference's): P at a time, no indirect call per tile. */
#define FC_DEF_RUN_KERNEL(name, ATTR, tiles, P)                                                \
    ATTR static void name(const fc_tile *t0, int np, int nb) {                                 \
        fc_tile t = *t0;                                                                       \
        for (int n; np > 0; np -= n, t.xs += (size_t)n * t.xstep, t.ys += (size_t)n * t.ystep) { \
            n = np < (P) ? np : (P);                                                           \
            tiles(&t, n, nb);                                                                  \
        }                                                                                      \
    }

#endif
