/*
 * AVX2 plane kernel for the depthwise 3x3 correlation with column stride 1
 * (MobileNet-style layers, and their stride-1 input gradient, which is the
 * same correlation with rotated filters), and the channels-last depthwise
 * pixel (fc_dw_pixel, at the end), used by _kernels.pyx when it is
 * compiled with -mavx2 (fastconv._kernels_avx2).  The baseline build sees
 * FC_DW_AVX2 == 0 and keeps its Cython loop, the reference this kernel is
 * tested against bit for bit.
 *
 * Why intrinsics: the Cython loop is vectorized by GCC, but per output row
 * it re-checks aliasing, reloads the nine weights and ends in a vector and
 * a scalar remainder; a 28-wide row has only three full float vectors, so
 * that overhead took about half the loop's time (perf, dw3x3 float32).
 * Here the weights live in registers for the whole plane and a row's last
 * block is re-run to end at the row's end (its outputs are written twice
 * with the same values), so no row has a remainder.
 *
 * Every output is, in this order and with no fused multiply-add,
 *   b0 + w0*r0[q] + w1*r0[q+d] + w2*r0[q+2d] + w3*r1[q] + ... + w8*r2[q+2d]
 * summed left to right -- exactly the portable loop's expression, so the
 * bits are the same.
 *
 * Preconditions (the caller checks them): out_w >= the lanes (8 float, 4
 * double); `padded` holds the rows (out_h - 1) * stride_h + 2 * dil_h + 1
 * of `cols` >= out_w + 2 * dil_w columns that the taps read.
 */
#ifndef FASTCONV_DEPTHWISE_AVX2_H
#define FASTCONV_DEPTHWISE_AVX2_H

#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>

#define FC_DW_AVX2 1

/* FC_DW3X3_PLANE(dt, T, V, LANES, SET1, LOADU, STOREU, MUL, ADD) defines
 * fc_dw3x3_plane_dt over the vector type V of LANES elements of T. */
#define FC_DW3X3_PLANE(dt, T, V, LANES, SET1, LOADU, STOREU, MUL, ADD)                   \
static inline void fc_dw3x3_plane_##dt(const T *padded, Py_ssize_t cols,               \
                                       Py_ssize_t stride_h, Py_ssize_t dil_h,          \
                                       Py_ssize_t dil_w, const T *w, T b0, T *out,     \
                                       Py_ssize_t out_h, Py_ssize_t out_w)             \
{                                                                                      \
    const V w0 = SET1(w[0]), w1 = SET1(w[1]), w2 = SET1(w[2]);                         \
    const V w3 = SET1(w[3]), w4 = SET1(w[4]), w5 = SET1(w[5]);                         \
    const V w6 = SET1(w[6]), w7 = SET1(w[7]), w8 = SET1(w[8]);                         \
    const V b = SET1(b0);                                                              \
    const Py_ssize_t d1 = dil_w, d2 = 2 * dil_w, last = out_w - (LANES);               \
    Py_ssize_t p, q;                                                                   \
    for (p = 0; p < out_h; p++) {                                                      \
        const T *r0 = padded + p * stride_h * cols;                                    \
        const T *r1 = r0 + dil_h * cols, *r2 = r1 + dil_h * cols;                      \
        T *d = out + p * out_w;                                                        \
        for (q = 0;; q += (LANES)) {                                                   \
            V acc;                                                                     \
            if (q > last)                                                              \
                q = last;                                                              \
            acc = ADD(b, MUL(w0, LOADU(r0 + q)));                                      \
            acc = ADD(acc, MUL(w1, LOADU(r0 + q + d1)));                               \
            acc = ADD(acc, MUL(w2, LOADU(r0 + q + d2)));                               \
            acc = ADD(acc, MUL(w3, LOADU(r1 + q)));                                    \
            acc = ADD(acc, MUL(w4, LOADU(r1 + q + d1)));                               \
            acc = ADD(acc, MUL(w5, LOADU(r1 + q + d2)));                               \
            acc = ADD(acc, MUL(w6, LOADU(r2 + q)));                                    \
            acc = ADD(acc, MUL(w7, LOADU(r2 + q + d1)));                               \
            acc = ADD(acc, MUL(w8, LOADU(r2 + q + d2)));                               \
            STOREU(d + q, acc);                                                        \
            if (q == last)                                                             \
                break;                                                                 \
        }                                                                              \
    }                                                                                  \
}

