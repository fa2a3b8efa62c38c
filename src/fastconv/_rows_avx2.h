/*
 * Row copies for the kernels' packing loops, used by _kernels.pyx: inline
 * AVX2 when it is compiled with -mavx2 (fastconv._kernels_avx2), plain C
 * otherwise.  Both move the same values, so the builds agree bit for bit.
 */
#ifndef FASTCONV_ROWS_AVX2_H
#define FASTCONV_ROWS_AVX2_H

#include <stddef.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#define FC_ROWS_AVX2 1
#else
#define FC_ROWS_AVX2 0
#endif

/* memcpy(dst, src, n) for the short rows that the depthwise kernels copy
 * into their padded planes (non-overlapping buffers).  With AVX2, rows of
 * 32 bytes or more move inline in 32-byte pieces, the last one ending at
 * the row's end: a memcpy call per 28-float row cost about 15 cycles, a
 * quarter of the depthwise filter gradient's time (perf, dw3x3 float32). */
static inline void fc_copy_row(void *dst, const void *src, size_t n)
{
#if FC_ROWS_AVX2
    if (n >= 32) {
        char *d = (char *)dst;
        const char *s = (const char *)src;
        size_t i;
        for (i = 0; i + 32 < n; i += 32)
            _mm256_storeu_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
        _mm256_storeu_si256((__m256i *)(d + n - 32),
                            _mm256_loadu_si256((const __m256i *)(s + n - 32)));
        return;
    }
#endif
    memcpy(dst, src, n);
}

/* dst[t] = src[2t] for t < n: the stride-2 row gather of the patch packing
 * (_pack_patches with column stride 2).  Two loads, one in-lane shuffle that
 * keeps the even elements and one cross-lane permute per vector; the vector
 * loop stops while at least one element is left, so it never reads
 * src[2n - 1], which may lie past the array.  The scalar loop it replaces
 * was 20 % of res_s2's float32 forward (perf); now 15 %, and the forward
 * about 5 % faster. */
static inline void fc_gather_even_f32(float *dst, const float *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 8 < n; t += 8) {
        __m256 a = _mm256_loadu_ps(src + 2 * t), b = _mm256_loadu_ps(src + 2 * t + 8);
        __m256 e = _mm256_shuffle_ps(a, b, 0x88);
        _mm256_storeu_ps(dst + t, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                      _mm256_castps_pd(e), 0xD8)));
    }
#endif
    for (; t < n; t++)
        dst[t] = src[2 * t];
}

static inline void fc_gather_even_f64(double *dst, const double *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 4 < n; t += 4) {
        __m256d a = _mm256_loadu_pd(src + 2 * t), b = _mm256_loadu_pd(src + 2 * t + 4);
        __m256d e = _mm256_unpacklo_pd(a, b);
        _mm256_storeu_pd(dst + t, _mm256_permute4x64_pd(e, 0xD8));
    }
#endif
    for (; t < n; t++)
        dst[t] = src[2 * t];
}

/* dst[2t] += src[t] for t < n, odd elements untouched: the stride-2 row
 * scatter of the scatter-order input gradient's col2im
 * (_unpack_add_patches with column stride 2).  Each source vector is
 * spread over the even lanes of two destination vectors, added there and
 * blended back, so each element gets the same single addition as in the
 * scalar loop (the same bits), and the vector loop stops while at least one
 * element is left, never touching dst[2n - 1]. */
static inline void fc_scatter_add_even_f32(float *dst, const float *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    const __m256i lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256i hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
    for (; t + 8 < n; t += 8) {
        __m256 s = _mm256_loadu_ps(src + t);
        __m256 a = _mm256_loadu_ps(dst + 2 * t), b = _mm256_loadu_ps(dst + 2 * t + 8);
        a = _mm256_blend_ps(a, _mm256_add_ps(a, _mm256_permutevar8x32_ps(s, lo)), 0x55);
        b = _mm256_blend_ps(b, _mm256_add_ps(b, _mm256_permutevar8x32_ps(s, hi)), 0x55);
        _mm256_storeu_ps(dst + 2 * t, a);
        _mm256_storeu_ps(dst + 2 * t + 8, b);
    }
#endif
    for (; t < n; t++)
        dst[2 * t] += src[t];
}

static inline void fc_scatter_add_even_f64(double *dst, const double *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 4 < n; t += 4) {
        __m256d s = _mm256_loadu_pd(src + t);
        __m256d a = _mm256_loadu_pd(dst + 2 * t), b = _mm256_loadu_pd(dst + 2 * t + 4);
        a = _mm256_blend_pd(a, _mm256_add_pd(a, _mm256_permute4x64_pd(s, 0x50)), 0x5);
        b = _mm256_blend_pd(b, _mm256_add_pd(b, _mm256_permute4x64_pd(s, 0xFA)), 0x5);
        _mm256_storeu_pd(dst + 2 * t, a);
        _mm256_storeu_pd(dst + 2 * t + 4, b);
    }
