/*
 * fastconv's own serial float64 GEMM for AVX-512 CPUs, used by _blas.pyx's
 * ``gemm`` in place of the BLAS for the mid-sized products the convolution
 * kernels make (see ``_own_gemm_fits`` there).
 *
 *     C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n]   (row-major)
 *
 * Why: the kernels call GEMM single-threaded, once per tile, on products of
 * a few hundred rows and columns.  On the AVX-512 Xeon that issue 3 was
 * measured on, NumPy's OpenBLAS ran those at 55-65 GFLOP/s on one core,
 * oneMKL at 75-90, and this kernel at 70-90 (docs/speed-history.md).
 *
 * Structure (the usual one, after BLIS): K is cut into blocks of FC_GEMM_KC,
 * M into blocks of FC_GEMM_MC.  A block of op(A) is packed into panels of
 * FC_GEMM_MR = 8 rows stored k-major; each FC_GEMM_NR = 24-column panel of
 * op(B) is packed just before use (k-major, zero-padded), so it sits in L1
 * while every A panel of the block passes over it.  Packing B panel by panel
 * also keeps a matrix whose rows lie 2^k bytes apart from piling its rows
 * onto a few L1 sets, as reading it in place did.  The micro-kernel keeps
 * an 8 x 24 tile of C in 24 zmm registers; per k it loads three vectors of
 * B and broadcasts eight values of A (24 FMAs).  Narrow edge panels get an
 * 8 x 16 or 8 x 8 tile, and only the last vector of a ragged panel is a
 * masked load: masked loads in the inner loop cost a third of the speed.
 *
 * The sums run over k in order, blocks of FC_GEMM_KC added to C in order, so
 * a product's result depends only on its operands and shape -- never on the
 * thread that computes it.  beta == 0 never reads C (BLAS semantics).
 *
 * Workspace: one buffer per thread (FC_GEMM_WORK_BYTES), from a pthread key
 * whose destructor frees it when the thread ends.  fc_dgemm_avx512 returns
 * -1, having done nothing, when the CPU lacks AVX-512F, the buffer cannot
 * be had, or the compiler cannot target AVX-512; the caller then uses BLAS.
 */
#ifndef FASTCONV_GEMM_AVX512_H
#define FASTCONV_GEMM_AVX512_H

#include <stddef.h>
#include <stdlib.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(_WIN32)
#define FC_GEMM_HAVE_AVX512 1
#include <immintrin.h>
#include <pthread.h>
#else
#define FC_GEMM_HAVE_AVX512 0
#endif

#define FC_GEMM_MR 8
#define FC_GEMM_NR 24
#define FC_GEMM_KC 128
#define FC_GEMM_MC 128
#define FC_GEMM_WORK_BYTES \
    (sizeof(double) * (FC_GEMM_MC * FC_GEMM_KC + FC_GEMM_KC * FC_GEMM_NR) + 64)

#if FC_GEMM_HAVE_AVX512

typedef ptrdiff_t fc_gsize;

#define FC_TGT __attribute__((target("avx512f")))

/* one k step of row r of the tile */
#define FC_GEMM_ROW(r) \
    a = _mm512_set1_pd(ap[r]); \
    c##r##0 = _mm512_fmadd_pd(a, b0, c##r##0); \
    if (nv > 1) c##r##1 = _mm512_fmadd_pd(a, b1, c##r##1); \
    if (nv > 2) c##r##2 = _mm512_fmadd_pd(a, b2, c##r##2);
#define FC_GEMM_ZERO(r) \
    __m512d c##r##0 = _mm512_setzero_pd(), c##r##1 = _mm512_setzero_pd(), \
            c##r##2 = _mm512_setzero_pd();
#define FC_GEMM_OUT(cr, mk, acc) \
    if (beta == 0.0) \
        _mm512_mask_storeu_pd(cr, mk, _mm512_mul_pd(va, acc)); \
    else \
        _mm512_mask_storeu_pd(cr, mk, _mm512_fmadd_pd(vb, _mm512_maskz_loadu_pd(mk, cr), \
                                                      _mm512_mul_pd(va, acc)));