FC_DW3X3_PLANE(f32, float, __m256, 8, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
               _mm256_mul_ps, _mm256_add_ps)
FC_DW3X3_PLANE(f64, double, __m256d, 4, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd,
               _mm256_mul_pd, _mm256_add_pd)
#undef FC_DW3X3_PLANE

/* Channels-last (NHWC) depthwise pixel: dst[c] = sum_t wts[t][c] * src[t][c]
 * over n_taps taps in the given order, from +0.0, no fused multiply-add --
 * the portable _dw_pixel's expression, so the same bits.  Four vectors of
 * channels are summed side by side: each lane's sum is one chain of adds,
 * and one or two chains at a time (the Cython loop's 16-channel blocks)
 * left every add waiting on the one before (NHWC dw3x3 forward 1.4-1.5x
 * the time of the NCHW plane kernel).  The last vector is re-run to end at
 * ch (the same values written twice); ch >= the lanes.
 * FC_DW_PIXEL(dt, T, V, LANES, ZERO, LOADU, STOREU, MUL, ADD) defines
 * fc_dw_pixel_dt. */
#define FC_DW_PIXEL(dt, T, V, LANES, ZERO, LOADU, STOREU, MUL, ADD)                      \
static inline __attribute__((always_inline)) void                                      \
fc_dw_pixel_vecs_##dt(T *dst, const T **src, const T **wts, Py_ssize_t n_taps,          \
                      Py_ssize_t c, const int nv)                                      \
{                                                                                      \
    V acc[4];                                                                          \
    Py_ssize_t t;                                                                      \
    int u;                                                                             \
    for (u = 0; u < nv; u++)                                                           \
        acc[u] = ZERO();                                                               \
    for (t = 0; t < n_taps; t++) {                                                     \
        const T *a = wts[t] + c, *b = src[t] + c;                                      \
        for (u = 0; u < nv; u++)                                                       \
            acc[u] = ADD(acc[u], MUL(LOADU(a + u * (LANES)), LOADU(b + u * (LANES)))); \
    }                                                                                  \
    for (u = 0; u < nv; u++)                                                           \
        STOREU(dst + c + u * (LANES), acc[u]);                                         \
}                                                                                      \
                                                                                       \
static inline void fc_dw_pixel_##dt(T *dst, const T **src, const T **wts,              \
                                    Py_ssize_t n_taps, Py_ssize_t ch)                  \
{                                                                                      \
    Py_ssize_t c;                                                                      \
    for (c = 0; c + 4 * (LANES) <= ch; c += 4 * (LANES))                               \
        fc_dw_pixel_vecs_##dt(dst, src, wts, n_taps, c, 4);                            \
    for (; c + (LANES) <= ch; c += (LANES))                                            \
        fc_dw_pixel_vecs_##dt(dst, src, wts, n_taps, c, 1);                            \
    if (c < ch)                                                                        \
        fc_dw_pixel_vecs_##dt(dst, src, wts, n_taps, ch - (LANES), 1);                 \
}

FC_DW_PIXEL(f32, float, __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps,
            _mm256_mul_ps, _mm256_add_ps)
FC_DW_PIXEL(f64, double, __m256d, 4, _mm256_setzero_pd, _mm256_loadu_pd, _mm256_storeu_pd,
            _mm256_mul_pd, _mm256_add_pd)
#undef FC_DW_PIXEL

#else  /* no AVX2: the Cython loop runs; these are never called */

#define FC_DW_AVX2 0
#define fc_dw3x3_plane_f32(padded, cols, sh, dh, dw, w, b0, out, oh, ow) abort()
#define fc_dw3x3_plane_f64(padded, cols, sh, dh, dw, w, b0, out, oh, ow) abort()
#define fc_dw_pixel_f32(dst, src, wts, n_taps, ch) abort()
#define fc_dw_pixel_f64(dst, src, wts, n_taps, ch) abort()

#endif

#endif
