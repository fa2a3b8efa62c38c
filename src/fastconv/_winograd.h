/*
 * The input and output transforms of Winograd F(2x2, 3x3) (_winograd.pxi),
 * n tiles side by side.  Plain C, compiled into both builds: the tiles'
 * values are additions and subtractions only (no multiply, so no fused
 * multiply-add either), the same bits in both.
 *
 * Why C: the loops write sixteen strided rows from eight others; written in
 * Cython, GCC could not rule out that they overlap and left them scalar
 * (perf: the transforms took 57 % of the vgg3x3 float32 forward against
 * the GEMMs' 34 %).  `restrict` lets it vectorize them across the tiles.
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
 * xi0 + 3 stored to v[xi*vs + i] (both layouts' loops).  Columns of B:
 * (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1). */
#define FC_WINOGRAD_B_ROW(t0, t1, t2, t3, v, vs, xi0, i)                               \
    do {                                                                               \
        v[(xi0) * (vs) + i] = (t0) - (t2);                                             \
        v[((xi0) + 1) * (vs) + i] = (t1) + (t2);                                       \
        v[((xi0) + 2) * (vs) + i] = (t2) - (t1);                                       \
        v[((xi0) + 3) * (vs) + i] = (t1) - (t3);                                       \
    } while (0)

/* fc_winograd_in_dt: B^T d B of tiles jj < n.  Row k (k < 4) of the patches
 * is held as its even columns at e + k*width and its odd ones at
 * od + k*width (width >= n + 1): tile jj's patch row k is
 * e[jj], od[jj], e[jj + 1], od[jj + 1].  Entry xi = 4a + b of tile jj goes
 * to v[xi*v_stride + jj].  Rows of B^T: (1, 0, -1, 0), (0, 1, 1, 0),
 * (0, -1, 1, 0), (0, 1, 0, -1). */
#define FC_WINOGRAD_IN(dt, T)                                                          \
static inline void fc_winograd_in_##dt(const T *restrict e, const T *restrict od,      \
                                       Py_ssize_t width, Py_ssize_t n,                 \
                                       T *restrict v, Py_ssize_t vs)                   \
{                                                                                      \
    const T *e0 = e, *e1 = e + width, *e2 = e + 2 * width, *e3 = e + 3 * width;        \
    const T *o0 = od, *o1 = od + width, *o2 = od + 2 * width, *o3 = od + 3 * width;    \
    Py_ssize_t jj;                                                                     \
    FC_NO_OVERLAP                                                                      \
    for (jj = 0; jj < n; jj++) {                                                       \
        /* B^T d, its four columns (even jj, odd jj, even jj+1, odd jj+1) */           \
        const T a0 = e0[jj] - e2[jj], a1 = o0[jj] - o2[jj];                            \
        const T a2 = e0[jj + 1] - e2[jj + 1], a3 = o0[jj + 1] - o2[jj + 1];            \
        const T b0 = e1[jj] + e2[jj], b1 = o1[jj] + o2[jj];                            \
        const T b2 = e1[jj + 1] + e2[jj + 1], b3 = o1[jj + 1] + o2[jj + 1];            \
        const T c0 = e2[jj] - e1[jj], c1 = o2[jj] - o1[jj];                            \
        const T c2 = e2[jj + 1] - e1[jj + 1], c3 = o2[jj + 1] - o1[jj + 1];            \
        const T d0 = e1[jj] - e3[jj], d1 = o1[jj] - o3[jj];                            \
        const T d2 = e1[jj + 1] - e3[jj + 1], d3 = o1[jj + 1] - o3[jj + 1];            \
        /* then B on the right, row by row */                                          \
        FC_WINOGRAD_B_ROW(a0, a1, a2, a3, v, vs, 0, jj);                               \
        FC_WINOGRAD_B_ROW(b0, b1, b2, b3, v, vs, 4, jj);                               \
        FC_WINOGRAD_B_ROW(c0, c1, c2, c3, v, vs, 8, jj);                               \
        FC_WINOGRAD_B_ROW(d0, d1, d2, d3, v, vs, 12, jj);                              \
    }                                                                                  \
}

/* The four outputs of tile jj, A^T M A + b (rows of A^T: (1, 1, 1, 0),
 * (0, 1, -1, -1)), and z: 0 if all four are finite, NaN otherwise. */
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

/* fc_winograd_out_dt: tiles jj < n of one output channel, entry xi of tile
 * jj at m[xi*ms + jj], into columns 2jj, 2jj + 1 of row0 and row1 -- the
 * last tile's second column left out if odd_last.  Returns 1 if some value
 * computed (left-out ones too) is not finite. */
