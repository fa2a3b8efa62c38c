/*
 * AVX2 kernels for pooling, used by _kernels.pyx (and _kernels_nhwc.pxi) when
 * that module is compiled with -mavx2 (fastconv._kernels_avx2); the baseline
 * build sees FC_POOL_AVX2 == 0 and keeps its portable Cython loops, which
 * remain the reference these kernels are tested against bit for bit.
 *
 * Both builds: the prefetch helpers and fc_stream_copy (streaming stores
 * of a finished gradient plane).
 *
 * Contents of the AVX2 build, each in float (8 lanes) and double (4 lanes):
 * - NCHW rows of k x k windows, k = 2 or 3, stride 2 along the row: max and
 *   average forward (fc_max_s2, fc_avg_s2, and whole planes of them,
 *   fc_max_plane_s2, fc_avg_plane_s2), the 2x2 and 3x3 average
 *   gradient written once (fc_avg_grad_k2s2, fc_avg_grad_k3s2 and its
 *   whole-plane loop fc_avg_grad_plane_k3s2, and the spread row
 *   fc_avg_spread_s2), and the 2x2 max gradient written once
 *   when every index lies in its own 2x2 block (fc_max_grad_k2s2).
 * - NHWC pixels, vectors along the channels: a window's max or sum kept in
 *   registers (fc_max_px, fc_avg_px), the average gradient's gather
 *   (fc_avg_gather_px), and the 2x2 max and average gradients written once
 *   (fc_max_grad_px, fc_avg_grad_px_k2).
 *
 * Why C intrinsics here and nowhere else: a stride-2 row with a third tap
 * (x[2t], x[2t+1], x[2t+2]) leaves GCC a scalar, branchy remainder on every
 * row ("peeling for gaps"), and a 56-wide row has only a few vectors, so
 * that remainder costs as much as the vector loop; and GCC keeps neither a
 * running NHWC maximum nor its int64 index in registers across taps.  Here
 * a row is split into even and odd columns with two shuffles per pair of
 * loads, and the last block of a row (or of a pixel's channels) is re-run
 * to end at the row's end -- its outputs are written twice with the same
 * values -- so there is no scalar remainder at all.
 *
 * Every result is bit-for-bit the portable loops' result:
 * - max: the winner is "the last NaN if any, else the first maximum in
 *   row-major window order", exactly what the portable tap-by-tap fold
 *   keeps.  That rule is associative, so NCHW windows are reduced as a tree
 *   (taps of a row, then rows) with shorter dependency chains.
 * - average: the taps are summed one by one in row-major window order,
 *   starting from +0.0, and the sum is divided once, as the portable loop
 *   does (floating-point addition is not associative, so no tree here).
 * - written-once gradients: +0.0 + value, which is what adding a value to a
 *   zero-filled element gives.
 *
 * Preconditions of the NCHW row kernels (the caller checks them):
 * n >= FC_F32_LANES (float) or FC_F64_LANES (double) windows; every window
 * [2t, 2t + k) of the k rows r0, r0 + in_w, r0 + 2 in_w lies inside the
 * input, and the kernels read nothing outside those windows; the flat
 * indices of a float row fit int32.  The NHWC kernels need ch >= the lanes.
 */
#ifndef FASTCONV_POOL_AVX2_H
#define FASTCONV_POOL_AVX2_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FC_F32_LANES 8
#define FC_F64_LANES 4

/* Ask for the cache lines of [p, p + bytes) ahead of use, to read
 * (fc_prefetch) or to write (fc_prefetch_w); both builds.  Why the pools
 * prefetch: see PREFETCH_OUT_ROWS in _kernels.pyx. */
static inline void fc_prefetch(const void *p, Py_ssize_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *c = (const char *)p;
    Py_ssize_t b;
    for (b = 0; b < bytes; b += 64)
        __builtin_prefetch(c + b, 0, 3);
#else
    (void)p;
    (void)bytes;
#endif
}

static inline void fc_prefetch_w(void *p, Py_ssize_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    char *c = (char *)p;
    Py_ssize_t b;
    for (b = 0; b < bytes; b += 64)
        __builtin_prefetch(c + b, 1, 3);
#else
    (void)p;
    (void)bytes;
#endif
}

/* Prefetch elements [o, o + n) of elem bytes after base, clipped to the
 * `left` elements from base to the end of its array (nothing outside it
 * is asked for); spans over 8 KiB are left to the hardware prefetcher,
 * which keeps up on long runs. */
static inline void fc_prefetch_clipped(const void *base, Py_ssize_t elem, Py_ssize_t left,
                                       Py_ssize_t o, Py_ssize_t n, int write)
{
    if (o >= left || o + n <= 0)
        return;
    if (o < 0) {
        n += o;
        o = 0;
    }
    if (n > left - o)
        n = left - o;
    if (n * elem > 8192)
        return;
    if (write)
        fc_prefetch_w((char *)base + o * elem, n * elem);
    else
        fc_prefetch((const char *)base + o * elem, n * elem);
}

/* Prefetch the input rows that output row p + ahead of the plane at src
 * adds to its window (min(stride_h, k) rows of in_w elements of elem
 * bytes, the window starting at row (p + ahead) * stride_h - pad_h),
 * clipped to the `left` elements from src to the end of the array (see
 * fc_prefetch_clipped): past the plane's last row come the next plane's
 * rows, the ones a static schedule gives the same thread next.  Nothing
 * when ahead is 0. */
static inline void fc_prefetch_rows_ahead(const void *src, Py_ssize_t elem,
                                          Py_ssize_t left, Py_ssize_t p,
                                          Py_ssize_t ahead, Py_ssize_t k,
                                          Py_ssize_t stride_h, Py_ssize_t pad_h,
                                          Py_ssize_t in_w)
{
    Py_ssize_t rows = stride_h < k ? stride_h : k;
    if (ahead > 0)
        fc_prefetch_clipped(src, elem, left,
                            ((p + ahead) * stride_h - pad_h + k - rows) * in_w,
                            rows * in_w, 0);
}

/* The stride-2 write-once gradients' prefetch: grad_out row p + ahead of
 * the plane at g (and its indices row, if idx is not NULL) to read, and
 * the two input rows of the plane at dx that it writes, to write; g_left
 * and dx_left count the elements from the planes' starts to the arrays'
 * ends (past a plane come the next plane's rows, as above). */
static inline void fc_prefetch_grad_rows(const void *g, const int64_t *idx, Py_ssize_t elem,
                                         Py_ssize_t g_left, Py_ssize_t out_w, void *dx,
                                         Py_ssize_t dx_left, Py_ssize_t in_w, Py_ssize_t p,
                                         Py_ssize_t ahead)
{
    if (ahead <= 0)
        return;
    fc_prefetch_clipped(g, elem, g_left, (p + ahead) * out_w, out_w, 0);
    if (idx != NULL)
        fc_prefetch_clipped(idx, sizeof(int64_t), g_left, (p + ahead) * out_w, out_w, 0);
    fc_prefetch_clipped(dx, elem, dx_left, 2 * (p + ahead) * in_w, 2 * in_w, 1);
}

/* Copy a finished gradient plane from a thread's scratch plane to its place
 * in grad_in with streaming (non-temporal) stores, both builds: the stores
 * go around the caches, so the destination's lines are neither read first
 * (a plain store's read-for-ownership) nor left to evict the operands still
 * to be read.  For gradients far larger than the caches (see
 * STREAM_MIN_BYTES in _kernels.pyx).  The head and tail that are not whole
 * aligned 16-byte blocks are copied plainly.  The caller ends its streaming
 * with fc_stream_fence() before other threads may read the data. */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline void fc_stream_copy(void *dst, const void *src, Py_ssize_t bytes)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    Py_ssize_t head = (Py_ssize_t)((16 - ((uintptr_t)d & 15)) & 15);
    if (head > bytes)
        head = bytes;
    memcpy(d, s, (size_t)head);
    d += head;
    s += head;
    bytes -= head;
    for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    for (; bytes >= 16; bytes -= 16, d += 16, s += 16)
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    memcpy(d, s, (size_t)bytes);
}

static inline void fc_stream_fence(void)
{
    _mm_sfence();
}
#else
static inline void fc_stream_copy(void *dst, const void *src, Py_ssize_t bytes)
{
    memcpy(dst, src, (size_t)bytes);
}

static inline void fc_stream_fence(void)
{
}
#endif

#if defined(__AVX2__)
#include <immintrin.h>

#define FC_POOL_AVX2 1

/* The row kernels take k (2 or 3) at run time and dispatch to a copy
 * compiled for that constant: its tap loops unroll and its branches go. */
#if defined(__GNUC__) || defined(__clang__)
#define FC_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define FC_ALWAYS_INLINE static inline
#endif

/* Loops over a plane's rows, the same for both types (so written once):
 * FC_PLANE_LOOPS(dt, T, BASE) defines fc_max_plane_avx2_dt and
 * fc_avg_plane_s2_dt (see the comment before its float use), over the
 * k-constant row kernels fc_max_s2_k_dt / fc_avg_s2_k_dt; BASE is the
 * type of a row's flat index base. */
#define FC_PLANE_LOOPS(dt, T, BASE)                                                    \
FC_ALWAYS_INLINE void fc_max_plane_k_##dt(const T *src, Py_ssize_t in_w, const int k,  \
                                          Py_ssize_t stride_h, T *out, int64_t *out_idx, \
                                          Py_ssize_t out_h, Py_ssize_t out_w,          \
                                          Py_ssize_t ahead, Py_ssize_t left)           \
{                                                                                      \
    Py_ssize_t p;                                                                      \
    for (p = 0; p < out_h; p++) {                                                      \
        fc_prefetch_rows_ahead(src, sizeof(T), left, p, ahead, k, stride_h, 0, in_w); \
        fc_max_s2_k_##dt(src + p * stride_h * in_w, in_w, k, out + p * out_w,          \
                         out_idx + p * out_w, out_w, (BASE)(p * stride_h * in_w));     \
    }                                                                                  \
}                                                                                      \
                                                                                       \
static inline void fc_max_plane_avx2_##dt(const T *src, Py_ssize_t in_w, Py_ssize_t k, \
                                          Py_ssize_t stride_h, T *out, int64_t *out_idx, \
                                          Py_ssize_t out_h, Py_ssize_t out_w,          \
                                          Py_ssize_t ahead, Py_ssize_t left)           \
{                                                                                      \
    if (k == 3)                                                                        \
        fc_max_plane_k_##dt(src, in_w, 3, stride_h, out, out_idx, out_h, out_w, ahead, left); \
    else                                                                               \
        fc_max_plane_k_##dt(src, in_w, 2, stride_h, out, out_idx, out_h, out_w, ahead, left); \
}                                                                                      \
                                                                                       \
