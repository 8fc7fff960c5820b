/*
 * bnn.h — the public C API of the binarized-network runtime (C11; libc, libm, pthreads).
 *
 * Conventions, stated once for the whole library
 * ----------------------------------------------
 * Tensors are NHWC, row-major, contiguous.
 *
 * Bit packing: a packed tensor keeps the channels of each pixel in 32-bit words,
 *   channel c in word c / 32, bit c % 32 (least significant bit first);
 *   bit 1 means -1 (x < threshold), bit 0 means +1 (x >= threshold; so 0 -> +1);
 *   the bits past the last channel of the tail word are always 0.
 *   A packed NHWC tensor is uint32_t[N][H][W][bnn_packed_words(C)].
 *
 * Binary dot product of two +-1 vectors of length n (a, b packed as above):
 *   dot = n - 2 * popcount(a XOR b)    (tail bits are 0 in both, so they never count).
 *
 * Every function checks its sizes: each buffer is passed with its length in elements
 * (of the pointer's type) and a function returns BNN_E_SIZE, without touching the
 * output, when a buffer is shorter than the shapes require.  Nothing aborts.
 * All functions return BNN_OK (0) or a negative bnn_status.
 */
#ifndef BNN_H
#define BNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BNN_API __declspec(dllexport)
#else
#define BNN_API __attribute__((visibility("default")))
#endif

#define BNN_VERSION_MAJOR 0
#define BNN_VERSION_MINOR 1
#define BNN_VERSION_PATCH 0

enum bnn_status {
    BNN_OK = 0,
    BNN_E_NULL = -1,    /* a required pointer is NULL */
    BNN_E_SHAPE = -2,   /* a shape or layer parameter is out of range or inconsistent */
    BNN_E_SIZE = -3,    /* a buffer is shorter than its shape requires */
    BNN_E_PATH = -4,    /* the requested code path is not available on this CPU / build */
    BNN_E_NOMEM = -5,   /* an allocation failed */
    BNN_E_THREAD = -6   /* a worker thread could not be started */
};

/* Code paths.  AUTO picks the best one the running CPU supports. */
enum bnn_path {
    BNN_PATH_AUTO = 0,
    BNN_PATH_PORTABLE = 1, /* plain C: defines the semantics; Pi Zero / armv6 and anything else */
    BNN_PATH_NEON = 2,     /* aarch64 NEON, or armv7 NEON (-mfpu=neon-vfpv4) */
    BNN_PATH_AVX2 = 3,     /* x86-64 AVX2 */
    BNN_PATH_AVX512 = 4    /* x86-64 AVX-512F + VPOPCNTDQ */
};

BNN_API const char *bnn_version(void);
BNN_API const char *bnn_status_str(int status);
BNN_API const char *bnn_path_name(int path);
/* 1 when `path` can run here (compiled in and supported by the CPU), else 0. */
BNN_API int bnn_path_available(int path);

/* ---- context: thread pool, scratch memory, chosen code path -------------------------
 * One context per calling thread.  num_threads <= 0 means one per online CPU.
 * Results are bit-identical for every num_threads and (for binary ops) every path. */
typedef struct bnn_ctx bnn_ctx;
BNN_API int bnn_ctx_create(bnn_ctx **out, int num_threads);
BNN_API void bnn_ctx_destroy(bnn_ctx *ctx);
BNN_API int bnn_ctx_num_threads(const bnn_ctx *ctx);
BNN_API int bnn_ctx_set_path(bnn_ctx *ctx, int path); /* BNN_E_PATH if not available */
BNN_API int bnn_ctx_path(const bnn_ctx *ctx);         /* the path in use (never AUTO) */

/* ---- bit packing --------------------------------------------------------------------
 * x: [pixels][c] (any NHWC tensor seen as pixels = N*H*W rows of c channels).
 * out: [pixels][bnn_packed_words(c)].  bit = (x < threshold); for int types the
 * threshold is the zero point (an int8 tensor with zero point 0: bit = x < 0). */
BNN_API size_t bnn_packed_words(int32_t c);
BNN_API int bnn_bitpack_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c,
                            float threshold, uint32_t *out, size_t out_len);
BNN_API int bnn_bitpack_u8(bnn_ctx *ctx, const uint8_t *x, size_t x_len, int32_t pixels, int32_t c,
                           int32_t zero_point, uint32_t *out, size_t out_len);