#define FC_GEMM_STORE(r) \
    if (r < mr) { \
        double* cr = c + (r) * ldc; \
        FC_GEMM_OUT(cr, m0, c##r##0) \
        if (nv > 1) { FC_GEMM_OUT(cr + 8, m1, c##r##1) } \
        if (nv > 2) { FC_GEMM_OUT(cr + 16, m2, c##r##2) } \
    }

/* C[0:mr, 0:nr] = alpha * sum_p ap[p][0:8] (x) bp[p][0:nr] + beta * C, with
   nv = ceil(nr / 8) vectors per row, the last one masked when `tail`. */
FC_TGT __attribute__((always_inline))
static inline void fc_gemm_micro(const int nv, const int tail, fc_gsize kc,
                                 const double* ap, const double* bp, fc_gsize nr,
                                 double* c, fc_gsize ldc, fc_gsize mr,
                                 double alpha, double beta)
{
    const fc_gsize ldb = FC_GEMM_NR;
    __mmask8 ml = tail ? (__mmask8)((1u << (nr - 8 * (nv - 1))) - 1) : (__mmask8)0xff;
    __mmask8 m0 = nv == 1 ? ml : 0xff, m1 = nv == 2 ? ml : 0xff, m2 = ml;
    FC_GEMM_ZERO(0) FC_GEMM_ZERO(1) FC_GEMM_ZERO(2) FC_GEMM_ZERO(3)
    FC_GEMM_ZERO(4) FC_GEMM_ZERO(5) FC_GEMM_ZERO(6) FC_GEMM_ZERO(7)
    __m512d a, b0, b1 = _mm512_setzero_pd(), b2 = _mm512_setzero_pd();
    const double* b = bp;
    for (fc_gsize p = 0; p < kc; p++) {
        /* the packed panel is zero-padded: only C's stores need the mask */
        b0 = _mm512_loadu_pd(b);
        if (nv > 1) b1 = _mm512_loadu_pd(b + 8);
        if (nv > 2) b2 = _mm512_loadu_pd(b + 16);
        FC_GEMM_ROW(0) FC_GEMM_ROW(1) FC_GEMM_ROW(2) FC_GEMM_ROW(3)
        FC_GEMM_ROW(4) FC_GEMM_ROW(5) FC_GEMM_ROW(6) FC_GEMM_ROW(7)
        ap += FC_GEMM_MR;
        b += ldb;
    }
    __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
    FC_GEMM_STORE(0) FC_GEMM_STORE(1) FC_GEMM_STORE(2) FC_GEMM_STORE(3)
    FC_GEMM_STORE(4) FC_GEMM_STORE(5) FC_GEMM_STORE(6) FC_GEMM_STORE(7)
}

typedef void (*fc_gemm_micro_fn)(fc_gsize, const double*, const double*, fc_gsize,
                                 double*, fc_gsize, fc_gsize, double, double);
#define FC_GEMM_MICRO(name, nv, tail) \
    FC_TGT __attribute__((noinline)) \
    static void name(fc_gsize kc, const double* ap, const double* bp, fc_gsize nr, \
                     double* c, fc_gsize ldc, fc_gsize mr, double alpha, double beta) \
    { fc_gemm_micro(nv, tail, kc, ap, bp, nr, c, ldc, mr, alpha, beta); }
FC_GEMM_MICRO(fc_gemm_micro_24, 3, 0)
FC_GEMM_MICRO(fc_gemm_micro_24t, 3, 1)
FC_GEMM_MICRO(fc_gemm_micro_16, 2, 0)
FC_GEMM_MICRO(fc_gemm_micro_16t, 2, 1)
FC_GEMM_MICRO(fc_gemm_micro_8, 1, 0)
FC_GEMM_MICRO(fc_gemm_micro_8t, 1, 1)

static fc_gemm_micro_fn fc_gemm_micro_for(fc_gsize nr)
{
    if (nr > 16) return nr == 24 ? fc_gemm_micro_24 : fc_gemm_micro_24t;
    if (nr > 8) return nr == 16 ? fc_gemm_micro_16 : fc_gemm_micro_16t;
    return nr == 8 ? fc_gemm_micro_8 : fc_gemm_micro_8t;
}

/* dst[j * dst_stride + i] = src[i * ld + j] for an 8 x 8 block */
FC_TGT __attribute__((always_inline))
static inline void fc_gemm_tr8x8(const double* src, fc_gsize ld, double* dst,
                                 fc_gsize dst_stride)
{
    __m512d r0 = _mm512_loadu_pd(src), r1 = _mm512_loadu_pd(src + ld),
            r2 = _mm512_loadu_pd(src + 2 * ld), r3 = _mm512_loadu_pd(src + 3 * ld),
            r4 = _mm512_loadu_pd(src + 4 * ld), r5 = _mm512_loadu_pd(src + 5 * ld),
            r6 = _mm512_loadu_pd(src + 6 * ld), r7 = _mm512_loadu_pd(src + 7 * ld);
    /* pairs of rows interleaved, then 128-bit lanes gathered twice */
    __m512d t0 = _mm512_unpacklo_pd(r0, r1), t1 = _mm512_unpackhi_pd(r0, r1),
            t2 = _mm512_unpacklo_pd(r2, r3), t3 = _mm512_unpackhi_pd(r2, r3),
            t4 = _mm512_unpacklo_pd(r4, r5), t5 = _mm512_unpackhi_pd(r4, r5),
            t6 = _mm512_unpacklo_pd(r6, r7), t7 = _mm512_unpackhi_pd(r6, r7);
    __m512d u0 = _mm512_shuffle_f64x2(t0, t2, 0x88), u1 = _mm512_shuffle_f64x2(t0, t2, 0xdd),
            u2 = _mm512_shuffle_f64x2(t1, t3, 0x88), u3 = _mm512_shuffle_f64x2(t1, t3, 0xdd),
            u4 = _mm512_shuffle_f64x2(t4, t6, 0x88), u5 = _mm512_shuffle_f64x2(t4, t6, 0xdd),
            u6 = _mm512_shuffle_f64x2(t5, t7, 0x88), u7 = _mm512_shuffle_f64x2(t5, t7, 0xdd);
    _mm512_storeu_pd(dst, _mm512_shuffle_f64x2(u0, u4, 0x88));
    _mm512_storeu_pd(dst + 1 * dst_stride, _mm512_shuffle_f64x2(u2, u6, 0x88));
    _mm512_storeu_pd(dst + 2 * dst_stride, _mm512_shuffle_f64x2(u1, u5, 0x88));
    _mm512_storeu_pd(dst + 3 * dst_stride, _mm512_shuffle_f64x2(u3, u7, 0x88));
    _mm512_storeu_pd(dst + 4 * dst_stride, _mm512_shuffle_f64x2(u0, u4, 0xdd));
    _mm512_storeu_pd(dst + 5 * dst_stride, _mm512_shuffle_f64x2(u2, u6, 0xdd));
    _mm512_storeu_pd(dst + 6 * dst_stride, _mm512_shuffle_f64x2(u1, u5, 0xdd));
    _mm512_storeu_pd(dst + 7 * dst_stride, _mm512_shuffle_f64x2(u3, u7, 0xdd));
}

/* Rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) into 8-row panels,
   ap[panel][p][r], rows past mc zero. */
FC_TGT
static void fc_gemm_pack_a(int trans, const double* A, fc_gsize lda, fc_gsize i0,
                           fc_gsize mc, fc_gsize p0, fc_gsize kc, double* ap)
{
    for (fc_gsize ir = 0; ir < mc; ir += FC_GEMM_MR) {
        fc_gsize mr = mc - ir < FC_GEMM_MR ? mc - ir : FC_GEMM_MR;
        fc_gsize p = 0;
        if (mr == FC_GEMM_MR) {
            if (trans) {        /* op(A) = A^T: eight consecutive elements per p */
                for (; p < kc; p++)
                    _mm512_storeu_pd(ap + p * FC_GEMM_MR,
                                     _mm512_loadu_pd(A + (p0 + p) * lda + i0 + ir));
            } else {
                for (; p + 8 <= kc; p += 8)
                    fc_gemm_tr8x8(A + (i0 + ir) * lda + p0 + p, lda,
                                  ap + p * FC_GEMM_MR, FC_GEMM_MR);
            }
        }
        for (; p < kc; p++) {
            for (fc_gsize r = 0; r < mr; r++) {
                fc_gsize i = i0 + ir + r, q = p0 + p;
                ap[p * FC_GEMM_MR + r] = trans ? A[q * lda + i] : A[i * lda + q];
            }
            for (fc_gsize r = mr; r < FC_GEMM_MR; r++)
                ap[p * FC_GEMM_MR + r] = 0.0;
        }
        ap += FC_GEMM_MR * kc;
    }
}

/* Rows [p0, p0 + kc) x columns [j0, j0 + nr) of op(B), nr <= 24, into one
   panel bp[p][j], columns past nr zero. */
FC_TGT
static void fc_gemm_pack_b(int trans, const double* B, fc_gsize ldb, fc_gsize p0,
                           fc_gsize kc, fc_gsize j0, fc_gsize nr, double* bp)
{
    fc_gsize p = 0;
    if (nr == FC_GEMM_NR) {
        if (!trans) {
            for (; p < kc; p++) {
                const double* s = B + (p0 + p) * ldb + j0;
                _mm512_storeu_pd(bp + p * FC_GEMM_NR, _mm512_loadu_pd(s));
                _mm512_storeu_pd(bp + p * FC_GEMM_NR + 8, _mm512_loadu_pd(s + 8));
                _mm512_storeu_pd(bp + p * FC_GEMM_NR + 16, _mm512_loadu_pd(s + 16));
            }
        } else {            /* op(B) = B^T: 8 x 8 transposes */
            for (; p + 8 <= kc; p += 8)
                for (fc_gsize j = 0; j < FC_GEMM_NR; j += 8)
                    fc_gemm_tr8x8(B + (j0 + j) * ldb + p0 + p, ldb,
                                  bp + p * FC_GEMM_NR + j, FC_GEMM_NR);
        }
    }
    for (; p < kc; p++) {
        for (fc_gsize j = 0; j < nr; j++) {
            fc_gsize q = p0 + p, col = j0 + j;
            bp[p * FC_GEMM_NR + j] = trans ? B[col * ldb + q] : B[q * ldb + col];
        }
        for (fc_gsize j = nr; j < FC_GEMM_NR; j++)
            bp[p * FC_GEMM_NR + j] = 0.0;
    }
}

static pthread_key_t fc_gemm_key;
static int fc_gemm_key_ok = 0;
static pthread_once_t fc_gemm_once = PTHREAD_ONCE_INIT;

static void fc_gemm_make_key(void)
{
    fc_gemm_key_ok = pthread_key_create(&fc_gemm_key, free) == 0;
}

/* This thread's workspace, 64-byte aligned; NULL if none can be had. */
static double* fc_gemm_workspace(void)
{
    void* raw;
    pthread_once(&fc_gemm_once, fc_gemm_make_key);
    if (!fc_gemm_key_ok)
        return NULL;
    raw = pthread_getspecific(fc_gemm_key);
    if (raw == NULL) {
        raw = malloc(FC_GEMM_WORK_BYTES);
        if (raw == NULL)
            return NULL;
        if (pthread_setspecific(fc_gemm_key, raw) != 0) {
            free(raw);
            return NULL;
        }
    }
    return (double*)(((size_t)raw + 63) & ~(size_t)63);
}

static int fc_gemm_avx512_cpu(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* The product, or -1 (nothing written) if it cannot run here. */
static int fc_dgemm_avx512(int trans_a, int trans_b, fc_gsize m, fc_gsize n, fc_gsize k,
                           double alpha, const double* A, fc_gsize lda,
                           const double* B, fc_gsize ldb, double beta,
                           double* C, fc_gsize ldc)
{
    double* work = fc_gemm_workspace();
    double *ap, *bp;
    if (work == NULL)
        return -1;
    ap = work;
    bp = work + FC_GEMM_MC * FC_GEMM_KC;
    for (fc_gsize p0 = 0; p0 < k; p0 += FC_GEMM_KC) {
        fc_gsize kc = k - p0 < FC_GEMM_KC ? k - p0 : FC_GEMM_KC;
        double blk_beta = p0 == 0 ? beta : 1.0;    /* later K blocks add to C */
        for (fc_gsize i0 = 0; i0 < m; i0 += FC_GEMM_MC) {
            fc_gsize mc = m - i0 < FC_GEMM_MC ? m - i0 : FC_GEMM_MC;
            fc_gemm_pack_a(trans_a, A, lda, i0, mc, p0, kc, ap);
            for (fc_gsize j0 = 0; j0 < n; j0 += FC_GEMM_NR) {
                fc_gsize nr = n - j0 < FC_GEMM_NR ? n - j0 : FC_GEMM_NR;
                fc_gemm_micro_fn micro = fc_gemm_micro_for(nr);
                fc_gemm_pack_b(trans_b, B, ldb, p0, kc, j0, nr, bp);
                for (fc_gsize ir = 0; ir < mc; ir += FC_GEMM_MR) {
                    fc_gsize mr = mc - ir < FC_GEMM_MR ? mc - ir : FC_GEMM_MR;
                    micro(kc, ap + ir * kc, bp, nr, C + (i0 + ir) * ldc + j0, ldc, mr,
                          alpha, blk_beta);
                }
            }
        }
    }
    return 0;
}

#else  /* no AVX-512 target: the caller always uses BLAS */

static int fc_gemm_avx512_cpu(void) { return 0; }

static int fc_dgemm_avx512(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                           double alpha, const double* A, ptrdiff_t lda,
                           const double* B, ptrdiff_t ldb, double beta,
                           double* C, ptrdiff_t ldc)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)A;
    (void)lda; (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
    return -1;
}

#endif
#endif
