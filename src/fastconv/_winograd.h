/*
 * The input and output transforms of Winograd F(2x2, 3x3) and F(3x3, 2x2)
 * (_winograd.pxi), one tile at a time along its pixels' channel vectors,
 * and the transposes that stage NCHW planes channels last.  Plain C,
 * compiled into both builds: the tiles' values are additions and
 * subtractions only (no multiply, so no fused multiply-add either), the
 * same bits in both.
 *
 * Why C: the loops write sixteen strided rows from up to sixteen others;
 * written in Cython, GCC could not rule out that they overlap and left them
 * scalar.  `restrict` lets it vectorize them along the channels.
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

#include <Python.h>    /* Py_ssize_t */

/* The loops' rows never overlap (sixteen rows of one workspace block, at
 * offsets the compiler cannot see are apart): say so, or it keeps them
 * scalar. */
#if defined(__clang__)
#define FC_NO_OVERLAP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FC_NO_OVERLAP _Pragma("GCC ivdep")
#else
#define FC_NO_OVERLAP
#endif

/* One row combination t0..t3 of B^T d times B on the right: entries xi0 ..
 * xi0 + 3 stored to v[xi*vs + i].  Columns of B:
 * (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1). */
#define FC_WINOGRAD_B_ROW(t0, t1, t2, t3, v, vs, xi0, i)                               \
    do {                                                                               \
        v[(xi0) * (vs) + i] = (t0) - (t2);                                             \
        v[((xi0) + 1) * (vs) + i] = (t1) + (t2);                                       \
        v[((xi0) + 2) * (vs) + i] = (t2) - (t1);                                       \
        v[((xi0) + 3) * (vs) + i] = (t1) - (t3);                                       \
    } while (0)

/* The four outputs of a tile, channel jj, A^T M A + b (rows of A^T:
 * (1, 1, 1, 0), (0, 1, -1, -1)), and z: 0 if all four are finite, NaN
 * otherwise. */
#define FC_WINOGRAD_TILE(T, m, ms, jj, b)                                              \
    const T s00 = m[jj] + m[4 * ms + jj] + m[8 * ms + jj];                             \
    const T s01 = m[ms + jj] + m[5 * ms + jj] + m[9 * ms + jj];                        \
    const T s02 = m[2 * ms + jj] + m[6 * ms + jj] + m[10 * ms + jj];                   \
    const T s03 = m[3 * ms + jj] + m[7 * ms + jj] + m[11 * ms + jj];                   \
    const T s10 = m[4 * ms + jj] - m[8 * ms + jj] - m[12 * ms + jj];                   \
    const T s11 = m[5 * ms + jj] - m[9 * ms + jj] - m[13 * ms + jj];                   \
    const T s12 = m[6 * ms + jj] - m[10 * ms + jj] - m[14 * ms + jj];                  \
    const T s13 = m[7 * ms + jj] - m[11 * ms + jj] - m[15 * ms + jj];                  \
    const T y00 = (s00 + s01 + s02) + b, y01 = (s01 - s02 - s03) + b;                  \
    const T y10 = (s10 + s11 + s12) + b, y11 = (s11 - s12 - s13) + b;                  \
    T z = (y00 + y01) + (y10 + y11);                                                   \
    z = z - z;

/* A g A^T of one 2x2 sensitivity block e0 o0 / e1 o1 (row 0, row 1), its
 * entry xi stored to w[xi*ws + i].  Rows of A: (1, 0),
 * (1, 1), (1, -1), (0, -1). */
#define FC_WINOGRAD_GRAD_BLOCK(T, e0, o0, e1, o1, w, ws, i)                            \
    do {                                                                               \
        /* A g: rows g0, g0 + g1, g0 - g1, -g1 (even and odd columns) */               \
        const T pe = (e0) + (e1), po = (o0) + (o1), me = (e0) - (e1), mo = (o0) - (o1); \
        /* then A^T on the right: columns c0, c0 + c1, c0 - c1, -c1 */                 \
        w[i] = (e0);                  w[(ws) + i] = (e0) + (o0);                       \
        w[2 * (ws) + i] = (e0) - (o0); w[3 * (ws) + i] = -(o0);                        \
        w[4 * (ws) + i] = pe;         w[5 * (ws) + i] = pe + po;                       \
        w[6 * (ws) + i] = pe - po;    w[7 * (ws) + i] = -po;                           \
        w[8 * (ws) + i] = me;         w[9 * (ws) + i] = me + mo;                       \
        w[10 * (ws) + i] = me - mo;   w[11 * (ws) + i] = -mo;                          \
        w[12 * (ws) + i] = -(e1);     w[13 * (ws) + i] = -((e1) + (o1));               \
        w[14 * (ws) + i] = (o1) - (e1); w[15 * (ws) + i] = (o1);                       \
    } while (0)