#endif
    for (; t < n; t++)
        dst[2 * t] += src[t];
}

/* dst[t] += src[t] for t < n: the unit-stride row of the scatter-order input
 * gradient's col2im (_unpack_add_patches).  Those rows are short (one
 * output row: 8 or 24 elements in the LeNet layers) and there are many of
 * them, so the compiler's loop -- an overlap check, a peeled head and a
 * remainder per row -- cost more than the additions.  Measured against it
 * (alternating processes, paired medians of two runs): the input gradient
 * of lenet1 1.06-1.16x faster in float64, 1.01-1.06x in float32; lenet2
 * 1.07-1.08x and 1.04-1.08x.  Each element gets the same single addition
 * as in the scalar loop (the same bits). */
static inline void fc_add_row_f32(float *dst, const float *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 8 <= n; t += 8)
        _mm256_storeu_ps(dst + t, _mm256_add_ps(_mm256_loadu_ps(dst + t),
                                                _mm256_loadu_ps(src + t)));
    if (t < n) {
        /* lanes t..n-1 only: masked loads never touch the lanes past n */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - t)), lane);
        __m256 a = _mm256_maskload_ps(dst + t, mask), b = _mm256_maskload_ps(src + t, mask);
        _mm256_maskstore_ps(dst + t, mask, _mm256_add_ps(a, b));
        return;
    }
#endif
    for (; t < n; t++)
        dst[t] += src[t];
}

static inline void fc_add_row_f64(double *dst, const double *src, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 4 <= n; t += 4)
        _mm256_storeu_pd(dst + t, _mm256_add_pd(_mm256_loadu_pd(dst + t),
                                                _mm256_loadu_pd(src + t)));
    if (t < n) {
        const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
        __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n - t)), lane);
        __m256d a = _mm256_maskload_pd(dst + t, mask), b = _mm256_maskload_pd(src + t, mask);
        _mm256_maskstore_pd(dst + t, mask, _mm256_add_pd(a, b));
        return;
    }
#endif
    for (; t < n; t++)
        dst[t] += src[t];
}

/* dst[t] += a * src[t] (a multiply, then an add: the builds compile with
 * -ffp-contract=off, so the scalar loop rounds the same way) for the
 * depthwise input gradient's rows, which are a few dozen elements long:
 * the compiler's own loop checked dst and src for overlap on every call. */
static inline void fc_axpy_row_f32(float *dst, const float *src, float a, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    const __m256 va = _mm256_set1_ps(a);
    for (; t + 8 <= n; t += 8)
        _mm256_storeu_ps(dst + t, _mm256_add_ps(_mm256_loadu_ps(dst + t),
                                                _mm256_mul_ps(va, _mm256_loadu_ps(src + t))));
#endif
    for (; t < n; t++)
        dst[t] += a * src[t];
}

static inline void fc_axpy_row_f64(double *dst, const double *src, double a, Py_ssize_t n)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    const __m256d va = _mm256_set1_pd(a);
    for (; t + 4 <= n; t += 4)
        _mm256_storeu_pd(dst + t, _mm256_add_pd(_mm256_loadu_pd(dst + t),
                                                _mm256_mul_pd(va, _mm256_loadu_pd(src + t))));
#endif
    for (; t < n; t++)
        dst[t] += a * src[t];
}

/* dst[2t] = even[t], dst[2t + 1] = odd[t] for t < n (and dst[2n] =
 * even[n] when extra_even): a row of the depthwise input gradient's split
 * plane put back together.  Values move unchanged, so any build gives the
 * same bits. */
static inline void fc_interleave_f32(float *dst, const float *even, const float *odd,
                                     Py_ssize_t n, int extra_even)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 8 <= n; t += 8) {
        __m256 e = _mm256_loadu_ps(even + t), o = _mm256_loadu_ps(odd + t);
        __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
        _mm256_storeu_ps(dst + 2 * t, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(dst + 2 * t + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
#endif
    for (; t < n; t++) {
        dst[2 * t] = even[t];
        dst[2 * t + 1] = odd[t];
    }
    if (extra_even)
        dst[2 * n] = even[n];
}

static inline void fc_interleave_f64(double *dst, const double *even, const double *odd,
                                     Py_ssize_t n, int extra_even)
{
    Py_ssize_t t = 0;
#if FC_ROWS_AVX2
    for (; t + 4 <= n; t += 4) {
        __m256d e = _mm256_loadu_pd(even + t), o = _mm256_loadu_pd(odd + t);
        __m256d lo = _mm256_unpacklo_pd(e, o), hi = _mm256_unpackhi_pd(e, o);
        _mm256_storeu_pd(dst + 2 * t, _mm256_permute2f128_pd(lo, hi, 0x20));
        _mm256_storeu_pd(dst + 2 * t + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
    }
#endif
    for (; t < n; t++) {
        dst[2 * t] = even[t];
        dst[2 * t + 1] = odd[t];
    }
    if (extra_even)
        dst[2 * n] = even[n];
}

#endif