FC_ALWAYS_INLINE void fc_avg_plane_k_##dt(const T *src, Py_ssize_t in_w, const int k,  \
                                          Py_ssize_t stride_h, T *out, Py_ssize_t out_h, \
                                          Py_ssize_t out_w, Py_ssize_t ahead,          \
                                          Py_ssize_t left)                             \
{                                                                                      \
    Py_ssize_t p;                                                                      \
    for (p = 0; p < out_h; p++) {                                                      \
        fc_prefetch_rows_ahead(src, sizeof(T), left, p, ahead, k, stride_h, 0, in_w); \
        fc_avg_s2_k_##dt(src + p * stride_h * in_w, in_w, k, out + p * out_w, out_w,   \
                         (T)(k * k));                                                  \
    }                                                                                  \
}                                                                                      \
                                                                                       \
static inline void fc_avg_plane_s2_##dt(const T *src, Py_ssize_t in_w, Py_ssize_t k,   \
                                        Py_ssize_t stride_h, T *out, Py_ssize_t out_h, \
                                        Py_ssize_t out_w, Py_ssize_t ahead,            \
                                        Py_ssize_t left)                               \
{                                                                                      \
    if (k == 3)                                                                        \
        fc_avg_plane_k_##dt(src, in_w, 3, stride_h, out, out_h, out_w, ahead, left);   \
    else                                                                               \
        fc_avg_plane_k_##dt(src, in_w, 2, stride_h, out, out_h, out_w, ahead, left);   \
}

/* FC_AVG_GRAD_PLANE_K3S2(dt, T) defines fc_avg_grad_plane_k3s2_dt (see the
 * comment before its float use) over fc_div_row_dt and fc_avg_grad_k3s2_dt. */
#define FC_AVG_GRAD_PLANE_K3S2(dt, T)                                                  \
static inline void fc_avg_grad_plane_k3s2_##dt(const T *g, T *dx, T *shares,           \
                                               Py_ssize_t in_h, Py_ssize_t in_w,       \
                                               Py_ssize_t out_h, Py_ssize_t out_w,     \
                                               Py_ssize_t ahead, Py_ssize_t g_left,    \
                                               Py_ssize_t dx_left)                     \
{                                                                                      \
    Py_ssize_t p, row_len = in_w / 2 + 2;                                              \
    T *zero = shares + 3 * row_len, *prev = zero, *cur, *d_even;                       \
    fc_div_row_##dt(g, shares + 1, out_w, 9);                                          \
    for (p = 0; p < out_h; p++) {                                                      \
        fc_prefetch_grad_rows(g, NULL, sizeof(T), g_left, out_w, dx, dx_left, in_w, p, \
                              ahead);                                                  \
        if (p + 1 < out_h)                                                             \
            fc_div_row_##dt(g + (p + 1) * out_w, shares + ((p + 1) % 3) * row_len + 1, \
                            out_w, 9);                                                 \
        cur = shares + (p % 3) * row_len;                                              \
        d_even = dx + 2 * p * in_w;                                                    \
        fc_avg_grad_k3s2_##dt(prev, cur, d_even, d_even + in_w, in_w);                 \
        prev = cur;                                                                    \
    }                                                                                  \
    d_even = dx + 2 * out_h * in_w;                                                    \
    fc_avg_grad_k3s2_##dt(prev, zero, d_even, NULL, in_w);                             \
    memset(d_even + in_w, 0, (size_t)((in_h - 2 * out_h - 1) * in_w) * sizeof(T));     \
}

/* ---- float: 8 windows per block ------------------------------------------
 * Even/odd splits come out in column order 0 1 4 5 | 2 3 6 7 (shufps works
 * within 128-bit halves); one 64-bit permute per result restores 0..7. */

typedef struct { __m256 val; __m256i off; } fc_best_f32;

/* take b over a when b > a or b is NaN (see the header comment) */
static inline fc_best_f32 fc_combine_f32(fc_best_f32 a, fc_best_f32 b)
{
    __m256 take = _mm256_or_ps(_mm256_cmp_ps(b.val, a.val, _CMP_GT_OQ),
                               _mm256_cmp_ps(b.val, b.val, _CMP_UNORD_Q));
    fc_best_f32 r;
    r.val = _mm256_blendv_ps(a.val, b.val, take);
    r.off = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(a.off), _mm256_castsi256_ps(b.off), take));
    return r;
}

/* taps 0, 1 (and 2) of 8 windows of one row, as even, odd (and next even) */
static inline void fc_taps_f32(const float *s, __m256 *e, __m256 *o, __m256 *e2,
                               int k)
{
    __m256 a = _mm256_loadu_ps(s), b = _mm256_loadu_ps(s + 8);
    *e = _mm256_shuffle_ps(a, b, 0x88);
    *o = _mm256_shuffle_ps(a, b, 0xDD);
    if (k == 3) {
        /* s[2], s[4], ..., s[16]: from s+2 (lanes 0 2 4 6) and s+9 (1 3 5 7),
           never reading past the last window */
        *e2 = _mm256_shuffle_ps(_mm256_loadu_ps(s + 2), _mm256_loadu_ps(s + 9), 0xD8);
    }
}

static inline __m256 fc_column_order_f32(__m256 v)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/* d[0..16) = e0 o0 e1 o1 ... e7 o7: even and odd columns back into a row */
static inline void fc_store_pairs_f32(float *d, __m256 e, __m256 o)
{
    __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

static inline void fc_max_block_f32(const float *r0, Py_ssize_t in_w, int k,
                                    Py_ssize_t t, float *out, int64_t *out_idx,
                                    int32_t base)
{
    fc_best_f32 row_best[3], tap, best;
    __m256 e, o, e2 = _mm256_setzero_ps();
    int i;
    for (i = 0; i < k; i++) {
        int32_t row_off = (int32_t)(i * in_w);
        fc_taps_f32(r0 + i * in_w + 2 * t, &e, &o, &e2, k);
        row_best[i].val = e;
        row_best[i].off = _mm256_set1_epi32(row_off);
        tap.val = o;
        tap.off = _mm256_set1_epi32(row_off + 1);
        row_best[i] = fc_combine_f32(row_best[i], tap);
        if (k == 3) {
            tap.val = e2;
            tap.off = _mm256_set1_epi32(row_off + 2);
            row_best[i] = fc_combine_f32(row_best[i], tap);
        }
    }
    best = fc_combine_f32(row_best[0], row_best[1]);
    if (k == 3)
        best = fc_combine_f32(best, row_best[2]);
    __m256i idx = _mm256_permute4x64_epi64(best.off, 0xD8);
    idx = _mm256_add_epi32(idx, _mm256_add_epi32(
        _mm256_set1_epi32(base + 2 * (int32_t)t),
        _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)));
    _mm256_storeu_ps(out + t, fc_column_order_f32(best.val));
    _mm256_storeu_si256((__m256i *)(out_idx + t),
                        _mm256_cvtepi32_epi64(_mm256_castsi256_si128(idx)));
    _mm256_storeu_si256((__m256i *)(out_idx + t + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(idx, 1)));
}

FC_ALWAYS_INLINE void
fc_max_s2_k_f32(const float *r0, Py_ssize_t in_w, const int k, float *out,
               int64_t *out_idx, Py_ssize_t n, int32_t base)
{
    Py_ssize_t t;
    for (t = 0; t + FC_F32_LANES <= n; t += FC_F32_LANES)
        fc_max_block_f32(r0, in_w, k, t, out, out_idx, base);
    if (t < n)
        fc_max_block_f32(r0, in_w, k, n - FC_F32_LANES, out, out_idx, base);
}

/* Maxima and flat indices (base = flat index of r0[0]) of windows 0..n-1. */
static inline void fc_max_s2_f32(const float *r0, Py_ssize_t in_w, Py_ssize_t k,
                                 float *out, int64_t *out_idx, Py_ssize_t n,
                                 int32_t base)
{
    if (k == 3)
        fc_max_s2_k_f32(r0, in_w, 3, out, out_idx, n, base);
    else
        fc_max_s2_k_f32(r0, in_w, 2, out, out_idx, n, base);
}

static inline void fc_avg_block_f32(const float *r0, Py_ssize_t in_w, int k,
                                    Py_ssize_t t, float *out, __m256 div)
{
    __m256 sum = _mm256_setzero_ps(), e, o, e2 = _mm256_setzero_ps();
    int i;
    for (i = 0; i < k; i++) {
        fc_taps_f32(r0 + i * in_w + 2 * t, &e, &o, &e2, k);
        sum = _mm256_add_ps(_mm256_add_ps(sum, e), o);
        if (k == 3)
            sum = _mm256_add_ps(sum, e2);
    }
    _mm256_storeu_ps(out + t, fc_column_order_f32(_mm256_div_ps(sum, div)));
}

FC_ALWAYS_INLINE void
fc_avg_s2_k_f32(const float *r0, Py_ssize_t in_w, const int k, float *out,
               Py_ssize_t n, float div)
{
    Py_ssize_t t;
    __m256 d = _mm256_set1_ps(div);
    for (t = 0; t + FC_F32_LANES <= n; t += FC_F32_LANES)
        fc_avg_block_f32(r0, in_w, k, t, out, d);
    if (t < n)
        fc_avg_block_f32(r0, in_w, k, n - FC_F32_LANES, out, d);
}

/* Window sums divided by div, windows 0..n-1. */
static inline void fc_avg_s2_f32(const float *r0, Py_ssize_t in_w, Py_ssize_t k,
                                 float *out, Py_ssize_t n, float div)
{
    if (k == 3)
        fc_avg_s2_k_f32(r0, in_w, 3, out, n, div);
    else
        fc_avg_s2_k_f32(r0, in_w, 2, out, n, div);
}

/* A whole plane of k x k windows, strides (stride_h, 2), that all lie
 * inside the input (no padding; out_w >= the lanes): every row by the row
 * kernel with no per-row bookkeeping between them, prefetching `ahead`
 * output rows ahead within the `left` input elements from src to the end
 * of the array (see fc_prefetch_rows_ahead).  The windows are whole, so
 * the average's divisor is k * k in both count_include_pad modes. */
