/* NEON binary-convolution kernels (see kernel.h) for aarch64 and armv7 (-mfpu=neon-vfpv4).
 * One q register = one input word for 4 output channels; per 128 binary MACs:
 *   EOR (broadcast activation ^ weights), CNT (bytes), UADALP (byte pairs into 16-bit lanes).
 * The 16-bit lanes gain at most 16 per word, so they are widened (UADDLP / UADALP) into
 * 32-bit totals every BNN_NEON_FLUSH words.
 * Tiles: aarch64 (32 q registers): 4 pixels x 16 channels = 16 accumulators;
 *        armv7 (16 q registers):   2 pixels x 16 channels = 8 accumulators, its inner loop
 *        in asm (below).
 * aarch64 in-order cores (Cortex-A53 ...) get bconv2d_neon_a53: the same tile with its inner
 * loop scheduled for in-order issue (below); bconv2d.c's select_kernel picks it. */
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
        const int row_words = g->kw * g->cw; /* a kernel row's taps: one contiguous run */     \
        for (int ky = 0; ky < g->kh; ky++) {                                                   \
            const uint32_t *xr[P];                                                             \
            BNN_UNROLLED(p, P) xr[p] = x + ky * g->row_stride + p * ps;                        \
            const uint32_t *wk = w + (size_t)ky * row_words * 16;                              \
            for (int c0 = 0; c0 < row_words;) {                                                \
                int n = row_words - c0 < BNN_NEON_FLUSH - steps ? row_words - c0 : BNN_NEON_FLUSH - steps; \
                for (int c = 0; c < n; c++) {                                                  \
                    uint32x4_t wv[4];                                                          \
                    BNN_UNROLLED(v, 4) wv[v] = vld1q_u32(wk + 4 * v);                          \
                    wk += 16;                                                                  \
                    BNN_UNROLLED(p, P) {                                                       \
                        uint32x4_t a = bnn_ld1r_post(&xr[p]);                                  \
                        BNN_UNROLLED(v, 4)                                                     \
                            acc[p][v] = vpadalq_u8(                                            \
                                acc[p][v], vcntq_u8(vreinterpretq_u8_u32(veorq_u32(a, wv[v])))); \
                    }                                                                          \
                }                                                                              \
                c0 += n;                                                                       \
                steps += n;                                                                    \
                if (steps == BNN_NEON_FLUSH) {                                                 \
                    BNN_NEON_WIDEN(P)                                                          \
                    steps = 0;                                                                 \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                \
            tot[p][v] = vpadalq_u16(tot[p][v], acc[p][v]);                                     \
            vst1q_s32(pop + p * BNN_BCONV_POP_STRIDE + 4 * v, vreinterpretq_s32_u32(tot[p][v])); \
        }                                                                                      \
    }

/* A P-pixel tile whose inner loop (n >= 1 words of P pixels x 16 channels) is the asm
 * function words(acc, xr, &wk, n), acc[p].val[v] as bnn_tile_neon_P's acc[p][v]. */
#define BNN_DEF_TILE_WORDS(name, P, words)                                                     \
    BNN_INLINE void name(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int32_t *pop) { \
        uint16x8x4_t acc[P];                                                                   \
        uint32x4_t tot[P][4];                                                                  \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                \
            acc[p].val[v] = vdupq_n_u16(0);                                                    \
            tot[p][v] = vdupq_n_u32(0);                                                        \
        }                                                                                      \
        int steps = 0;                                                                         \
        const int row_words = g->kw * g->cw; /* a kernel row's taps: one contiguous run */     \
        for (int ky = 0; ky < g->kh; ky++) {                                                   \
            const uint32_t *xr[P];                                                             \
            BNN_UNROLLED(p, P) xr[p] = x + ky * g->row_stride + p * g->pix_stride;             \
            const uint32_t *wk = w + (size_t)ky * row_words * 16;                              \
            for (int c0 = 0; c0 < row_words;) {                                                \
                int n = row_words - c0 < BNN_NEON_FLUSH - steps ? row_words - c0 : BNN_NEON_FLUSH - steps; \
                words(acc, xr, &wk, n); /* n >= 1 */                                           \
                c0 += n;                                                                       \
                steps += n;                                                                    \
                if (steps == BNN_NEON_FLUSH) {                                                 \
                    BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                    \
                        tot[p][v] = vpadalq_u16(tot[p][v], acc[p].val[v]);                     \
                        acc[p].val[v] = vdupq_n_u16(0);                                        \
                    }                                                                          \
                    steps = 0;                                                                 \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BNN_UNROLLED(p, P) BNN_UNROLLED(v, 4) {                                                \
            tot[p][v] = vpadalq_u16(tot[p][v], acc[p].val[v]);                                 \
            vst1q_s32(pop + p * BNN_BCONV_POP_STRIDE + 4 * v, vreinterpretq_s32_u32(tot[p][v])); \
        }                                                                                      \
    }

#if defined(__aarch64__)
#define BNN_NEON_P 4
BNN_DEF_TILE_NEON(4)
#define bnn_tile_neon_big bnn_tile_neon_4

/* ---- the 4-pixel tile for in-order cores (Cortex-A53, A55, A35; bnn_cpu.inorder) ------
 * The same operations as bnn_tile_neon_4, its inner loop (one word of 4 pixels x 16
 * channels = 2,048 binary MACs a trip) scheduled by hand for in-order issue: the compiler's
 * schedule runs at 75 cycles a trip on Cortex-A53 (llvm-mca -mcpu=cortex-a53; 26 on A72)
 * against a bound of 48 (one 128-bit NEON op a cycle).  Chain k = (pixel k / 4, weight
 * vector k % 4) is EOR, CNT, UADALP; slot s of a trip issues EOR of chain s, CNT of chain
 * s - 2 and UADALP of chain s - 4 (CNT and UADALP have 6-cycle latencies there), the
 * negative ones being the previous trip's last chains (zero temporaries before the first
 * trip; the last trip's go after the loop).  Loads without writeback and the pointer
 * updates come first in a trip: an in-order core writes registers in program order, so a
 * post-increment (or any short instruction) after a NEON op waits for that op's result.
 * Temporaries v8-v15 (chain k: v(8 + k % 8)), operands v0-v3 (activations), v4-v7
 * (weights); the 16 accumulators take v16-v31, as 4 operands of 4 registers (%S..%V[cP]:
 * the channels of pixel P; an asm statement takes at most 30 operands).  llvm-mca: 60
 * cycles a trip on A53, 26 on A72 (python -m firmware_py.bench inorder prints both loops'). */
BNN_INLINE void bnn_a53_words(uint16x8x4_t acc[4], const uint32_t **xr, const uint32_t **wk, int n) {
    const uint32_t *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3], *w = *wk;
    int64_t cnt = n;
    __asm__ volatile(
        "movi v12.16b, #0\n\tmovi v13.16b, #0\n\tmovi v14.16b, #0\n\tmovi v15.16b, #0\n\t"
        "1:\n\t"
        "ldp q4, q5, [%[w]]\n\tld1r {v0.4s}, [%[x0]]\n\tldp q6, q7, [%[w], #32]\n\t"
        "ld1r {v1.4s}, [%[x1]]\n\tld1r {v2.4s}, [%[x2]]\n\tld1r {v3.4s}, [%[x3]]\n\t"
        "add %[w], %[w], #64\n\tadd %[x0], %[x0], #4\n\tadd %[x1], %[x1], #4\n\tadd %[x2], %[x2], #4\n\tadd %[x3], %[x3], #4\n\tsubs %[n], %[n], #1\n\t"
        "eor v8.16b, v0.16b, v4.16b\n\tcnt v14.16b, v14.16b\n\tuadalp %S[c3].8h, v12.16b\n\t"
        "eor v9.16b, v0.16b, v5.16b\n\tcnt v15.16b, v15.16b\n\tuadalp %T[c3].8h, v13.16b\n\t"
        "eor v10.16b, v0.16b, v6.16b\n\tcnt v8.16b, v8.16b\n\tuadalp %U[c3].8h, v14.16b\n\t"
        "eor v11.16b, v0.16b, v7.16b\n\tcnt v9.16b, v9.16b\n\tuadalp %V[c3].8h, v15.16b\n\t"
        "eor v12.16b, v1.16b, v4.16b\n\tcnt v10.16b, v10.16b\n\tuadalp %S[c0].8h, v8.16b\n\t"
        "eor v13.16b, v1.16b, v5.16b\n\tcnt v11.16b, v11.16b\n\tuadalp %T[c0].8h, v9.16b\n\t"
        "eor v14.16b, v1.16b, v6.16b\n\tcnt v12.16b, v12.16b\n\tuadalp %U[c0].8h, v10.16b\n\t"
        "eor v15.16b, v1.16b, v7.16b\n\tcnt v13.16b, v13.16b\n\tuadalp %V[c0].8h, v11.16b\n\t"
        "eor v8.16b, v2.16b, v4.16b\n\tcnt v14.16b, v14.16b\n\tuadalp %S[c1].8h, v12.16b\n\t"
        "eor v9.16b, v2.16b, v5.16b\n\tcnt v15.16b, v15.16b\n\tuadalp %T[c1].8h, v13.16b\n\t"
        "eor v10.16b, v2.16b, v6.16b\n\tcnt v8.16b, v8.16b\n\tuadalp %U[c1].8h, v14.16b\n\t"
        "eor v11.16b, v2.16b, v7.16b\n\tcnt v9.16b, v9.16b\n\tuadalp %V[c1].8h, v15.16b\n\t"
        "eor v12.16b, v3.16b, v4.16b\n\tcnt v10.16b, v10.16b\n\tuadalp %S[c2].8h, v8.16b\n\t"
        "eor v13.16b, v3.16b, v5.16b\n\tcnt v11.16b, v11.16b\n\tuadalp %T[c2].8h, v9.16b\n\t"
        "eor v14.16b, v3.16b, v6.16b\n\tcnt v12.16b, v12.16b\n\tuadalp %U[c2].8h, v10.16b\n\t"
        "eor v15.16b, v3.16b, v7.16b\n\tcnt v13.16b, v13.16b\n\tuadalp %V[c2].8h, v11.16b\n\t"
        "b.ne 1b\n\t"
        "cnt v14.16b, v14.16b\n\tuadalp %S[c3].8h, v12.16b\n\t"
        "cnt v15.16b, v15.16b\n\tuadalp %T[c3].8h, v13.16b\n\t"
        "uadalp %U[c3].8h, v14.16b\n\tuadalp %V[c3].8h, v15.16b\n\t"
        : [c0] "+w"(acc[0]), [c1] "+w"(acc[1]), [c2] "+w"(acc[2]), [c3] "+w"(acc[3]), /* 4 registers each */
          [x0] "+r"(x0), [x1] "+r"(x1), [x2] "+r"(x2), [x3] "+r"(x3), [w] "+r"(w), [n] "+r"(cnt)
        :
        : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15",
          "cc", "memory");
    xr[0] = x0, xr[1] = x1, xr[2] = x2, xr[3] = x3, *wk = w;
}

BNN_DEF_TILE_WORDS(bnn_tile_neon_a53_4, 4, bnn_a53_words)
#else
/* ---- armv7: the 2-pixel tile's inner loop in asm -----------------------------------------
 * GCC's code for the intrinsics loop spends 47 instructions a trip (one word of 2 pixels x
 * 16 channels), 7 of them register moves between the accumulators; this one spends 30:
 * two broadcast loads, the 16 weights as two 4-register loads, and per half of the
 * channels 4 chains EOR, CNT, UADALP (VEOR, VCNT.8, VPADAL.U8).  Activations q10, q11,
 * weights q8, q9, temporaries q12-q15; the 8 accumulators are the operands (q0-q7).
 * BNN_V7_TRIP is one trip (asm text; operands x0, x1, w and BNN_V7_ACC_OPERANDS), shared by
 * the two loops below. */
#define BNN_V7_TRIP                                                                                                   \
    "vld1.32 {d20[], d21[]}, [%[x0]]!\n\t"                                                                            \
    "vld1.32 {d22[], d23[]}, [%[x1]]!\n\t"                                                                            \
    "vld1.32 {d16-d19}, [%[w]]!\n\t"                                                                                  \
    "veor q12, q10, q8\n\tveor q13, q10, q9\n\tveor q14, q11, q8\n\tveor q15, q11, q9\n\t"                            \
    "vcnt.8 q12, q12\n\tvcnt.8 q13, q13\n\tvcnt.8 q14, q14\n\tvcnt.8 q15, q15\n\t"                                    \
    "vpadal.u8 %q[a00], q12\n\tvpadal.u8 %q[a01], q13\n\tvpadal.u8 %q[a10], q14\n\tvpadal.u8 %q[a11], q15\n\t"        \
    "vld1.32 {d16-d19}, [%[w]]!\n\t"                                                                                  \
    "veor q12, q10, q8\n\tveor q13, q10, q9\n\tveor q14, q11, q8\n\tveor q15, q11, q9\n\t"                            \
    "vcnt.8 q12, q12\n\tvcnt.8 q13, q13\n\tvcnt.8 q14, q14\n\tvcnt.8 q15, q15\n\t"                                    \
    "vpadal.u8 %q[a02], q12\n\tvpadal.u8 %q[a03], q13\n\tvpadal.u8 %q[a12], q14\n\tvpadal.u8 %q[a13], q15\n\t"
#define BNN_V7_ACC_OPERANDS                                                                                           \
    [a00] "+w"(acc[0].val[0]), [a01] "+w"(acc[0].val[1]), [a02] "+w"(acc[0].val[2]), [a03] "+w"(acc[0].val[3]),       \
        [a10] "+w"(acc[1].val[0]), [a11] "+w"(acc[1].val[1]), [a12] "+w"(acc[1].val[2]), [a13] "+w"(acc[1].val[3])
#define BNN_V7_CLOBBERS                                                                                               \
    "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25", "d26", "d27", "d28", "d29", "d30", "d31",   \
        "cc", "memory"

BNN_INLINE void bnn_v7_words(uint16x8x4_t acc[2], const uint32_t **xr, const uint32_t **wk, int n) {
    const uint32_t *x0 = xr[0], *x1 = xr[1], *w = *wk;
    __asm__ volatile(
        "1:\n\t"
        BNN_V7_TRIP
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : BNN_V7_ACC_OPERANDS, [x0] "+r"(x0), [x1] "+r"(x1), [w] "+r"(w), [n] "+r"(n)
        :
        : BNN_V7_CLOBBERS);
    xr[0] = x0, xr[1] = x1, *wk = w;
}
#define BNN_NEON_P 2
BNN_DEF_TILE_WORDS(bnn_tile_neon_v7_2_widening, 2, bnn_v7_words)

/* The whole patch (kh kernel rows of row_words words) in one asm loop nest, for patches of
 * at most BNN_NEON_FLUSH words (no widening on the way: every layer of the shipped models):
 * the C loop per kernel row of the tile above costs as much as the words of a 32-channel
 * layer's row.  skip: the bytes from a row's end to the next row's start. */
BNN_INLINE void bnn_tile_neon_v7_2(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int32_t *pop) {
    const int row_words = g->kw * g->cw;
    if (g->kh * row_words > BNN_NEON_FLUSH) {
        bnn_tile_neon_v7_2_widening(g, x, w, pop);
        return;
    }
    uint16x8x4_t acc[2];
    BNN_UNROLLED(p, 2) BNN_UNROLLED(v, 4) acc[p].val[v] = vdupq_n_u16(0);
    const uint32_t *x0 = x, *x1 = x + g->pix_stride;
    const int skip = (int)((g->row_stride - row_words) * (ptrdiff_t)sizeof(uint32_t));
    int ky = g->kh, n = 0;
    __asm__ volatile(
        "2:\n\t"
        "mov %[n], %[rw]\n\t"
        "1:\n\t"
        BNN_V7_TRIP
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        "add %[x0], %[x0], %[skip]\n\t"
        "add %[x1], %[x1], %[skip]\n\t"
        "subs %[ky], %[ky], #1\n\t"
        "bne 2b\n\t"
        : BNN_V7_ACC_OPERANDS, [x0] "+r"(x0), [x1] "+r"(x1), [w] "+r"(w), [n] "+r"(n), [ky] "+r"(ky)
        : [rw] "r"(row_words), [skip] "r"(skip)
        : BNN_V7_CLOBBERS);
    BNN_UNROLLED(p, 2) BNN_UNROLLED(v, 4)
        vst1q_s32(pop + p * BNN_BCONV_POP_STRIDE + 4 * v, vreinterpretq_s32_u32(vpaddlq_u16(acc[p].val[v])));
}
#define bnn_tile_neon_big bnn_tile_neon_v7_2
#endif
BNN_DEF_TILE_NEON(1)

/* The kernel over a big tile (BNN_NEON_P pixels) and the 1-pixel one for the rest. */
#define BNN_DEF_KERNEL_NEON(name, big)                                                         \
    static void name(const bnn_bconv_geom *g, const uint32_t *x, const uint32_t *w, int nblocks, int npix, \
                     int32_t *pop) {                                                           \
        for (int b = 0; b < nblocks; b++) {                                                    \
            const uint32_t *wb = w + b * g->wblock_stride;                                     \
            int32_t *pb = pop + 16 * b;                                                        \
            int p = 0;                                                                         \
            for (; p + BNN_NEON_P <= npix; p += BNN_NEON_P)                                    \
                big(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE);              \
            for (; p < npix; p++) bnn_tile_neon_1(g, x + p * g->pix_stride, wb, pb + p * BNN_BCONV_POP_STRIDE); \
        }                                                                                      \
    }

BNN_DEF_KERNEL_NEON(bconv2d_neon, bnn_tile_neon_big)
#if defined(__aarch64__)
BNN_DEF_KERNEL_NEON(bconv2d_neon_a53, bnn_tile_neon_a53_4)
#endif
#endif /* defined(BNN_HAVE_NEON) */
#endif