/* fc_winograd_in_dt: B^T d B of one tile, d[4r + s] its patch's pixel
 * (r, s), ch channels (a zero pixel outside the image); entry xi to
 * v[xi*vs + c]. */
#define FC_WINOGRAD_IN(dt, T)                                                          \
static inline void fc_winograd_in_##dt(const T *const *d, Py_ssize_t ch,               \
                                       T *restrict v, Py_ssize_t vs)                   \
{                                                                                      \
    const T *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];                            \
    const T *d4 = d[4], *d5 = d[5], *d6 = d[6], *d7 = d[7];                            \
    const T *d8 = d[8], *d9 = d[9], *d10 = d[10], *d11 = d[11];                        \
    const T *d12 = d[12], *d13 = d[13], *d14 = d[14], *d15 = d[15];                    \
    Py_ssize_t c;                                                                      \
    FC_NO_OVERLAP                                                                      \
    for (c = 0; c < ch; c++) {                                                         \
        /* B^T d, column s of row combination a in a_s (rows r = 0..3 of      */      \
        /* column s are d[s], d[4 + s], d[8 + s], d[12 + s])                  */      \
        const T a0 = d0[c] - d8[c], a1 = d1[c] - d9[c];                                \
        const T a2 = d2[c] - d10[c], a3 = d3[c] - d11[c];                              \
        const T b0 = d4[c] + d8[c], b1 = d5[c] + d9[c];                                \
        const T b2 = d6[c] + d10[c], b3 = d7[c] + d11[c];                              \
        const T c0 = d8[c] - d4[c], c1 = d9[c] - d5[c];                                \
        const T c2 = d10[c] - d6[c], c3 = d11[c] - d7[c];                              \
        const T e0 = d4[c] - d12[c], e1 = d5[c] - d13[c];                              \
        const T e2 = d6[c] - d14[c], e3 = d7[c] - d15[c];                              \
        FC_WINOGRAD_B_ROW(a0, a1, a2, a3, v, vs, 0, c);                                \
        FC_WINOGRAD_B_ROW(b0, b1, b2, b3, v, vs, 4, c);                                \
        FC_WINOGRAD_B_ROW(c0, c1, c2, c3, v, vs, 8, c);                                \
        FC_WINOGRAD_B_ROW(e0, e1, e2, e3, v, vs, 12, c);                               \
    }                                                                                  \
}

/* fc_winograd_out_dt: A^T M A + b of one tile (entry xi, channel c at
 * m[xi*ms + c]) into its four output pixels y00, y01, y10, y11 (distinct
 * spare vectors for those outside the image).  Returns 1 if some value is
 * not finite. */
#define FC_WINOGRAD_OUT(dt, T)                                                         \
static inline int fc_winograd_out_##dt(const T *restrict m, Py_ssize_t ms,             \
                                       Py_ssize_t ch, const T *restrict bias,          \
                                       T *restrict p00, T *restrict p01,               \
                                       T *restrict p10, T *restrict p11)               \
{                                                                                      \
    int bad = 0;                                                                       \
    Py_ssize_t c;                                                                      \
    FC_NO_OVERLAP                                                                      \
    for (c = 0; c < ch; c++) {                                                         \
        FC_WINOGRAD_TILE(T, m, ms, c, bias[c])                                         \
        bad |= z != z;                                                                 \
        p00[c] = y00;                                                                  \
        p01[c] = y01;                                                                  \
        p10[c] = y10;                                                                  \
        p11[c] = y11;                                                                  \
    }                                                                                  \
    return bad;                                                                        \
}

/* fc_winograd_grad_dt: A g A^T of one 2x2 sensitivity block, its pixels
 * g00, g01, g10, g11 (a zero pixel outside the map), ch channels; entry xi
 * to w[xi*ws + c]. */
#define FC_WINOGRAD_GRAD(dt, T)                                                        \
static inline void fc_winograd_grad_##dt(const T *g00, const T *g01,                   \
                                         const T *g10, const T *g11,                   \
                                         Py_ssize_t ch, T *restrict w,                 \
                                         Py_ssize_t ws)                                \
{                                                                                      \
    Py_ssize_t c;                                                                      \
    FC_NO_OVERLAP                                                                      \
    for (c = 0; c < ch; c++) {                                                         \
        const T e0 = g00[c], o0 = g01[c], e1 = g10[c], o1 = g11[c];                    \
        FC_WINOGRAD_GRAD_BLOCK(T, e0, o0, e1, o1, w, ws, c);                           \
    }                                                                                  \
}