FC_PLANE_LOOPS(f32, float, int32_t)


static inline void fc_avg_grad_block_f32(const float *g, float *d0, float *d1,
                                         Py_ssize_t t, __m256 div)
{
    /* +0.0 + share: the portable loop adds the share to a zeroed row */
    __m256 s = _mm256_add_ps(_mm256_setzero_ps(),
                             _mm256_div_ps(_mm256_loadu_ps(g + t), div));
    fc_store_pairs_f32(d0 + 2 * t, s, s);
    fc_store_pairs_f32(d1 + 2 * t, s, s);
}

/* 2x2, stride-2 average-pool gradient of one output row: columns 2t, 2t+1
   of input rows d0 and d1 get g[t] / div, for t < n. */
static inline void fc_avg_grad_k2s2_f32(const float *g, float *d0, float *d1,
                                        Py_ssize_t n, float div)
{
    Py_ssize_t t;
    __m256 d = _mm256_set1_ps(div);
    for (t = 0; t + FC_F32_LANES <= n; t += FC_F32_LANES)
        fc_avg_grad_block_f32(g, d0, d1, t, d);
    if (t < n)
        fc_avg_grad_block_f32(g, d0, d1, n - FC_F32_LANES, d);
}

/* Max-pool gradient of one output row whose every index lies in its own
   2x2 block (rows d0, d1 = d0 + in_w, columns 2t, 2t+1; base = flat index
   of d0[0]): those 2n elements get +0.0 + g[t] at the index and +0.0
   elsewhere -- what the zero-fill-and-scatter loop makes, since disjoint
   blocks take at most one contribution each.  Returns 0, having written an
   unspecified part of the rows, at the first index outside its block. */
static inline int fc_max_grad_block_f32(const float *g, const int64_t *idx,
                                        float *d0, float *d1, Py_ssize_t t,
                                        int64_t base, int64_t in_w)
{
    __m256i at = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * (int64_t)t),
                                  _mm256_setr_epi64x(0, 2, 4, 6));
    __m256i rel_a = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + t)), at);
    __m256i rel_b = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + t + 4)),
                                     _mm256_add_epi64(at, _mm256_set1_epi64x(8)));
    /* one mask per tap; the low halves of two 64-bit masks packed into
       32-bit lanes in column order 0 1 4 5 | 2 3 6 7 */
#define FC_TAP_MASK(c) _mm256_shuffle_ps(                                     \
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(rel_a, _mm256_set1_epi64x(c))), \
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(rel_b, _mm256_set1_epi64x(c))), 0x88)
    __m256 m00 = FC_TAP_MASK(0), m01 = FC_TAP_MASK(1);
    __m256 m10 = FC_TAP_MASK(in_w), m11 = FC_TAP_MASK(in_w + 1);
#undef FC_TAP_MASK
    __m256 hit = _mm256_or_ps(_mm256_or_ps(m00, m01), _mm256_or_ps(m10, m11));
    if (_mm256_movemask_ps(hit) != 0xFF)
        return 0;
    __m256 gv = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(g + t));
    gv = fc_column_order_f32(gv);   /* the same permutation, to match the masks */
    __m256 v00 = _mm256_and_ps(m00, gv), v01 = _mm256_and_ps(m01, gv);
    __m256 v10 = _mm256_and_ps(m10, gv), v11 = _mm256_and_ps(m11, gv);
    /* unpacking lanes in the order 0 1 4 5 | 2 3 6 7 interleaves the taps
       into columns 0..7 (low) and 8..15 (high) */
    _mm256_storeu_ps(d0 + 2 * t, _mm256_unpacklo_ps(v00, v01));
    _mm256_storeu_ps(d0 + 2 * t + 8, _mm256_unpackhi_ps(v00, v01));
    _mm256_storeu_ps(d1 + 2 * t, _mm256_unpacklo_ps(v10, v11));
    _mm256_storeu_ps(d1 + 2 * t + 8, _mm256_unpackhi_ps(v10, v11));
    return 1;
}

static inline int fc_max_grad_k2s2_f32(const float *g, const int64_t *idx, float *d0,
                                       Py_ssize_t in_w, Py_ssize_t n, int64_t base)
{
    Py_ssize_t t;
    for (t = 0; t + FC_F32_LANES <= n; t += FC_F32_LANES)
        if (!fc_max_grad_block_f32(g, idx, d0, d0 + in_w, t, base, in_w))
            return 0;
    if (t < n)
        return fc_max_grad_block_f32(g, idx, d0, d0 + in_w, n - FC_F32_LANES, base, in_w);
    return 1;
}

/* One output row's average-pool shares spread over its input row, for
   k = 2 or 3 at stride 2 with no padding: h[2q] = (+0.0 + s[q]) + s[q-1]
   (k = 3; just +0.0 + s[q] for k = 2) and h[2q+1] = +0.0 + s[q], for
   q < n (a multiple of the lanes), where s = sp + 1, sp[0] = 0 and s is
   zero past the row's windows -- the sums, in the same order, that the
   portable zero-fill, pair and third-tap loops make. */
static inline void fc_avg_spread_s2_f32(const float *sp, float *h, Py_ssize_t n,
                                        Py_ssize_t k)
{
    Py_ssize_t t;
    for (t = 0; t < n; t += FC_F32_LANES) {
        __m256 cur = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(sp + 1 + t));
        __m256 even = k == 3 ? _mm256_add_ps(cur, _mm256_loadu_ps(sp + t)) : cur;
        fc_store_pairs_f32(h + 2 * t, even, cur);
    }
}

/* 3x3, stride-2 average-pool gradient, written once: with H(s) the spread
   row of fc_avg_spread_s2 (k = 3) for shares sp, input row 2p is
   H(prev) + H(cur) and row 2p+1 is H(cur) -- exactly the portable sum of
   the spread rows of the windows covering each row (H is never -0.0, so a
   zero share row stands in for a missing window bit for bit).  Writes
   columns [0, in_w) of d_even and, unless NULL, d_odd; the share rows hold
   sp[0] = 0, shares at 1..out_w and zeros up to index in_w / 2 + 1, and
   in_w / 2 >= FC_F32_LANES. */
static inline void fc_avg_grad_k3s2_block_f32(const float *prev, const float *cur,
                                              float *d_even, float *d_odd, Py_ssize_t t)
{
    __m256 oc = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(cur + 1 + t));
    __m256 ec = _mm256_add_ps(oc, _mm256_loadu_ps(cur + t));
    __m256 op = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(prev + 1 + t));
    __m256 ep = _mm256_add_ps(op, _mm256_loadu_ps(prev + t));
    if (d_odd)
        fc_store_pairs_f32(d_odd + 2 * t, ec, oc);
    fc_store_pairs_f32(d_even + 2 * t, _mm256_add_ps(ep, ec), _mm256_add_ps(op, oc));
}

static inline void fc_avg_grad_k3s2_f32(const float *prev, const float *cur,
                                        float *d_even, float *d_odd, Py_ssize_t in_w)
{
    Py_ssize_t t, nq = in_w / 2;
    for (t = 0; t + FC_F32_LANES <= nq; t += FC_F32_LANES)
        fc_avg_grad_k3s2_block_f32(prev, cur, d_even, d_odd, t);
    if (t < nq)
        fc_avg_grad_k3s2_block_f32(prev, cur, d_even, d_odd, nq - FC_F32_LANES);
    if (in_w & 1) {             /* last column 2 nq: an even one */
        float ec = (0.0f + cur[nq + 1]) + cur[nq];
        if (d_odd)
            d_odd[2 * nq] = ec;
        d_even[2 * nq] = ((0.0f + prev[nq + 1]) + prev[nq]) + ec;
    }
}

/* out[q] = g[q] / div, q < n (a share row of the 3x3 gradient below). */
static inline void fc_div_row_f32(const float *g, float *out, Py_ssize_t n, float div)
{
    Py_ssize_t t;
    __m256 d = _mm256_set1_ps(div);
    for (t = 0; t + FC_F32_LANES <= n; t += FC_F32_LANES)
        _mm256_storeu_ps(out + t, _mm256_div_ps(_mm256_loadu_ps(g + t), d));
    for (; t < n; t++)
        out[t] = g[t] / div;
}

/* A whole plane of the 3x3, stride-2, unpadded average-pool gradient whose
   windows all lie inside the input (their divisor is 9 in both
   count_include_pad modes), every row here: input rows 2p and 2p+1 by
   fc_avg_grad_k3s2, row 2 out_h (the last windows' bottom row) against a
   zero share row, zeros below it.  `shares` holds four zeroed rows of
   in_w / 2 + 2; three rotate as the previous, current and next share rows
   (at offset 1), the fourth stays zero.  Each share row is divided one
   output row before the kernel reads it: the kernel's loads, one column
   off the division's stores, would otherwise wait on a failed
   store-to-load forward.  Prefetches as fc_prefetch_grad_rows. */
FC_AVG_GRAD_PLANE_K3S2(f32, float)

/* Channels-last max-pool gradient of one output pixel whose every channel's
   index lies in its 2x2 block of pixels (flat f00, f00+1, f00+in_w,
   f00+in_w+1, rows of channels d00, d01, d10, d11): each of those elements
   gets +0.0 + g at its channel's index and +0.0 elsewhere (see
   fc_max_grad_block_f32).  ch >= FC_F32_LANES.  Returns 0, having written
   an unspecified part of the pixels, when some index lies elsewhere. */
static inline int fc_max_grad_px_block_f32(const float *g, const int64_t *idx,
                                           float *d00, float *d01, float *d10,
                                           float *d11, Py_ssize_t c, int64_t f00,
                                           int64_t in_w)
{
    __m256i rel_a = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + c)),
                                     _mm256_set1_epi64x(f00));
    __m256i rel_b = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + c + 4)),
                                     _mm256_set1_epi64x(f00));
    /* low halves of two 64-bit masks, back in channel order */
#define FC_TAP_MASK(t) fc_column_order_f32(_mm256_shuffle_ps(                   \
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(rel_a, _mm256_set1_epi64x(t))), \
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(rel_b, _mm256_set1_epi64x(t))), 0x88))
    __m256 m00 = FC_TAP_MASK(0), m01 = FC_TAP_MASK(1);
    __m256 m10 = FC_TAP_MASK(in_w), m11 = FC_TAP_MASK(in_w + 1);