BNN_API int bnn_bitpack_i8(bnn_ctx *ctx, const int8_t *x, size_t x_len, int32_t pixels, int32_t c,
                           int32_t zero_point, uint32_t *out, size_t out_len);
/* Packing after a per-channel affine: bit = (x[p][ch] * scale[ch] + bias[ch] < threshold),
 * the affine rounded as BNN_EW_AFFINE (below; scale / bias NULL as there, each one given
 * holds param_len >= c floats); out as bnn_bitpack_f32.  ReActNet's RSign, sign(x - b),
 * is scale NULL, bias -b, threshold 0, in one pass.  Same bits on every path. */
BNN_API int bnn_bitpack_affine_f32(bnn_ctx *ctx, const float *x, size_t x_len, int32_t pixels, int32_t c,
                                   const float *scale, const float *bias, size_t param_len,
                                   float threshold, uint32_t *out, size_t out_len);
/* The inverse: out[p][c] = +1.0f (bit 0) or -1.0f (bit 1); where a binary activation
 * must go float.  Same bits on every path and thread count. */
BNN_API int bnn_unpack_f32(bnn_ctx *ctx, const uint32_t *x, size_t x_len, int32_t pixels, int32_t c,
                           float *out, size_t out_len);

/* ---- 2-D window geometry shared by convolutions and pools ---------------------------
 * Explicit pads as in ONNX (SAME_UPPER / SAME_LOWER / VALID are resolved by the caller).
 * out_h = (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1, likewise out_w. */
/* Window limits, checked by every op that takes a bnn_window (firmware_py reads them here). */
#define BNN_MAX_CONV_KERNEL 15  /* convolutions: kernel 1 .. 15 */
#define BNN_MAX_CONV_STRIDE 8   /* convolutions: stride 1 .. 8 */
#define BNN_MAX_POOL 65536      /* pools: kernel and stride 1 .. 65536 (up to global pooling) */

typedef struct {
    int32_t n, in_h, in_w, in_c;
    int32_t out_c;                  /* convolutions only; pools: ignored (out_c = in_c) */
    int32_t kernel_h, kernel_w;     /* convolutions 1 .. BNN_MAX_CONV_KERNEL; pools 1 .. BNN_MAX_POOL */
    int32_t stride_h, stride_w;     /* convolutions 1 .. BNN_MAX_CONV_STRIDE; pools 1 .. BNN_MAX_POOL */
    int32_t pad_top, pad_left, pad_bottom, pad_right; /* 0 .. kernel - 1 */
} bnn_window;
/* Fills *out_h, *out_w; BNN_E_SHAPE when the geometry is invalid. */
BNN_API int bnn_window_out(const bnn_window *win, int32_t *out_h, int32_t *out_w);

/* ---- binary convolution (groups 1) ---------------------------------------------------
 * Input: packed NHWC [n][in_h][in_w][words(in_c)].
 * Weights: packed OHWI [out_c][kernel_h][kernel_w][words(in_c)] (bnn_bitpack_f32 of the
 *   float OHWI weights with pixels = out_c*kernel_h*kernel_w, c = in_c).
 * Padding (pad_mode):
 *   BNN_PAD_ZERO: a padded position contributes 0 to the dot product, exactly as
 *                 onnxruntime's Conv with zero padding on a +-1 input;
 *   BNN_PAD_ONE:  a padded position holds +1 (cheaper; what some BNN trainers use).
 * Output (out_mode), per output channel o and integer dot product d:
 *   BNN_OUT_INT32: y = d (int32 NHWC; for tests);
 *   BNN_OUT_FLOAT: y = d * mul[o] * K[pixel] + add[o]  (float NHWC; K optional, see
 *                  bnn_xnor_scale; without K: y = d * mul[o] + add[o]), then the
 *                  output steps, if any, as bnn_eltwise_f32 would apply them to y (the
 *                  same bits; its BNN_EW_ADD adds the residual of
 *                  bnn_bconv2d_run_residual): the ReLU / BatchNorm / shortcut add after a
 *                  binary conv in the same pass, while the outputs are in registers;
 *   BNN_OUT_BITS:  packed NHWC bits for the next binary layer, floats never written:
 *                  flip[o] == 0: bit = (d < threshold[o])   (-1 when below)
 *                  flip[o] != 0: bit = (d > threshold[o])   (a negative BN gamma)
 *                  threshold INT32_MIN with flip 0 gives a constant +1 channel.
 * The layer copies what it needs at create time; the arrays may be freed afterwards. */