#define FC_WINOGRAD_OUT(dt, T)                                                         \
static inline int fc_winograd_out_##dt(const T *restrict m, Py_ssize_t ms,             \
                                       Py_ssize_t n, T b, T *restrict row0,            \
                                       T *restrict row1, int odd_last)                 \
{                                                                                      \
    const Py_ssize_t full = odd_last ? n - 1 : n;                                      \
    int bad = 0;                                                                       \
    Py_ssize_t jj;                                                                     \
    FC_NO_OVERLAP                                                                      \
    for (jj = 0; jj < full; jj++) {                                                    \
        FC_WINOGRAD_TILE(T, m, ms, jj, b)                                              \
        bad |= z != z;                                                                 \
        row0[2 * jj] = y00;                                                            \
        row0[2 * jj + 1] = y01;                                                        \
        row1[2 * jj] = y10;                                                            \
        row1[2 * jj + 1] = y11;                                                        \
    }                                                                                  \
    if (full < n) {                                                                    \
        jj = full;                                                                     \
        {                                                                              \
            FC_WINOGRAD_TILE(T, m, ms, jj, b)                                          \
            bad |= z != z;                                                             \
            row0[2 * jj] = y00;                                                        \
            row1[2 * jj] = y10;                                                        \
            (void)y01; (void)y11;                                                      \
        }                                                                              \
    }                                                                                  \
    return bad;                                                                        \
}

/* A g A^T of one 2x2 sensitivity block e0 o0 / e1 o1 (row 0, row 1), its
 * entry xi stored to w[xi*ws + i] (both layouts' loops).  Rows of A: (1, 0),
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

/* fc_winograd_grad_dt: A g A^T of the 2x2 blocks jj < n of a sensitivity
 * map (the filter gradient's "filters"): block jj is ge[jj], go[jj] (row 0)
 * and ge[n + jj], go[n + jj] (row 1), its even and odd columns.  Entry
 * xi = 4a + b to w[xi*ws + jj].  Rows of A: (1, 0), (1, 1), (1, -1), (0, -1). */
#define FC_WINOGRAD_GRAD(dt, T)                                                        \
static inline void fc_winograd_grad_##dt(const T *restrict ge, const T *restrict go,   \
                                         Py_ssize_t n, T *restrict w, Py_ssize_t ws)   \
{                                                                                      \
    Py_ssize_t jj;                                                                     \
    FC_NO_OVERLAP                                                                      \
    for (jj = 0; jj < n; jj++) {                                                       \
        const T e0 = ge[jj], o0 = go[jj], e1 = ge[n + jj], o1 = go[n + jj];            \
        FC_WINOGRAD_GRAD_BLOCK(T, e0, o0, e1, o1, w, ws, jj);                          \
    }                                                                                  \
}

/* Channels last (NHWC): the same transforms for one tile, vectorized along
 * the channels.  fc_winograd_in_nhwc_dt: d[4r + s] is the patch's pixel
 * (r, s), ch channels (a zero pixel outside the image); entry xi to
 * v[xi*vs + c]. */
#define FC_WINOGRAD_IN_NHWC(dt, T)                                                     \
static inline void fc_winograd_in_nhwc_##dt(const T *const *d, Py_ssize_t ch,          \
                                            T *restrict v, Py_ssize_t vs)              \
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

/* fc_winograd_out_nhwc_dt: A^T M A + b of one tile (entry xi, channel c at
 * m[xi*ms + c]) into its four output pixels y00, y01, y10, y11 (distinct
 * spare vectors for those outside the image).  Returns 1 if some value is
 * not finite. */
#define FC_WINOGRAD_OUT_NHWC(dt, T)                                                    \
static inline int fc_winograd_out_nhwc_##dt(const T *restrict m, Py_ssize_t ms,        \
                                            Py_ssize_t ch, const T *restrict bias,     \
                                            T *restrict p00, T *restrict p01,          \
                                            T *restrict p10, T *restrict p11)          \
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

/* fc_winograd_grad_nhwc_dt: A g A^T of one 2x2 sensitivity block, its pixels
 * g00, g01, g10, g11 (a zero pixel outside the map), ch channels; entry xi
 * to w[xi*ws + c]. */
#define FC_WINOGRAD_GRAD_NHWC(dt, T)                                                   \
static inline void fc_winograd_grad_nhwc_##dt(const T *g00, const T *g01,              \
                                              const T *g10, const T *g11,              \
                                              Py_ssize_t ch, T *restrict w,            \
                                              Py_ssize_t ws)                           \
{                                                                                      \
    Py_ssize_t c;                                                                      \
    FC_NO_OVERLAP                                                                      \
    for (c = 0; c < ch; c++) {                                                         \
        const T e0 = g00[c], o0 = g01[c], e1 = g10[c], o1 = g11[c];                    \
        FC_WINOGRAD_GRAD_BLOCK(T, e0, o0, e1, o1, w, ws, c);                           \
    }                                                                                  \
}

FC_WINOGRAD_IN(f32, float)
FC_WINOGRAD_IN(f64, double)
FC_WINOGRAD_OUT(f32, float)
FC_WINOGRAD_OUT(f64, double)
FC_WINOGRAD_GRAD(f32, float)
FC_WINOGRAD_GRAD(f64, double)
FC_WINOGRAD_IN_NHWC(f32, float)
FC_WINOGRAD_IN_NHWC(f64, double)
FC_WINOGRAD_OUT_NHWC(f32, float)
FC_WINOGRAD_OUT_NHWC(f64, double)
FC_WINOGRAD_GRAD_NHWC(f32, float)
FC_WINOGRAD_GRAD_NHWC(f64, double)

#endif