#undef FC_TAP_MASK
    __m256 hit = _mm256_or_ps(_mm256_or_ps(m00, m01), _mm256_or_ps(m10, m11));
    if (_mm256_movemask_ps(hit) != 0xFF)
        return 0;
    __m256 gv = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(g + c));
    _mm256_storeu_ps(d00 + c, _mm256_and_ps(m00, gv));
    _mm256_storeu_ps(d01 + c, _mm256_and_ps(m01, gv));
    _mm256_storeu_ps(d10 + c, _mm256_and_ps(m10, gv));
    _mm256_storeu_ps(d11 + c, _mm256_and_ps(m11, gv));
    return 1;
}

static inline int fc_max_grad_px_f32(const float *g, const int64_t *idx, float *d00,
                                     Py_ssize_t ch, int64_t f00, Py_ssize_t in_w)
{
    Py_ssize_t c;
    float *d01 = d00 + ch, *d10 = d00 + in_w * ch, *d11 = d10 + ch;
    for (c = 0; c + FC_F32_LANES <= ch; c += FC_F32_LANES)
        if (!fc_max_grad_px_block_f32(g, idx, d00, d01, d10, d11, c, f00, in_w))
            return 0;
    if (c < ch)
        return fc_max_grad_px_block_f32(g, idx, d00, d01, d10, d11, ch - FC_F32_LANES,
                                        f00, in_w);
    return 1;
}

/* Channels-last window of one output pixel: rows [h0, h1), columns
   [w0, w1) of an image x (in_w pixels of ch channels per row), taps in
   row-major order with the running maximum and its flat index h*in_w + w
   kept in registers.  Starting from the first tap is the same as
   PyTorch's start from -inf at the first element.  Each window row is
   folded on its own, then the rows are combined (the rule is
   associative), and nv channel vectors are reduced side by side:
   independent chains, where one vector at a time left each combine
   waiting on the one before (NHWC 3x3 max forward 2x slower than NCHW).
   FC_MAX_PX_VECS(NAME, T, BEST, TAP, COMBINE, STORE, LANES, ATTR) defines
   NAME(x, in_w, ch, h0, h1, w0, w1, c, nv, out, out_idx) for channels
   [c, c + nv*LANES), nv <= 4 (a constant where it is inlined), and its
   row fold NAME_row; the window is not empty (h0 < h1, w0 < w1). */
#define FC_MAX_PX_VECS(NAME, T, BEST, TAP, COMBINE, STORE, LANES, ATTR)                  \
ATTR FC_ALWAYS_INLINE void NAME##_row(const T *x, Py_ssize_t in_w, Py_ssize_t ch,         \
                                      Py_ssize_t i, Py_ssize_t w0, Py_ssize_t w1,      \
                                      Py_ssize_t c, const int nv, BEST *row)           \
{                                                                                      \
    const T *r = x + (i * in_w + w0) * ch + c;                                         \
    Py_ssize_t j;                                                                      \
    int u;                                                                             \
    for (u = 0; u < nv; u++)                                                           \
        row[u] = TAP(r + u * (LANES), i * in_w + w0);                                  \
    for (j = w0 + 1; j < w1; j++) {                                                    \
        r += ch;                                                                       \
        for (u = 0; u < nv; u++)                                                       \
            row[u] = COMBINE(row[u], TAP(r + u * (LANES), i * in_w + j));              \
    }                                                                                  \
}                                                                                      \
                                                                                       \
ATTR FC_ALWAYS_INLINE void NAME(const T *x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0, \
                                Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t c, \
                                const int nv, T *out, int64_t *out_idx)                \
{                                                                                      \
    BEST best[4], row[4];                                                              \
    Py_ssize_t i;                                                                      \
    int u;                                                                             \
    NAME##_row(x, in_w, ch, h0, w0, w1, c, nv, best);                                  \
    for (i = h0 + 1; i < h1; i++) {                                                    \
        NAME##_row(x, in_w, ch, i, w0, w1, c, nv, row);                                \
        for (u = 0; u < nv; u++)                                                       \
            best[u] = COMBINE(best[u], row[u]);                                        \
    }                                                                                  \
    for (u = 0; u < nv; u++)                                                           \
        STORE(out + c + u * (LANES), out_idx + c + u * (LANES), best[u]);              \
}

/* FC_MAX_PX_ALL(NAME, VECS, T, LANES, NV, ATTR) defines NAME(x, in_w, ch,
   h0, h1, w0, w1, out, out_idx): all ch channels of one pixel's window
   (ch >= LANES), NV vectors at a time through VECS, then single vectors,
   the last re-run to end at ch. */
#define FC_MAX_PX_ALL(NAME, VECS, T, LANES, NV, ATTR)                                    \
ATTR static inline void NAME(const T *x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0,  \
                             Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, T *out,         \
                             int64_t *out_idx)                                           \
{                                                                                        \
    Py_ssize_t c;                                                                        \
    for (c = 0; c + (NV) * (LANES) <= ch; c += (NV) * (LANES))                           \
        VECS(x, in_w, ch, h0, h1, w0, w1, c, NV, out, out_idx);                          \
    for (; c + (LANES) <= ch; c += (LANES))                                              \
        VECS(x, in_w, ch, h0, h1, w0, w1, c, 1, out, out_idx);                           \
    if (c < ch)                                                                          \
        VECS(x, in_w, ch, h0, h1, w0, w1, ch - (LANES), 1, out, out_idx);                \
}

/* one tap of LANES channels and its flat index (int32 lanes for float:
   flat indices < 2**31), and the store of a window's best as int64 */
static inline fc_best_f32 fc_px_tap_f32(const float *p, Py_ssize_t flat)
{
    fc_best_f32 t;
    t.val = _mm256_loadu_ps(p);
    t.off = _mm256_set1_epi32((int32_t)flat);
    return t;
}

static inline void fc_px_store_f32(float *out, int64_t *out_idx, fc_best_f32 best)
{
    _mm256_storeu_ps(out, best.val);
    _mm256_storeu_si256((__m256i *)out_idx,
                        _mm256_cvtepi32_epi64(_mm256_castsi256_si128(best.off)));
    _mm256_storeu_si256((__m256i *)(out_idx + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(best.off, 1)));
}

FC_MAX_PX_VECS(fc_max_px_vecs_f32, float, fc_best_f32, fc_px_tap_f32, fc_combine_f32,
               fc_px_store_f32, FC_F32_LANES, )

/* two vectors at a time: 16 ymm registers hold two chains' rows and bests */
FC_MAX_PX_ALL(fc_max_px_avx2_f32, fc_max_px_vecs_f32, float, FC_F32_LANES, 2, )

/* Channels-last window sum of one output pixel (taps in row-major order,
   from +0.0) divided by div.  Floating-point addition is not associative,
   so each lane's sum is one chain of adds; nv channel vectors (up to 4) are
   summed side by side so that the chains overlap (one vector at a time
   left every add waiting on the one before).  ch >= the lanes; the last
   vector is re-run to end at ch.
   FC_AVG_PX(dt, T, V, LOADU, ADD, ZERO, SET1, DIV, STOREU, LANES) defines
   fc_avg_px_dt and, below, FC_AVG_GATHER_PX the gather of the gradient. */
#define FC_AVG_PX(dt, T, V, LOADU, ADD, ZERO, SET1, DIV, STOREU, LANES)                   \
FC_ALWAYS_INLINE void fc_avg_px_vecs_##dt(const T *x, Py_ssize_t in_w, Py_ssize_t ch,    \
                                          Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,   \
                                          Py_ssize_t w1, Py_ssize_t c, const int nv,     \
                                          T *out, V div)                                 \
{                                                                                        \
    V sum[4];                                                                            \
    Py_ssize_t i, j;                                                                     \
    int u;                                                                               \
    for (u = 0; u < nv; u++)                                                             \
        sum[u] = ZERO();                                                                 \
    for (i = h0; i < h1; i++)                                                            \
        for (j = w0; j < w1; j++) {                                                      \
            const T *s = x + (i * in_w + j) * ch + c;                                    \
            for (u = 0; u < nv; u++)                                                     \
                sum[u] = ADD(sum[u], LOADU(s + u * (LANES)));                            \
        }                                                                                \
    for (u = 0; u < nv; u++)                                                             \
        STOREU(out + c + u * (LANES), DIV(sum[u], div));                                 \
}                                                                                        \
                                                                                         \
static inline void fc_avg_px_##dt(const T *x, Py_ssize_t in_w, Py_ssize_t ch,            \
                                  Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,           \
                                  Py_ssize_t w1, T *out, T div)                          \
{                                                                                        \
    Py_ssize_t c;                                                                        \
    V d = SET1(div);                                                                     \
    for (c = 0; c + 4 * (LANES) <= ch; c += 4 * (LANES))                                 \
        fc_avg_px_vecs_##dt(x, in_w, ch, h0, h1, w0, w1, c, 4, out, d);                  \
    for (; c + (LANES) <= ch; c += (LANES))                                              \
        fc_avg_px_vecs_##dt(x, in_w, ch, h0, h1, w0, w1, c, 1, out, d);                  \
    if (c < ch)                                                                          \
        fc_avg_px_vecs_##dt(x, in_w, ch, h0, h1, w0, w1, ch - (LANES), 1, out, d);       \
}

/* Channels-last average-pool gradient of one input pixel as a gather over
   the shares of output pixels (p, q), p in [p_lo, p_hi], q in [q_lo, q_hi],
   in the NCHW kernels' order: each output row's shares summed from +0.0
   with q descending (the order the NCHW spread row receives them, tap by
   tap), and those row sums added for p ascending -- in registers, stored
   once, nv channel vectors side by side as in FC_AVG_PX.  Share row p
   starts at rows + (p - p_base) * row_len; the range is not empty;
   ch >= the lanes. */
#define FC_AVG_GATHER_PX(dt, T, V, LOADU, ADD, ZERO, STOREU, LANES)                       \
FC_ALWAYS_INLINE void fc_avg_gather_px_vecs_##dt(const T *rows, Py_ssize_t p_base,       \
                                                 Py_ssize_t row_len, Py_ssize_t ch,      \
                                                 Py_ssize_t p_lo, Py_ssize_t p_hi,       \
                                                 Py_ssize_t q_lo, Py_ssize_t q_hi,       \
                                                 Py_ssize_t c, const int nv, T *dst)     \
{                                                                                        \
    V sum[4], row[4];                                                                    \
    Py_ssize_t p, q;                                                                     \
    int u;                                                                               \
    for (u = 0; u < nv; u++)                                                             \
        sum[u] = ZERO();                                                                 \
    for (p = p_lo; p <= p_hi; p++) {                                                     \
        for (u = 0; u < nv; u++)                                                         \
            row[u] = ZERO();                                                             \
        for (q = q_hi; q >= q_lo; q--) {                                                 \
            const T *s = rows + (p - p_base) * row_len + q * ch + c;                     \
            for (u = 0; u < nv; u++)                                                     \
                row[u] = ADD(row[u], LOADU(s + u * (LANES)));                            \
        }                                                                                \
        for (u = 0; u < nv; u++)                                                         \
            sum[u] = ADD(sum[u], row[u]);                                                \
    }                                                                                    \
    for (u = 0; u < nv; u++)                                                             \
        STOREU(dst + c + u * (LANES), sum[u]);                                           \
}                                                                                        \
                                                                                         \
