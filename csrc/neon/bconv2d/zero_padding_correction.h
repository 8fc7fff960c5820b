/* Zero padding on a +-1 input (what onnxruntime computes): a padded position contributes 0.
 *
 * The kernels run on an input padded with bit 0 (+1), so at a padded position (ky, kx) they
 * add sum_c (+1) * w[o][ky][kx][c] = wsum[ky][kx][o] = in_c - 2 * popcount(w bits).  The
 * correction subtracts exactly that for every padded position of an output pixel's window:
 *     d_zero = d_one - sum_{padded (ky, kx)} wsum[ky][kx][o].
 * Interior pixels need nothing; only the border pixels pay, kernel_h * kernel_w adds each. */
#ifndef BNN_BCONV2D_ZERO_PADDING_CORRECTION_H
#define BNN_BCONV2D_ZERO_PADDING_CORRECTION_H
#include <stdint.h>
#include "../core/internal.h" /* BNN_INLINE */

/* Valid kernel index range [*k0, *k1) for an output coordinate whose window starts at
 * padded coordinate `start`, for an input of `size` with `pad_before` padding. */
BNN_INLINE void bnn_valid_range(int32_t start, int32_t k, int32_t pad_before, int32_t size, int32_t *k0,
                                   int32_t *k1) {
    int32_t lo = pad_before - start, hi = pad_before + size - start;
    *k0 = lo > 0 ? lo : 0;
    *k1 = hi < k ? hi : k;
    if (*k1 < *k0) *k1 = *k0;
}

/* d[j] -= sum of wsum[(ky * kw + kx) * out_c + o0 + j] over the positions outside
 * [ky0, ky1) x [kx0, kx1). */
BNN_INLINE void bnn_zero_padding_correct(int32_t *d, int nc, const int32_t *wsum, int32_t out_c, int32_t o0,
                                            int32_t kh, int32_t kw, int32_t ky0, int32_t ky1, int32_t kx0,
                                            int32_t kx1) {
    if (ky0 == 0 && ky1 == kh && kx0 == 0 && kx1 == kw) return;
    for (int32_t ky = 0; ky < kh; ky++)
        for (int32_t kx = 0; kx < kw; kx++) {
            if (ky >= ky0 && ky < ky1 && kx >= kx0 && kx < kx1) continue;
            const int32_t *ws = wsum + (size_t)(ky * kw + kx) * out_c + o0;
            for (int j = 0; j < nc; j++) d[j] -= ws[j];
        }
}
#endif
