/*
 * The direct filter gradient's inner block for AVX-512 CPUs (float32:
 * fc_gradw_block_s, float64: fc_gradw_block_d), used by _kernels.pyx's
 * ``conv2d_grad_weight_direct``.
 *
 * For stride 1 the textbook's sum for one filter tap is a dot product of
 * two planes laid out with the same row pitch P: the sensitivity map dY
 * (Ho rows, zero beyond column Wo) and the zero-padded input shifted by
 * the tap, ``dW[o, c, u, v] = sum_k dY_o[k] * X_c[k + u*dh*P + v*dw]``.
 * A block computes up to FC_GRADW_MR x FC_GRADW_NR of those sums (output
 * channels x (channel, tap) rows) at once, in 16 vector accumulators: per
 * step it loads one vector of each dY row and each shifted input row and
 * makes 16 FMAs, reading both operands where they lie -- no im2col, no
 * packing.  (Measured alone on one core of the issue-3 Xeon, 32 images of
 * 16 x 32 x 32, 16 filters 3x3: 141 GFLOP/s in float32.)
 *
 * The caller (the kernel) pads every plane to a whole number of vectors
 * with zeros, and calls this only for finite inputs: the zero columns of
 * dY then meet input values whose products are exact zeros.
 *
 * Sums run lane by lane over the images and k in order, then across the
 * lanes in the fixed order of _mm512_reduce_add, so a result depends only
 * on the operands and the shape -- never on the thread that computes it.
 */
#ifndef FASTCONV_GRADW_AVX512_H
#define FASTCONV_GRADW_AVX512_H

#include <stddef.h>

#define FC_GRADW_MR 4
#define FC_GRADW_NR 4

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(_WIN32)
#define FC_GRADW_HAVE_AVX512 1
#include <immintrin.h>