enum bnn_pad_mode { BNN_PAD_ZERO = 0, BNN_PAD_ONE = 1 };
enum bnn_out_mode { BNN_OUT_INT32 = 0, BNN_OUT_FLOAT = 1, BNN_OUT_BITS = 2 };

typedef struct bnn_ew_step bnn_ew_step; /* see bnn_eltwise_f32 below */
typedef struct {
    int32_t out_mode;           /* enum bnn_out_mode */
    const float *mul, *add;     /* BNN_OUT_FLOAT: [out_c] each (NULL mul = 1, NULL add = 0) */
    const int32_t *threshold;   /* BNN_OUT_BITS: [out_c] */
    const uint8_t *flip;        /* BNN_OUT_BITS: [out_c] (NULL = all 0) */
    const bnn_ew_step *steps;   /* BNN_OUT_FLOAT: 0 .. BNN_EW_MAX_STEPS output steps, each */
    int32_t n_steps;            /*   parameter array given [out_c] floats (zeroed: none) */
} bnn_output;

typedef struct bnn_bconv2d bnn_bconv2d;
BNN_API int bnn_bconv2d_create(bnn_bconv2d **out, const bnn_window *win, int32_t pad_mode,
                               const uint32_t *weights, size_t weights_len,
                               const bnn_output *output);
BNN_API void bnn_bconv2d_destroy(bnn_bconv2d *layer);
/* Elements the run needs: input words, output elements (floats, int32s or words). */
BNN_API size_t bnn_bconv2d_input_len(const bnn_bconv2d *layer);
BNN_API size_t bnn_bconv2d_output_len(const bnn_bconv2d *layer);
/* k_scale: NULL, or [n][out_h][out_w] floats from bnn_xnor_scale (BNN_OUT_FLOAT only). */
BNN_API int bnn_bconv2d_run(bnn_ctx *ctx, const bnn_bconv2d *layer,
                            const uint32_t *x, size_t x_len,
                            const float *k_scale, size_t k_len,
                            void *y, size_t y_len);
/* The same with a residual r: float [n][out_h][out_w][out_c], what the layer's BNN_EW_ADD
 * output steps add (BNN_E_NULL without r when there is one; BNN_E_SHAPE with r when there
 * is none).  y must not overlap r. */
BNN_API int bnn_bconv2d_run_residual(bnn_ctx *ctx, const bnn_bconv2d *layer,
                                     const uint32_t *x, size_t x_len,
                                     const float *k_scale, size_t k_len,
                                     const float *r, size_t r_len,
                                     void *y, size_t y_len);

/* XNOR-Net input scaling K = A * k: A[n][h][w] = mean over channels of |x| (float NHWC
 * [n][in_h][in_w][in_c]), k = a kernel_h x kernel_w box filter of 1/(kernel_h*kernel_w)
 * applied with the window's strides and zero padding.  k_out: [n][out_h][out_w]. */
BNN_API int bnn_xnor_scale(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len,
                           float *k_out, size_t k_len);

/* ---- binary max pooling on packed bits ----------------------------------------------
 * max over +-1 values = +1 when any is +1: bitwise AND of the words over the window;
 * padded positions are ignored (as ONNX MaxPool's -inf padding).  x, y packed NHWC. */
BNN_API int bnn_bmaxpool2d(bnn_ctx *ctx, const bnn_window *win, const uint32_t *x, size_t x_len,
                           uint32_t *y, size_t y_len);

/* ---- float layers a BNN keeps --------------------------------------------------------
 * Float convolution, NHWC in and out, zero padding as ONNX: the first layer (1-3 input
 * channels), 1x1 convolutions, dense heads (a dense layer is a 1x1 convolution on a 1x1
 * image), grouped and depthwise convolutions (QuickNet's stem, blur pools).
 * groups: 1 .. dividing both in_c and out_c (ONNX Conv's group; depthwise: groups = in_c
 * = out_c); output channel o reads the input channels of its group
 * o / (out_c / groups).  weights: OHWI float [out_c][kh][kw][in_c / groups];
 * bias: [out_c] or NULL.  y = conv(x, w) + bias. */
typedef struct bnn_fconv2d bnn_fconv2d;
BNN_API int bnn_fconv2d_create(bnn_fconv2d **out, const bnn_window *win, int32_t groups,
                               const float *weights, size_t weights_len,
                               const float *bias, size_t bias_len);