static inline void fc_avg_gather_px_##dt(const T *rows, Py_ssize_t p_base,               \
                                         Py_ssize_t row_len, Py_ssize_t ch,              \
                                         Py_ssize_t p_lo, Py_ssize_t p_hi,               \
                                         Py_ssize_t q_lo, Py_ssize_t q_hi, T *dst)       \
{                                                                                        \
    Py_ssize_t c;                                                                        \
    for (c = 0; c + 4 * (LANES) <= ch; c += 4 * (LANES))                                 \
        fc_avg_gather_px_vecs_##dt(rows, p_base, row_len, ch, p_lo, p_hi, q_lo, q_hi,    \
                                   c, 4, dst);                                           \
    for (; c + (LANES) <= ch; c += (LANES))                                              \
        fc_avg_gather_px_vecs_##dt(rows, p_base, row_len, ch, p_lo, p_hi, q_lo, q_hi,    \
                                   c, 1, dst);                                           \
    if (c < ch)                                                                          \
        fc_avg_gather_px_vecs_##dt(rows, p_base, row_len, ch, p_lo, p_hi, q_lo, q_hi,    \
                                   ch - (LANES), 1, dst);                                \
}

FC_AVG_PX(f32, float, __m256, _mm256_loadu_ps, _mm256_add_ps, _mm256_setzero_ps,
          _mm256_set1_ps, _mm256_div_ps, _mm256_storeu_ps, FC_F32_LANES)
FC_AVG_GATHER_PX(f32, float, __m256, _mm256_loadu_ps, _mm256_add_ps, _mm256_setzero_ps,
                 _mm256_storeu_ps, FC_F32_LANES)

/* Channels-last 2x2, stride-2 average-pool gradient of one output pixel:
   +0.0 + g / div into the 4 pixels of its block (d00, d00 + ch, and the
   same one row of in_w pixels below), 8 channels at a time;
   ch >= FC_F32_LANES. */
static inline void fc_avg_grad_px_k2_f32(const float *g, float *d00, Py_ssize_t ch,
                                         Py_ssize_t in_w, float div)
{
    Py_ssize_t c, last = ch - FC_F32_LANES;
    float *d10 = d00 + in_w * ch;
    __m256 d = _mm256_set1_ps(div);
    for (c = 0;; c += FC_F32_LANES) {
        if (c > last)
            c = last;           /* the last block, re-run to end at ch */
        __m256 s = _mm256_add_ps(_mm256_setzero_ps(), _mm256_div_ps(_mm256_loadu_ps(g + c), d));
        _mm256_storeu_ps(d00 + c, s);
        _mm256_storeu_ps(d00 + ch + c, s);
        _mm256_storeu_ps(d10 + c, s);
        _mm256_storeu_ps(d10 + ch + c, s);
        if (c == last)
            break;
    }
}

/* ---- double: 4 windows per block -----------------------------------------
 * Even/odd splits come out in column order 0 2 1 3. */

typedef struct { __m256d val; __m256i off; } fc_best_f64;

static inline fc_best_f64 fc_combine_f64(fc_best_f64 a, fc_best_f64 b)
{
    __m256d take = _mm256_or_pd(_mm256_cmp_pd(b.val, a.val, _CMP_GT_OQ),
                                _mm256_cmp_pd(b.val, b.val, _CMP_UNORD_Q));
    fc_best_f64 r;
    r.val = _mm256_blendv_pd(a.val, b.val, take);
    r.off = _mm256_castpd_si256(_mm256_blendv_pd(
        _mm256_castsi256_pd(a.off), _mm256_castsi256_pd(b.off), take));
    return r;
}

static inline void fc_taps_f64(const double *s, __m256d *e, __m256d *o, __m256d *e2,
                               int k)
{
    __m256d a = _mm256_loadu_pd(s), b = _mm256_loadu_pd(s + 4);
    *e = _mm256_unpacklo_pd(a, b);
    *o = _mm256_unpackhi_pd(a, b);
    if (k == 3) {
        /* s[2], s[6] | s[4], s[8]: from s+2 and s+5 */
        *e2 = _mm256_shuffle_pd(_mm256_loadu_pd(s + 2), _mm256_loadu_pd(s + 5), 0xA);
    }
}

/* d[0..8) = e0 o0 e1 o1 e2 o2 e3 o3 */
static inline void fc_store_pairs_f64(double *d, __m256d e, __m256d o)
{
    __m256d lo = _mm256_unpacklo_pd(e, o), hi = _mm256_unpackhi_pd(e, o);
    _mm256_storeu_pd(d, _mm256_permute2f128_pd(lo, hi, 0x20));
    _mm256_storeu_pd(d + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
}

static inline void fc_max_block_f64(const double *r0, Py_ssize_t in_w, int k,
                                    Py_ssize_t t, double *out, int64_t *out_idx,
                                    int64_t base)
{
    fc_best_f64 row_best[3], tap, best;
    __m256d e, o, e2 = _mm256_setzero_pd();
    int i;
    for (i = 0; i < k; i++) {
        int64_t row_off = (int64_t)i * in_w;
        fc_taps_f64(r0 + i * in_w + 2 * t, &e, &o, &e2, k);
        row_best[i].val = e;
        row_best[i].off = _mm256_set1_epi64x(row_off);
        tap.val = o;
        tap.off = _mm256_set1_epi64x(row_off + 1);
        row_best[i] = fc_combine_f64(row_best[i], tap);
        if (k == 3) {
            tap.val = e2;
            tap.off = _mm256_set1_epi64x(row_off + 2);
            row_best[i] = fc_combine_f64(row_best[i], tap);
        }
    }
    best = fc_combine_f64(row_best[0], row_best[1]);
    if (k == 3)
        best = fc_combine_f64(best, row_best[2]);
    __m256i idx = _mm256_permute4x64_epi64(best.off, 0xD8);
    idx = _mm256_add_epi64(idx, _mm256_add_epi64(
        _mm256_set1_epi64x(base + 2 * (int64_t)t), _mm256_setr_epi64x(0, 2, 4, 6)));
    _mm256_storeu_pd(out + t, _mm256_permute4x64_pd(best.val, 0xD8));
    _mm256_storeu_si256((__m256i *)(out_idx + t), idx);
}

FC_ALWAYS_INLINE void
fc_max_s2_k_f64(const double *r0, Py_ssize_t in_w, const int k, double *out,
               int64_t *out_idx, Py_ssize_t n, int64_t base)
{
    Py_ssize_t t;
    for (t = 0; t + FC_F64_LANES <= n; t += FC_F64_LANES)
        fc_max_block_f64(r0, in_w, k, t, out, out_idx, base);
    if (t < n)
        fc_max_block_f64(r0, in_w, k, n - FC_F64_LANES, out, out_idx, base);
}

/* Maxima and flat indices (base = flat index of r0[0]) of windows 0..n-1. */
static inline void fc_max_s2_f64(const double *r0, Py_ssize_t in_w, Py_ssize_t k,
                                 double *out, int64_t *out_idx, Py_ssize_t n,
                                 int64_t base)
{
    if (k == 3)
        fc_max_s2_k_f64(r0, in_w, 3, out, out_idx, n, base);
    else
        fc_max_s2_k_f64(r0, in_w, 2, out, out_idx, n, base);
}

static inline void fc_avg_block_f64(const double *r0, Py_ssize_t in_w, int k,
                                    Py_ssize_t t, double *out, __m256d div)
{
    __m256d sum = _mm256_setzero_pd(), e, o, e2 = _mm256_setzero_pd();
    int i;
    for (i = 0; i < k; i++) {
        fc_taps_f64(r0 + i * in_w + 2 * t, &e, &o, &e2, k);
        sum = _mm256_add_pd(_mm256_add_pd(sum, e), o);
        if (k == 3)
            sum = _mm256_add_pd(sum, e2);
    }
    _mm256_storeu_pd(out + t, _mm256_permute4x64_pd(_mm256_div_pd(sum, div), 0xD8));
}

FC_ALWAYS_INLINE void
fc_avg_s2_k_f64(const double *r0, Py_ssize_t in_w, const int k, double *out,
               Py_ssize_t n, double div)
{
    Py_ssize_t t;
    __m256d d = _mm256_set1_pd(div);
    for (t = 0; t + FC_F64_LANES <= n; t += FC_F64_LANES)
        fc_avg_block_f64(r0, in_w, k, t, out, d);
    if (t < n)
        fc_avg_block_f64(r0, in_w, k, n - FC_F64_LANES, out, d);
}

/* Window sums divided by div, windows 0..n-1. */
static inline void fc_avg_s2_f64(const double *r0, Py_ssize_t in_w, Py_ssize_t k,
                                 double *out, Py_ssize_t n, double div)
{
    if (k == 3)
        fc_avg_s2_k_f64(r0, in_w, 3, out, n, div);
    else
        fc_avg_s2_k_f64(r0, in_w, 2, out, n, div);
}

FC_PLANE_LOOPS(f64, double, int64_t)


static inline void fc_avg_grad_block_f64(const double *g, double *d0, double *d1,
                                         Py_ssize_t t, __m256d div)
{
    __m256d s = _mm256_add_pd(_mm256_setzero_pd(),
                              _mm256_div_pd(_mm256_loadu_pd(g + t), div));
    fc_store_pairs_f64(d0 + 2 * t, s, s);
    fc_store_pairs_f64(d1 + 2 * t, s, s);
}

static inline void fc_avg_grad_k2s2_f64(const double *g, double *d0, double *d1,
                                        Py_ssize_t n, double div)
{
    Py_ssize_t t;
    __m256d d = _mm256_set1_pd(div);
    for (t = 0; t + FC_F64_LANES <= n; t += FC_F64_LANES)
        fc_avg_grad_block_f64(g, d0, d1, t, d);
    if (t < n)
        fc_avg_grad_block_f64(g, d0, d1, n - FC_F64_LANES, d);
}

static inline int fc_max_grad_block_f64(const double *g, const int64_t *idx,
                                        double *d0, double *d1, Py_ssize_t t,
                                        int64_t base, int64_t in_w)
{
    /* everything in column order 0 2 1 3, which unpacking interleaves */
    __m256i at = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * (int64_t)t),
                                  _mm256_setr_epi64x(0, 4, 2, 6));
    __m256i rel = _mm256_sub_epi64(_mm256_permute4x64_epi64(
        _mm256_loadu_si256((const __m256i *)(idx + t)), 0xD8), at);
