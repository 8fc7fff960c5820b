/* The channel concatenation of NHWC float tensors (ONNX Concat on the channel axis; a
 * Bi-Real shortcut's repeated channels).  Pure data movement: the values are copied bit for
 * bit.  Plain C on every path: nothing to select (see core/internal.h). */
#include <stdint.h>
#include <string.h>
#include "../core/internal.h"

/* [a, a + an) and [b, b + bn) floats share memory */
static int overlaps(const float *a, size_t an, const float *b, size_t bn) {
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + bn * sizeof(float) && b0 < a0 + an * sizeof(float);
}

typedef struct {
    int32_t n_in;
    const float *const *x;
    const int32_t *c;
    int64_t cy;
    float *y;
} concat_job;

/* n floats from s to d: 8 at a time by fixed-size copies (the compilers inline them as
 * vector moves; a memcpy call per pixel's 16-64 channels costs more than the copy) */
static inline void copy_floats(float *restrict d, const float *restrict s, int32_t n) {
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) memcpy(d + i, s + i, 8 * sizeof(float));
    for (; i < n; i++) d[i] = s[i];
}

static void concat_task(void *arg, int64_t begin, int64_t end) {
    const concat_job *j = arg;
    int64_t off = 0;
    for (int32_t k = 0; k < j->n_in; k++) { /* input by input: one source stream at a time */
        const int32_t c = j->c[k];
        const float *xk = j->x[k];
        for (int64_t r = begin; r < end; r++) copy_floats(j->y + r * j->cy + off, xk + r * c, c);
        off += c;
    }
}

int bnn_concat_f32(bnn_ctx *ctx, int32_t n_in, const float *const *x, const size_t *x_len, const int32_t *c,
                   int64_t rows, float *y, size_t y_len) {
    if (!ctx || !x || !x_len || !c || !y) return BNN_E_NULL;
    if (n_in < 1 || n_in > BNN_CONCAT_MAX_INPUTS || rows < 0) return BNN_E_SHAPE;
    int64_t cy = 0;
    for (int32_t k = 0; k < n_in; k++) {
        if (!x[k]) return BNN_E_NULL;
        if (c[k] < 0) return BNN_E_SHAPE;
        cy += c[k]; /* <= BNN_CONCAT_MAX_INPUTS * INT32_MAX: no overflow */
    }
    size_t ny = bnn_elems4(rows, cy, 1, 1);
    if (rows && cy && !ny) return BNN_E_SHAPE;
    if (y_len < ny) return BNN_E_SIZE;
    for (int32_t k = 0; k < n_in; k++) {
        size_t nk = bnn_elems4(rows, c[k], 1, 1);
        if (x_len[k] < nk) return BNN_E_SIZE;
        if (nk && overlaps(x[k], nk, y, ny)) return BNN_E_SHAPE;
    }
    if (!ny) return BNN_OK;
    concat_job j = {n_in, x, c, cy, y};
    int64_t grain = 16384 / cy + 1; /* rows of at least ~64 KB per task */
    bnn_parallel_for(ctx, rows, grain, concat_task, &j);
    return BNN_OK;
}