BNN_API void bnn_fconv2d_destroy(bnn_fconv2d *layer);
BNN_API size_t bnn_fconv2d_input_len(const bnn_fconv2d *layer);
BNN_API size_t bnn_fconv2d_output_len(const bnn_fconv2d *layer);
BNN_API int bnn_fconv2d_run(bnn_ctx *ctx, const bnn_fconv2d *layer, const float *x, size_t x_len,
                            float *y, size_t y_len);

/* Float pooling, NHWC.  Max: padded positions ignored.  Average: count_include_pad as
 * ONNX AveragePool (0: divide by the valid positions).  Global average pooling is
 * average pooling with the kernel the size of the image. */
BNN_API int bnn_maxpool2d(bnn_ctx *ctx, const bnn_window *win, const float *x, size_t x_len,
                          float *y, size_t y_len);
BNN_API int bnn_avgpool2d(bnn_ctx *ctx, const bnn_window *win, int32_t count_include_pad,
                          const float *x, size_t x_len, float *y, size_t y_len);

/* Residual add: y[i] = a[i] + b[i] for i < n (y may alias a or b). */
BNN_API int bnn_add_f32(bnn_ctx *ctx, const float *a, size_t a_len, const float *b, size_t b_len,
                        float *y, size_t y_len, size_t n);

/* Concatenation along the last axis: n_in (1 .. BNN_CONCAT_MAX_INPUTS) float arrays
 * x[k] = [rows][c[k]] (x_len[k] >= rows * c[k]) into y = [rows][c[0] + ... + c[n_in - 1]]
 * (NHWC tensors on the channel axis: rows = N * H * W), the values copied bit for bit; y
 * must not overlap an input (BNN_E_SHAPE). */
#define BNN_CONCAT_MAX_INPUTS 65536
BNN_API int bnn_concat_f32(bnn_ctx *ctx, int32_t n_in, const float *const *x, const size_t *x_len,
                           const int32_t *c, int64_t rows, float *y, size_t y_len);

/* Per-channel elementwise chain (Bi-Real / ReActNet blocks: residual add, RPReLU = Sub,
 * PRelu, Add per channel; BN-style affines; ReLU / Clip), one pass over float [pixels][c]:
 *   t = x[p][ch], plus r[p][ch] when r is not NULL and no step is BNN_EW_ADD (the
 *   residual add t = x + r first);
 *   then each step in order:
 *     BNN_EW_AFFINE: t = t * a[ch] + b[ch]  -- the product rounded to float, then the sum
 *                    (never a fused multiply-add: as separate Mul and Add nodes);
 *                    a NULL: t + b[ch]; b NULL: t * a[ch]; both NULL: t
 *     BNN_EW_PRELU:  t = t >= 0 ? t : t * a[ch]   (a required; NaN stays NaN)
 *     BNN_EW_CLIP:   t = t > a[ch] ? t : a[ch], then t = t < b[ch] ? t : b[ch]: the bound
 *                    where t equals it (ReLU(-0) = +0), but NaN stays NaN; a NULL: no
 *                    lower bound, b NULL: no upper (ReLU: a = 0, b NULL)
 *     BNN_EW_ADD:    t = t + r[p][ch]   (r required)
 *   y[p][ch] = t.
 * Each step array given holds param_len >= c floats.  y may be x, or r when no step is
 * BNN_EW_ADD (the same pointer; partial overlaps are not supported; y == r with a
 * BNN_EW_ADD step: BNN_E_SHAPE).  0 .. BNN_EW_MAX_STEPS steps (0: a copy or the
 * add).  IEEE single-precision operations in this order: bit-identical on every path and
 * thread count (armv7 NEON is not used: it flushes denormals), except that which NaN comes
 * out of a NaN + NaN may differ. */
enum bnn_ew_op { BNN_EW_AFFINE = 1, BNN_EW_PRELU = 2, BNN_EW_CLIP = 3, BNN_EW_ADD = 4 };
#define BNN_EW_MAX_STEPS 16
struct bnn_ew_step {
    int32_t op;         /* enum bnn_ew_op */
    const float *a, *b; /* per-channel parameters (see above) */
};
BNN_API int bnn_eltwise_f32(bnn_ctx *ctx, const float *x, size_t x_len, const float *r, size_t r_len,
                            int32_t pixels, int32_t c, const bnn_ew_step *steps, int32_t n_steps,
                            size_t param_len, float *y, size_t y_len);

#ifdef __cplusplus
}
#endif
#endif /* BNN_H */