#define FC_TAP_MASK(c) _mm256_castsi256_pd(_mm256_cmpeq_epi64(rel, _mm256_set1_epi64x(c)))
    __m256d m00 = FC_TAP_MASK(0), m01 = FC_TAP_MASK(1);
    __m256d m10 = FC_TAP_MASK(in_w), m11 = FC_TAP_MASK(in_w + 1);
#undef FC_TAP_MASK
    __m256d hit = _mm256_or_pd(_mm256_or_pd(m00, m01), _mm256_or_pd(m10, m11));
    if (_mm256_movemask_pd(hit) != 0xF)
        return 0;
    __m256d gv = _mm256_permute4x64_pd(
        _mm256_add_pd(_mm256_setzero_pd(), _mm256_loadu_pd(g + t)), 0xD8);
    __m256d v00 = _mm256_and_pd(m00, gv), v01 = _mm256_and_pd(m01, gv);
    __m256d v10 = _mm256_and_pd(m10, gv), v11 = _mm256_and_pd(m11, gv);
    _mm256_storeu_pd(d0 + 2 * t, _mm256_unpacklo_pd(v00, v01));
    _mm256_storeu_pd(d0 + 2 * t + 4, _mm256_unpackhi_pd(v00, v01));
    _mm256_storeu_pd(d1 + 2 * t, _mm256_unpacklo_pd(v10, v11));
    _mm256_storeu_pd(d1 + 2 * t + 4, _mm256_unpackhi_pd(v10, v11));
    return 1;
}

static inline int fc_max_grad_k2s2_f64(const double *g, const int64_t *idx, double *d0,
                                       Py_ssize_t in_w, Py_ssize_t n, int64_t base)
{
    Py_ssize_t t;
    for (t = 0; t + FC_F64_LANES <= n; t += FC_F64_LANES)
        if (!fc_max_grad_block_f64(g, idx, d0, d0 + in_w, t, base, in_w))
            return 0;
    if (t < n)
        return fc_max_grad_block_f64(g, idx, d0, d0 + in_w, n - FC_F64_LANES, base, in_w);
    return 1;
}

static inline void fc_avg_spread_s2_f64(const double *sp, double *h, Py_ssize_t n,
                                        Py_ssize_t k)
{
    Py_ssize_t t;
    for (t = 0; t < n; t += FC_F64_LANES) {
        __m256d cur = _mm256_add_pd(_mm256_setzero_pd(), _mm256_loadu_pd(sp + 1 + t));
        __m256d even = k == 3 ? _mm256_add_pd(cur, _mm256_loadu_pd(sp + t)) : cur;
        fc_store_pairs_f64(h + 2 * t, even, cur);
    }
}

static inline void fc_avg_grad_k3s2_block_f64(const double *prev, const double *cur,
                                              double *d_even, double *d_odd, Py_ssize_t t)
{
    __m256d oc = _mm256_add_pd(_mm256_setzero_pd(), _mm256_loadu_pd(cur + 1 + t));
    __m256d ec = _mm256_add_pd(oc, _mm256_loadu_pd(cur + t));
    __m256d op = _mm256_add_pd(_mm256_setzero_pd(), _mm256_loadu_pd(prev + 1 + t));
    __m256d ep = _mm256_add_pd(op, _mm256_loadu_pd(prev + t));
    if (d_odd)
        fc_store_pairs_f64(d_odd + 2 * t, ec, oc);
    fc_store_pairs_f64(d_even + 2 * t, _mm256_add_pd(ep, ec), _mm256_add_pd(op, oc));
}

static inline void fc_avg_grad_k3s2_f64(const double *prev, const double *cur,
                                        double *d_even, double *d_odd, Py_ssize_t in_w)
{
    Py_ssize_t t, nq = in_w / 2;
    for (t = 0; t + FC_F64_LANES <= nq; t += FC_F64_LANES)
        fc_avg_grad_k3s2_block_f64(prev, cur, d_even, d_odd, t);
    if (t < nq)
        fc_avg_grad_k3s2_block_f64(prev, cur, d_even, d_odd, nq - FC_F64_LANES);
    if (in_w & 1) {
        double ec = (0.0 + cur[nq + 1]) + cur[nq];
        if (d_odd)
            d_odd[2 * nq] = ec;
        d_even[2 * nq] = ((0.0 + prev[nq + 1]) + prev[nq]) + ec;
    }
}

/* out[q] = g[q] / div, q < n (a share row of the 3x3 gradient below). */
static inline void fc_div_row_f64(const double *g, double *out, Py_ssize_t n, double div)
{
    Py_ssize_t t;
    __m256d d = _mm256_set1_pd(div);
    for (t = 0; t + FC_F64_LANES <= n; t += FC_F64_LANES)
        _mm256_storeu_pd(out + t, _mm256_div_pd(_mm256_loadu_pd(g + t), d));
    for (; t < n; t++)
        out[t] = g[t] / div;
}

FC_AVG_GRAD_PLANE_K3S2(f64, double)

static inline int fc_max_grad_px_block_f64(const double *g, const int64_t *idx,
                                           double *d00, double *d01, double *d10,
                                           double *d11, Py_ssize_t c, int64_t f00,
                                           int64_t in_w)
{
    __m256i rel = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + c)),
                                   _mm256_set1_epi64x(f00));
#define FC_TAP_MASK(t) _mm256_castsi256_pd(_mm256_cmpeq_epi64(rel, _mm256_set1_epi64x(t)))
    __m256d m00 = FC_TAP_MASK(0), m01 = FC_TAP_MASK(1);
    __m256d m10 = FC_TAP_MASK(in_w), m11 = FC_TAP_MASK(in_w + 1);
#undef FC_TAP_MASK
    __m256d hit = _mm256_or_pd(_mm256_or_pd(m00, m01), _mm256_or_pd(m10, m11));
    if (_mm256_movemask_pd(hit) != 0xF)
        return 0;
    __m256d gv = _mm256_add_pd(_mm256_setzero_pd(), _mm256_loadu_pd(g + c));
    _mm256_storeu_pd(d00 + c, _mm256_and_pd(m00, gv));
    _mm256_storeu_pd(d01 + c, _mm256_and_pd(m01, gv));
    _mm256_storeu_pd(d10 + c, _mm256_and_pd(m10, gv));
    _mm256_storeu_pd(d11 + c, _mm256_and_pd(m11, gv));
    return 1;
}

static inline int fc_max_grad_px_f64(const double *g, const int64_t *idx, double *d00,
                                     Py_ssize_t ch, int64_t f00, Py_ssize_t in_w)
{
    Py_ssize_t c;
    double *d01 = d00 + ch, *d10 = d00 + in_w * ch, *d11 = d10 + ch;
    for (c = 0; c + FC_F64_LANES <= ch; c += FC_F64_LANES)
        if (!fc_max_grad_px_block_f64(g, idx, d00, d01, d10, d11, c, f00, in_w))
            return 0;
    if (c < ch)
        return fc_max_grad_px_block_f64(g, idx, d00, d01, d10, d11, ch - FC_F64_LANES,
                                        f00, in_w);
    return 1;
}

/* the double twins of fc_px_tap_f32 and fc_px_store_f32 */
static inline fc_best_f64 fc_px_tap_f64(const double *p, Py_ssize_t flat)
{
    fc_best_f64 t;
    t.val = _mm256_loadu_pd(p);
    t.off = _mm256_set1_epi64x((int64_t)flat);
    return t;
}

static inline void fc_px_store_f64(double *out, int64_t *out_idx, fc_best_f64 best)
{
    _mm256_storeu_pd(out, best.val);
    _mm256_storeu_si256((__m256i *)out_idx, best.off);
}

FC_MAX_PX_VECS(fc_max_px_vecs_f64, double, fc_best_f64, fc_px_tap_f64, fc_combine_f64,
               fc_px_store_f64, FC_F64_LANES, )

FC_MAX_PX_ALL(fc_max_px_avx2_f64, fc_max_px_vecs_f64, double, FC_F64_LANES, 2, )

FC_AVG_PX(f64, double, __m256d, _mm256_loadu_pd, _mm256_add_pd, _mm256_setzero_pd,
          _mm256_set1_pd, _mm256_div_pd, _mm256_storeu_pd, FC_F64_LANES)
FC_AVG_GATHER_PX(f64, double, __m256d, _mm256_loadu_pd, _mm256_add_pd, _mm256_setzero_pd,
                 _mm256_storeu_pd, FC_F64_LANES)

static inline void fc_avg_grad_px_k2_f64(const double *g, double *d00, Py_ssize_t ch,
                                         Py_ssize_t in_w, double div)
{
    Py_ssize_t c, last = ch - FC_F64_LANES;
    double *d10 = d00 + in_w * ch;
    __m256d d = _mm256_set1_pd(div);
    for (c = 0;; c += FC_F64_LANES) {
        if (c > last)
            c = last;
        __m256d s = _mm256_add_pd(_mm256_setzero_pd(), _mm256_div_pd(_mm256_loadu_pd(g + c), d));
        _mm256_storeu_pd(d00 + c, s);
        _mm256_storeu_pd(d00 + ch + c, s);
        _mm256_storeu_pd(d10 + c, s);
        _mm256_storeu_pd(d10 + ch + c, s);
        if (c == last)
            break;
    }
}