/* Channels-last staging of NCHW planes (the NCHW kernels run the same
 * transforms and GEMMs on it): fc_transpose_dt writes dst[j*ldd + i] =
 * src[i*lds + j] for i < rows, j < cols, in 8 x 8 blocks -- AVX shuffles
 * where the build targets AVX (the AVX2 build), plain loops otherwise and
 * at the edges.  Copies only, so both builds give the same bits. */
#if defined(__AVX__) && defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#include "_transpose8x8.h"
#define fc_tr8x8_f32 fc_tr8x8_avx_f32

static inline void fc_tr4x4_f64(const double *src, Py_ssize_t lds, double *dst, Py_ssize_t ldd)
{
    const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    const __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

static inline void fc_tr8x8_f64(const double *src, Py_ssize_t lds, double *dst, Py_ssize_t ldd)
{
    fc_tr4x4_f64(src, lds, dst, ldd);
    fc_tr4x4_f64(src + 4, lds, dst + 4 * ldd, ldd);
    fc_tr4x4_f64(src + 4 * lds, lds, dst + 4, ldd);
    fc_tr4x4_f64(src + 4 * lds + 4, lds, dst + 4 * ldd + 4, ldd);
}
#else
#define FC_TR8X8_LOOP(dt, T)                                                           \
static inline void fc_tr8x8_##dt(const T *src, Py_ssize_t lds, T *dst, Py_ssize_t ldd) \
{                                                                                      \
    Py_ssize_t i, j;                                                                   \
    for (j = 0; j < 8; j++)                                                            \
        for (i = 0; i < 8; i++)                                                        \
            dst[j * ldd + i] = src[i * lds + j];                                       \
}
FC_TR8X8_LOOP(f32, float)
FC_TR8X8_LOOP(f64, double)
#endif

/* The blocks go along the rows of src (`along_dst` 0) or of dst (1): the
 * side in memory, not in a cache-sized stage, is then read or written in
 * sequential streams instead of one line per row.  The stage's side is
 * taken 16 at a time (two blocks), so its lines are whole (16 floats). */
#define FC_TRANSPOSE(dt, T)                                                            \
static inline void fc_transpose_##dt(const T *src, Py_ssize_t lds, Py_ssize_t rows,    \
                                     Py_ssize_t cols, T *dst, Py_ssize_t ldd,          \
                                     int along_dst)                                    \
{                                                                                      \
    const Py_ssize_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;                 \
    Py_ssize_t i, j, i0, j0;                                                           \
    if (along_dst) {                                                                   \
        for (j0 = 0; j0 < cols8; j0 += 8) {                                            \
            const int pair = j0 + 16 <= cols8;                                         \
            for (i0 = 0; i0 < rows8; i0 += 8) {                                        \
                fc_tr8x8_##dt(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);     \
                if (pair)                                                              \
                    fc_tr8x8_##dt(src + i0 * lds + j0 + 8, lds,                        \
                                  dst + (j0 + 8) * ldd + i0, ldd);                     \
            }                                                                          \
            for (j = j0; j < j0 + (pair ? 16 : 8); j++)                                \
                for (i = rows8; i < rows; i++)                                         \
                    dst[j * ldd + i] = src[i * lds + j];                               \
            j0 += pair ? 8 : 0;                                                        \
        }                                                                              \
    } else {                                                                           \
        for (i0 = 0; i0 < rows8; i0 += 8) {                                            \
            const int pair = i0 + 16 <= rows8;                                         \
            for (j0 = 0; j0 < cols8; j0 += 8) {                                        \
                fc_tr8x8_##dt(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);     \
                if (pair)                                                              \
                    fc_tr8x8_##dt(src + (i0 + 8) * lds + j0, lds,                      \
                                  dst + j0 * ldd + i0 + 8, ldd);                       \
            }                                                                          \
            for (j = cols8; j < cols; j++)                                             \
                for (i = i0; i < i0 + (pair ? 16 : 8); i++)                            \
                    dst[j * ldd + i] = src[i * lds + j];                               \
            i0 += pair ? 8 : 0;                                                        \
        }                                                                              \
    }                                                                                  \
    /* the rest: rows past rows8, or (along_dst) columns past cols8 */             \
    for (j = along_dst ? cols8 : 0; j < cols; j++)                                     \
        for (i = along_dst ? 0 : rows8; i < rows; i++)                                 \
            dst[j * ldd + i] = src[i * lds + j];                                       \
}

FC_TRANSPOSE(f32, float)
FC_TRANSPOSE(f64, double)

FC_WINOGRAD_IN(f32, float)
FC_WINOGRAD_IN(f64, double)
FC_WINOGRAD_OUT(f32, float)
FC_WINOGRAD_OUT(f64, double)
FC_WINOGRAD_GRAD(f32, float)
FC_WINOGRAD_GRAD(f64, double)

#endif