static int fc_gradw_avx512_cpu(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/*
 * out[i * ld_out + t] = (accumulate ? out[...] : 0) + sum over n < n_img
 *     and k < k_len of  g[i * g_row + n * g_img + k] * xt[n * x_img + k]
 * for i < mr <= FC_GRADW_MR and the rows xt = x0..x3, t < nr <= FC_GRADW_NR
 * (the caller repeats a row for the missing ones).  k_len is a multiple of
 * the vector length; g is 64-byte aligned at every row and image.  Short
 * blocks compute on copies of their last row (discarded).
 */
#define FC_GRADW_BLOCK(SFX, T, V, OP, REDUCE)                                             \
__attribute__((target("avx512f")))                                                       \
static void fc_gradw_block_##SFX(const T* g, ptrdiff_t g_row, ptrdiff_t g_img,           \
                                 const T* x0, const T* x1, const T* x2, const T* x3,       \
                                 ptrdiff_t x_img, ptrdiff_t n_img, ptrdiff_t k_len,        \
                                 int mr, int nr, T* out, ptrdiff_t ld_out, int accumulate) \
{                                                                                          \
    const ptrdiff_t lanes = (ptrdiff_t)(64 / sizeof(T));                                   \
    const T* g0 = g;                                                                       \
    const T* g1 = g + (mr > 1 ? 1 : 0) * g_row;                                            \
    const T* g2 = g + (mr > 2 ? 2 : mr - 1) * g_row;                                       \
    const T* g3 = g + (mr > 3 ? 3 : mr - 1) * g_row;                                       \
    V c00 = OP(setzero)(), c01 = OP(setzero)(), c02 = OP(setzero)(), c03 = OP(setzero)();  \
    V c10 = OP(setzero)(), c11 = OP(setzero)(), c12 = OP(setzero)(), c13 = OP(setzero)();  \
    V c20 = OP(setzero)(), c21 = OP(setzero)(), c22 = OP(setzero)(), c23 = OP(setzero)();  \
    V c30 = OP(setzero)(), c31 = OP(setzero)(), c32 = OP(setzero)(), c33 = OP(setzero)();  \
    ptrdiff_t n, k;                                                                        \
    for (n = 0; n < n_img; n++) {                                                          \
        const ptrdiff_t go = n * g_img, xo = n * x_img;                                    \
        for (k = 0; k < k_len; k += lanes) {                                               \
            V a0 = OP(loadu)(x0 + xo + k), a1 = OP(loadu)(x1 + xo + k);                    \
            V a2 = OP(loadu)(x2 + xo + k), a3 = OP(loadu)(x3 + xo + k);                    \
            V b = OP(load)(g0 + go + k);                                                   \
            c00 = OP(fmadd)(b, a0, c00); c01 = OP(fmadd)(b, a1, c01);                      \
            c02 = OP(fmadd)(b, a2, c02); c03 = OP(fmadd)(b, a3, c03);                      \
            b = OP(load)(g1 + go + k);                                                     \
            c10 = OP(fmadd)(b, a0, c10); c11 = OP(fmadd)(b, a1, c11);                      \
            c12 = OP(fmadd)(b, a2, c12); c13 = OP(fmadd)(b, a3, c13);                      \
            b = OP(load)(g2 + go + k);                                                     \
            c20 = OP(fmadd)(b, a0, c20); c21 = OP(fmadd)(b, a1, c21);                      \
            c22 = OP(fmadd)(b, a2, c22); c23 = OP(fmadd)(b, a3, c23);                      \
            b = OP(load)(g3 + go + k);                                                     \
            c30 = OP(fmadd)(b, a0, c30); c31 = OP(fmadd)(b, a1, c31);                      \
            c32 = OP(fmadd)(b, a2, c32); c33 = OP(fmadd)(b, a3, c33);                      \
        }                                                                                  \
    }                                                                                      \
    {                                                                                      \
        const T sums[FC_GRADW_MR][FC_GRADW_NR] = {                                         \
            {REDUCE(c00), REDUCE(c01), REDUCE(c02), REDUCE(c03)},                          \
            {REDUCE(c10), REDUCE(c11), REDUCE(c12), REDUCE(c13)},                          \
            {REDUCE(c20), REDUCE(c21), REDUCE(c22), REDUCE(c23)},                          \
            {REDUCE(c30), REDUCE(c31), REDUCE(c32), REDUCE(c33)}};                         \
        int i, t;                                                                          \
        for (i = 0; i < mr; i++)                                                           \
            for (t = 0; t < nr; t++)                                                       \
                out[i * ld_out + t] = accumulate ? out[i * ld_out + t] + sums[i][t]        \
                                                 : sums[i][t];                             \
    }                                                                                      \
}

#define FC_GRADW_OP_S(x) _mm512_##x##_ps
#define FC_GRADW_OP_D(x) _mm512_##x##_pd
FC_GRADW_BLOCK(s, float, __m512, FC_GRADW_OP_S, _mm512_reduce_add_ps)
FC_GRADW_BLOCK(d, double, __m512d, FC_GRADW_OP_D, _mm512_reduce_add_pd)
#undef FC_GRADW_OP_S
#undef FC_GRADW_OP_D

#else  /* no AVX-512 target: the kernel always takes the GEMM path */

#define FC_GRADW_HAVE_AVX512 0

static int fc_gradw_avx512_cpu(void) { return 0; }

#define FC_GRADW_STUB(SFX, T)                                                              \
static void fc_gradw_block_##SFX(const T* g, ptrdiff_t g_row, ptrdiff_t g_img,           \
                                 const T* x0, const T* x1, const T* x2, const T* x3,       \
                                 ptrdiff_t x_img, ptrdiff_t n_img, ptrdiff_t k_len,        \
                                 int mr, int nr, T* out, ptrdiff_t ld_out, int accumulate) \
{                                                                                          \
    (void)g; (void)g_row; (void)g_img; (void)x0; (void)x1; (void)x2; (void)x3;            \
    (void)x_img; (void)n_img; (void)k_len;                                                 \
    (void)mr; (void)nr; (void)out; (void)ld_out; (void)accumulate;                         \
}
FC_GRADW_STUB(s, float)
FC_GRADW_STUB(d, double)
#undef FC_GRADW_STUB

#endif
#endif