/* ---- AVX-512 max-pool rows (CPUs that have it, chosen at run time) ------
 * The max forward is the one pooling kernel that AVX-512 speeds up here
 * (measured on an AMD Zen 5: 10-25 % per plane over the AVX2 rows; the
 * averages gained nothing): a two-source permute (vpermt2) deinterleaves
 * 8 doubles or 16 floats in one instruction, in column order, and the
 * compare masks select without a blend per lane group.  The NHWC pixel
 * windows (fc_max_px) take AVX-512 vectors under the same switch (3x3
 * stride-2 forward of 8x56x56x64: 0.79-0.87 -> 0.41-0.42 ms in float32,
 * 1.16-1.66 -> 0.63-0.66 ms in float64, this Intel machine).  The same winner
 * rule and tree as the AVX2 rows, so the same bits; compiled with a
 * target attribute inside this AVX2 build and used only after
 * fc_set_max_avx512 has checked the CPU (fastconv._simd does). */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FC_POOL_AVX512 1
#define FC_AVX512 __attribute__((target("avx512f")))

static int fc_max_avx512 = 0;

/* Use the AVX-512 rows from now on (on != 0, and the CPU and OS run
   AVX-512F) or not; returns whether they are used. */
static int fc_set_max_avx512(int on)
{
    __builtin_cpu_init();
    fc_max_avx512 = on && __builtin_cpu_supports("avx512f");
    return fc_max_avx512;
}

typedef struct { __m512d val; __m512i off; } fc_best512_f64;
typedef struct { __m512 val; __m512i off; } fc_best512_f32;

FC_AVX512 static inline fc_best512_f64 fc_combine512_f64(fc_best512_f64 a, fc_best512_f64 b)
{
    __mmask8 take = _mm512_cmp_pd_mask(b.val, a.val, _CMP_GT_OQ)
                    | _mm512_cmp_pd_mask(b.val, b.val, _CMP_UNORD_Q);
    fc_best512_f64 r;
    r.val = _mm512_mask_blend_pd(take, a.val, b.val);
    r.off = _mm512_mask_blend_epi64(take, a.off, b.off);
    return r;
}

FC_AVX512 static inline fc_best512_f32 fc_combine512_f32(fc_best512_f32 a, fc_best512_f32 b)
{
    __mmask16 take = _mm512_cmp_ps_mask(b.val, a.val, _CMP_GT_OQ)
                     | _mm512_cmp_ps_mask(b.val, b.val, _CMP_UNORD_Q);
    fc_best512_f32 r;
    r.val = _mm512_mask_blend_ps(take, a.val, b.val);
    r.off = _mm512_mask_blend_epi32(take, a.off, b.off);
    return r;
}

/* FC_MAX_PLANE512(dt, T, BASE, LANES) defines fc_max_plane512_dt:
 * fc_max_plane_avx2_dt with the AVX-512 row kernels (out_w >= LANES), and
 * for 3x3 windows with vertical stride 2 the column-strip loop below. */
#define FC_MAX_PLANE512(dt, T, BASE, LANES)                                            \
FC_AVX512 FC_ALWAYS_INLINE void fc_max_plane512_k_##dt(const T *src, Py_ssize_t in_w,  \
                                                       const int k, Py_ssize_t stride_h, \
                                                       T *out, int64_t *out_idx,       \
                                                       Py_ssize_t out_h, Py_ssize_t out_w, \
                                                       Py_ssize_t ahead, Py_ssize_t left) \
{                                                                                      \
    Py_ssize_t p, t;                                                                   \
    for (p = 0; p < out_h; p++) {                                                      \
        const T *r0 = src + p * stride_h * in_w;                                       \
        T *o = out + p * out_w;                                                        \
        int64_t *oi = out_idx + p * out_w;                                             \
        BASE base = (BASE)(p * stride_h * in_w);                                       \
        fc_prefetch_rows_ahead(src, sizeof(T), left, p, ahead, k, stride_h, 0, in_w); \
        for (t = 0; t + LANES <= out_w; t += LANES)                                    \
            fc_max_block512_##dt(r0, in_w, k, t, o, oi, base);                         \
        if (t < out_w)                                                                 \
            fc_max_block512_##dt(r0, in_w, k, out_w - LANES, o, oi, base);             \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* 3x3 windows, strides (2, 2): output row p reads input rows 2p, 2p+1,      \
   2p+2, and row 2p+2 is the next output row's first, so the plane is      \
   walked in strips of LANES output columns, top to bottom, and each strip \
   carries its last input row's taps on to the next output row: a third  \
   fewer row reductions (the tree is the same, so are the bits).  The     \
   plane is re-read once per strip, from L1 (it is a few dozen KiB); the  \
   first strip prefetches whole rows ahead as the row loop does. */      \
FC_AVX512 static void fc_max_strip512_k3s2_##dt(const T *src, Py_ssize_t in_w, T *out,  \
                                                int64_t *out_idx, Py_ssize_t out_h,    \
                                                Py_ssize_t out_w, Py_ssize_t ahead,    \
                                                Py_ssize_t left)                       \
{                                                                                      \
    Py_ssize_t p, t, strip;                                                            \
    for (strip = 0; strip < out_w; strip += LANES) {                                   \
        fc_best512_##dt top, mid, bottom;                                              \
        t = strip + LANES <= out_w ? strip : out_w - LANES;                            \
        top = fc_row512_##dt(src + 2 * t, 3, 0);                                       \
        for (p = 0; p < out_h; p++) {                                                  \
            const T *s = src + 2 * p * in_w + 2 * t;                                   \
            if (strip == 0)                                                            \
                fc_prefetch_rows_ahead(src, sizeof(T), left, p, ahead, 3, 2, 0, in_w); \
            mid = fc_row512_##dt(s + in_w, 3, (BASE)in_w);                             \
            bottom = fc_row512_##dt(s + 2 * in_w, 3, (BASE)(2 * in_w));                \
            fc_store512_##dt(out + p * out_w + t, out_idx + p * out_w + t,            \
                             fc_combine512_##dt(fc_combine512_##dt(top, mid), bottom), \
                             (BASE)(2 * p * in_w + 2 * t));                            \
            top = fc_rebase512_##dt(bottom, (BASE)(2 * in_w));                         \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
                                                                                       \
FC_AVX512 static void fc_max_plane512_##dt(const T *src, Py_ssize_t in_w, Py_ssize_t k, \
                                           Py_ssize_t stride_h, T *out, int64_t *out_idx, \
                                           Py_ssize_t out_h, Py_ssize_t out_w,         \
                                           Py_ssize_t ahead, Py_ssize_t left)          \
{                                                                                      \
    if (k == 3 && stride_h == 2)                                                       \
        fc_max_strip512_k3s2_##dt(src, in_w, out, out_idx, out_h, out_w, ahead, left); \
    else if (k == 3)                                                                   \
        fc_max_plane512_k_##dt(src, in_w, 3, stride_h, out, out_idx, out_h, out_w, ahead, left); \
    else                                                                               \
        fc_max_plane512_k_##dt(src, in_w, 2, stride_h, out, out_idx, out_h, out_w, ahead, left); \
}

/* Taps 0, 1 (and 2 when k == 3) of 8 windows of one row, s[0] the first
 * window's first tap, reduced to the row's best with offsets row_off + tap
 * (the first tap of each window is its row_best, as in fc_max_block_f64). */
FC_AVX512 FC_ALWAYS_INLINE fc_best512_f64 fc_row512_f64(const double *s, const int k,
                                                     int64_t row_off)
{
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    const __m512i third = _mm512_setr_epi64(0, 2, 4, 6, 9, 11, 13, 15);
    fc_best512_f64 best, tap;
    __m512d a = _mm512_loadu_pd(s), b = _mm512_loadu_pd(s + 8);
    best.val = _mm512_permutex2var_pd(a, even, b);
    best.off = _mm512_set1_epi64(row_off);
    tap.val = _mm512_permutex2var_pd(a, odd, b);
    tap.off = _mm512_set1_epi64(row_off + 1);
    best = fc_combine512_f64(best, tap);
    if (k == 3) {
        /* s[2], s[4], ..., s[16]: s[2..9] and s[9..16], never reading past
           the last window */
        tap.val = _mm512_permutex2var_pd(_mm512_loadu_pd(s + 2), third,
                                         _mm512_loadu_pd(s + 9));
        tap.off = _mm512_set1_epi64(row_off + 2);
        best = fc_combine512_f64(best, tap);
    }
    return best;
}

/* The same best with offsets relative to a window row `rows` elements on. */
FC_AVX512 FC_ALWAYS_INLINE fc_best512_f64 fc_rebase512_f64(fc_best512_f64 b, int64_t rows)
{
    b.off = _mm512_sub_epi64(b.off, _mm512_set1_epi64(rows));
    return b;
}

/* Store 8 windows' maxima and flat indices; base = flat index of the first
 * window's first tap (windows 2 columns apart). */
FC_AVX512 FC_ALWAYS_INLINE void fc_store512_f64(double *out, int64_t *out_idx,
                                             fc_best512_f64 best, int64_t base)
{
    const __m512i cols = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    _mm512_storeu_pd(out, best.val);
    _mm512_storeu_si512(out_idx, _mm512_add_epi64(
        best.off, _mm512_add_epi64(_mm512_set1_epi64(base), cols)));
}

/* 8 windows t..t+7 of one output row (as fc_max_block_f64) */
FC_AVX512 FC_ALWAYS_INLINE void fc_max_block512_f64(const double *r0, Py_ssize_t in_w, const int k,
                                                 Py_ssize_t t, double *out, int64_t *out_idx,
                                                 int64_t base)
{
    fc_best512_f64 best = fc_combine512_f64(fc_row512_f64(r0 + 2 * t, k, 0),
                                            fc_row512_f64(r0 + in_w + 2 * t, k, in_w));
    if (k == 3)
        best = fc_combine512_f64(best, fc_row512_f64(r0 + 2 * in_w + 2 * t, k, 2 * in_w));
    fc_store512_f64(out + t, out_idx + t, best, base + 2 * (int64_t)t);
}

/* 16 windows of one row (as fc_row512_f64), offsets in int32 lanes */
FC_AVX512 FC_ALWAYS_INLINE fc_best512_f32 fc_row512_f32(const float *s, const int k,
                                                     int32_t row_off)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                           16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i third = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                            17, 19, 21, 23, 25, 27, 29, 31);
    fc_best512_f32 best, tap;
    __m512 a = _mm512_loadu_ps(s), b = _mm512_loadu_ps(s + 16);
    best.val = _mm512_permutex2var_ps(a, even, b);
    best.off = _mm512_set1_epi32(row_off);
    tap.val = _mm512_permutex2var_ps(a, odd, b);
    tap.off = _mm512_set1_epi32(row_off + 1);
    best = fc_combine512_f32(best, tap);
    if (k == 3) {
        /* s[2], s[4], ..., s[32]: s[2..17] and s[17..32], never reading
           past the last window */
        tap.val = _mm512_permutex2var_ps(_mm512_loadu_ps(s + 2), third,
                                         _mm512_loadu_ps(s + 17));
        tap.off = _mm512_set1_epi32(row_off + 2);
        best = fc_combine512_f32(best, tap);
    }
    return best;
}

FC_AVX512 FC_ALWAYS_INLINE fc_best512_f32 fc_rebase512_f32(fc_best512_f32 b, int32_t rows)
{
    b.off = _mm512_sub_epi32(b.off, _mm512_set1_epi32(rows));
    return b;
}

FC_AVX512 FC_ALWAYS_INLINE void fc_store512_f32(float *out, int64_t *out_idx,
                                             fc_best512_f32 best, int32_t base)
{
    const __m512i cols = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                           16, 18, 20, 22, 24, 26, 28, 30);
    __m512i idx = _mm512_add_epi32(best.off, _mm512_add_epi32(_mm512_set1_epi32(base), cols));
    _mm512_storeu_ps(out, best.val);
    _mm512_storeu_si512(out_idx, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
    _mm512_storeu_si512(out_idx + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
}

/* 16 windows t..t+15 of one output row (as fc_max_block_f32) */
FC_AVX512 FC_ALWAYS_INLINE void fc_max_block512_f32(const float *r0, Py_ssize_t in_w, const int k,
                                                 Py_ssize_t t, float *out, int64_t *out_idx,
                                                 int32_t base)
{
    fc_best512_f32 best = fc_combine512_f32(fc_row512_f32(r0 + 2 * t, k, 0),
                                            fc_row512_f32(r0 + in_w + 2 * t, k,
                                                          (int32_t)in_w));
    if (k == 3)
        best = fc_combine512_f32(best, fc_row512_f32(r0 + 2 * in_w + 2 * t, k,
                                                     (int32_t)(2 * in_w)));
    fc_store512_f32(out + t, out_idx + t, best, base + 2 * (int32_t)t);
}

FC_MAX_PLANE512(f32, float, int32_t, 16)

FC_MAX_PLANE512(f64, double, int64_t, 8)

/* Channels-last windows (fc_max_px_avx2_*) in AVX-512 registers: 16
   floats or 8 doubles per vector, four vectors side by side (32 zmm
   registers hold their rows and bests), then single vectors, the last
   re-run to end at ch (ch >= the lanes). */
FC_AVX512 FC_ALWAYS_INLINE fc_best512_f32 fc_px_tap512_f32(const float *p, Py_ssize_t flat)
{
    fc_best512_f32 t;
    t.val = _mm512_loadu_ps(p);
    t.off = _mm512_set1_epi32((int32_t)flat);
    return t;
}

FC_AVX512 FC_ALWAYS_INLINE void fc_px_store512_f32(float *out, int64_t *out_idx,
                                                fc_best512_f32 best)
{
    _mm512_storeu_ps(out, best.val);
    _mm512_storeu_si512(out_idx, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(best.off)));
    _mm512_storeu_si512(out_idx + 8,
                        _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(best.off, 1)));
}

FC_AVX512 FC_ALWAYS_INLINE fc_best512_f64 fc_px_tap512_f64(const double *p, Py_ssize_t flat)
{
    fc_best512_f64 t;
    t.val = _mm512_loadu_pd(p);
    t.off = _mm512_set1_epi64((int64_t)flat);
    return t;
}

FC_AVX512 FC_ALWAYS_INLINE void fc_px_store512_f64(double *out, int64_t *out_idx,
                                                fc_best512_f64 best)
{
    _mm512_storeu_pd(out, best.val);
    _mm512_storeu_si512(out_idx, best.off);
}

FC_MAX_PX_VECS(fc_max_px_vecs512_f32, float, fc_best512_f32, fc_px_tap512_f32,
               fc_combine512_f32, fc_px_store512_f32, 16, FC_AVX512)
FC_MAX_PX_VECS(fc_max_px_vecs512_f64, double, fc_best512_f64, fc_px_tap512_f64,
               fc_combine512_f64, fc_px_store512_f64, 8, FC_AVX512)

FC_MAX_PX_ALL(fc_max_px512_f32, fc_max_px_vecs512_f32, float, 16, 4, FC_AVX512)
FC_MAX_PX_ALL(fc_max_px512_f64, fc_max_px_vecs512_f64, double, 8, 4, FC_AVX512)

#else
#define FC_POOL_AVX512 0
static int fc_set_max_avx512(int on)
{
    (void)on;
    return 0;
}
#endif

/* Maxima and flat indices of a whole plane (see fc_max_plane_avx2_f32):
   the AVX-512 rows when they are on and the row has a vector of windows. */
static inline void fc_max_plane_s2_f32(const float *src, Py_ssize_t in_w, Py_ssize_t k,
                                      Py_ssize_t stride_h, float *out, int64_t *out_idx,
                                      Py_ssize_t out_h, Py_ssize_t out_w,
                                      Py_ssize_t ahead, Py_ssize_t left)
{
#if FC_POOL_AVX512
    if (fc_max_avx512 && out_w >= 16) {
        fc_max_plane512_f32(src, in_w, k, stride_h, out, out_idx, out_h, out_w, ahead, left);
        return;
    }
#endif
    fc_max_plane_avx2_f32(src, in_w, k, stride_h, out, out_idx, out_h, out_w, ahead, left);
}

static inline void fc_max_plane_s2_f64(const double *src, Py_ssize_t in_w, Py_ssize_t k,
                                      Py_ssize_t stride_h, double *out, int64_t *out_idx,
                                      Py_ssize_t out_h, Py_ssize_t out_w,
                                      Py_ssize_t ahead, Py_ssize_t left)
{
#if FC_POOL_AVX512
    if (fc_max_avx512 && out_w >= 8) {
        fc_max_plane512_f64(src, in_w, k, stride_h, out, out_idx, out_h, out_w, ahead, left);
        return;
    }
#endif
    fc_max_plane_avx2_f64(src, in_w, k, stride_h, out, out_idx, out_h, out_w, ahead, left);
}

/* One NHWC pixel's window maxima and flat indices over all ch channels
   (ch >= FC_F32_LANES or FC_F64_LANES): AVX-512 vectors when they are on
   and ch holds one, else AVX2; the same tree, so the same bits. */
static inline void fc_max_px_f32(const float *x, Py_ssize_t in_w, Py_ssize_t ch,
                                 Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1,
                                 float *out, int64_t *out_idx)
{
#if FC_POOL_AVX512
    if (fc_max_avx512 && ch >= 16) {
        fc_max_px512_f32(x, in_w, ch, h0, h1, w0, w1, out, out_idx);
        return;
    }
#endif
    fc_max_px_avx2_f32(x, in_w, ch, h0, h1, w0, w1, out, out_idx);
}

static inline void fc_max_px_f64(const double *x, Py_ssize_t in_w, Py_ssize_t ch,
                                 Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1,
                                 double *out, int64_t *out_idx)
{
#if FC_POOL_AVX512
    if (fc_max_avx512 && ch >= 8) {
        fc_max_px512_f64(x, in_w, ch, h0, h1, w0, w1, out, out_idx);
        return;
    }
#endif
    fc_max_px_avx2_f64(x, in_w, ch, h0, h1, w0, w1, out, out_idx);
}

#else  /* no AVX2: the Cython loops run; these are never called */

#define FC_POOL_AVX2 0
#define fc_set_max_avx512(on) 0
#define fc_max_s2_f32(r0, in_w, k, out, out_idx, n, base) abort()
#define fc_max_s2_f64(r0, in_w, k, out, out_idx, n, base) abort()
#define fc_avg_s2_f32(r0, in_w, k, out, n, div) abort()
#define fc_avg_s2_f64(r0, in_w, k, out, n, div) abort()
#define fc_max_plane_s2_f32(src, in_w, k, sh, out, out_idx, oh, ow, ahead, left) abort()
#define fc_max_plane_s2_f64(src, in_w, k, sh, out, out_idx, oh, ow, ahead, left) abort()
#define fc_avg_plane_s2_f32(src, in_w, k, sh, out, oh, ow, ahead, left) abort()
#define fc_avg_plane_s2_f64(src, in_w, k, sh, out, oh, ow, ahead, left) abort()
#define fc_avg_grad_k2s2_f32(g, d0, d1, n, div) abort()
#define fc_avg_grad_k2s2_f64(g, d0, d1, n, div) abort()
#define fc_avg_spread_s2_f32(sp, h, n, k) abort()
#define fc_avg_spread_s2_f64(sp, h, n, k) abort()
#define fc_avg_grad_k3s2_f32(prev, cur, d_even, d_odd, in_w) abort()
#define fc_avg_grad_k3s2_f64(prev, cur, d_even, d_odd, in_w) abort()
#define fc_avg_grad_plane_k3s2_f32(g, dx, sh, ih, iw, oh, ow, ahead, gl, dl) abort()
#define fc_avg_grad_plane_k3s2_f64(g, dx, sh, ih, iw, oh, ow, ahead, gl, dl) abort()
#define fc_max_grad_px_f32(g, idx, d00, ch, f00, in_w) (abort(), 0)
#define fc_max_grad_px_f64(g, idx, d00, ch, f00, in_w) (abort(), 0)
#define fc_max_px_f32(x, in_w, ch, h0, h1, w0, w1, out, out_idx) abort()
#define fc_max_px_f64(x, in_w, ch, h0, h1, w0, w1, out, out_idx) abort()
#define fc_avg_px_f32(x, in_w, ch, h0, h1, w0, w1, out, div) abort()
#define fc_avg_px_f64(x, in_w, ch, h0, h1, w0, w1, out, div) abort()
#define fc_avg_gather_px_f32(rows, p_base, row_len, ch, p_lo, p_hi, q_lo, q_hi, dst) abort()
#define fc_avg_gather_px_f64(rows, p_base, row_len, ch, p_lo, p_hi, q_lo, q_hi, dst) abort()
#define fc_avg_grad_px_k2_f32(g, d00, ch, in_w, div) abort()
#define fc_avg_grad_px_k2_f64(g, d00, ch, in_w, div) abort()
#define fc_max_grad_k2s2_f32(g, idx, d0, in_w, n, base) (abort(), 0)
#define fc_max_grad_k2s2_f64(g, idx, d0, in_w, n, base) (abort(), 0)

#endif
#endif
