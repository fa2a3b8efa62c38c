/*
 * fastconv's own serial GEMM for AVX-512 CPUs, float64 (fc_gemm_avx512_d)
 * and float32 (fc_gemm_avx512_s), used by _blas.pyx's ``gemm`` in place of
 * the BLAS for the mid-sized products the convolution kernels make (see
 * ``_own_gemm_fits`` there).
 *
 *     C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n]   (row-major)
 *
 * Why: the kernels call GEMM single-threaded, once per tile, on products of
 * a few hundred rows and columns.  On the AVX-512 Xeon that issue 3 was
 * measured on, one core ran the suite's float64 products at 45-71 GFLOP/s
 * in NumPy's OpenBLAS, 54-83 in this kernel and 67-85 in oneMKL; float32
 * at 73-147, 108-162 and 121-173 (docs/speed-history.md).
 *
 * Structure (the usual one, after BLIS): K is cut into blocks of FC_GEMM_KC,
 * M into blocks of FC_GEMM_MC.  A block of op(A) is packed into panels of
 * FC_GEMM_MR = 8 rows stored k-major; each panel of op(B), three vectors
 * wide (24 doubles, 48 floats), is packed just before use (k-major,
 * zero-padded), so it sits in L1 while every A panel of the block passes
 * over it (narrow products of several M blocks pack all of B's K block
 * once instead: FC_GEMM_B_PANELS).  Packing B panel by panel also avoids what reading it in place
 * met where its rows lie 9 KiB apart (probably L1 set conflicts).  The
 * micro-kernel keeps an 8-row tile of C in 24 zmm registers; per k it
 * loads three vectors of B and broadcasts eight values of A (24 FMAs).  Narrow edge panels get a tile of 2 or 1 vectors, and
 * only the stores of a ragged panel's last vector are masked: masked loads
 * in the inner loop cost a third of the speed.  The code for both types is
 * _gemm_avx512_body.h, included twice below.
 *
 * The sums run over k in order, blocks of FC_GEMM_KC added to C in order, so
 * a product's result depends only on its operands and shape -- never on the
 * thread that computes it.  beta == 0 never reads C (BLAS semantics);
 * alpha == 0 still reads A and B (an Inf there gives NaN, where the
 * reference BLAS would skip them: the kernels always pass alpha = 1).
 *
 * Workspace: one buffer per thread (FC_GEMM_WORK_BYTES), from a pthread key
 * whose destructor frees it when the thread ends.  The entry points return
 * -1, having written nothing, when that buffer cannot be had or the
 * compiler cannot target AVX-512 (then the caller uses BLAS); the caller
 * checks the CPU once, with fc_gemm_avx512_cpu().
 */
#ifndef FASTCONV_GEMM_AVX512_H
#define FASTCONV_GEMM_AVX512_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(_WIN32)
#define FC_GEMM_HAVE_AVX512 1
#include <immintrin.h>
#include "_transpose8x8.h"
#include <pthread.h>
#else
#define FC_GEMM_HAVE_AVX512 0
#endif

#define FC_GEMM_MR 8
#ifndef FC_GEMM_KC
#define FC_GEMM_KC 128
#endif
#ifndef FC_GEMM_MC
#define FC_GEMM_MC 256
#endif
#if FC_GEMM_MC % FC_GEMM_MR != 0
#error "FC_GEMM_MC must be a multiple of FC_GEMM_MR (the packed A panels fill whole rows of 8)"
#endif
/* Products of more than FC_GEMM_MC rows and at most FC_GEMM_B_PANELS
   panels of columns pack each K block of op(B) once, for all the M blocks,
   instead of panel by panel for each (the filter gradients' transposed
   products, 800 x 64 for a 5x5 layer of 32 channels, packed it 4 times). */
#define FC_GEMM_B_PANELS 4
/* sized for doubles (floats use half the A block and the same bytes of B
   panel, 48 x 4 = 24 x 8), plus the alignment slack */
#define FC_GEMM_WORK_BYTES \
    (sizeof(double) * (FC_GEMM_MC * FC_GEMM_KC + FC_GEMM_KC * 24 * FC_GEMM_B_PANELS) + 64)

#if FC_GEMM_HAVE_AVX512

typedef ptrdiff_t fc_gsize;

#define FC_TGT __attribute__((target("avx512f")))

static pthread_key_t fc_gemm_key;
static int fc_gemm_key_ok = 0;
static pthread_once_t fc_gemm_once = PTHREAD_ONCE_INIT;

static void fc_gemm_make_key(void)
{
    fc_gemm_key_ok = pthread_key_create(&fc_gemm_key, free) == 0;
}

/* This thread's workspace, 64-byte aligned; NULL if none can be had. */
static void* fc_gemm_workspace(void)
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
    return (void*)(((size_t)raw + 63) & ~(size_t)63);
}

static int fc_gemm_avx512_cpu(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* dst[j * dst_stride + i] = src[i * ld + j] for an 8 x 8 block of doubles */
FC_TGT __attribute__((always_inline))
static inline void fc_gemm_tr8x8_d(const double* src, fc_gsize ld, double* dst,
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

/* the same for floats, in 256-bit registers (_transpose8x8.h) */
#define fc_gemm_tr8x8_s fc_tr8x8_avx_f32

#define FC_T double
#define FC_SFX(x) x##_d
#define FC_V __m512d
#define FC_L 8
#define FC_MASK __mmask8
#define FC_OP(x) _mm512_##x##_pd
#define FC_TR8X8 fc_gemm_tr8x8_d
#define FC_PF_AHEAD 32
#include "_gemm_avx512_body.h"
#undef FC_T
#undef FC_SFX
#undef FC_V
#undef FC_L
#undef FC_MASK
#undef FC_OP
#undef FC_TR8X8
#undef FC_PF_AHEAD

#define FC_T float
#define FC_SFX(x) x##_s
#define FC_V __m512
#define FC_L 16
#define FC_MASK __mmask16
#define FC_OP(x) _mm512_##x##_ps
#define FC_TR8X8 fc_gemm_tr8x8_s
#define FC_PF_AHEAD 0
#include "_gemm_avx512_body.h"
#undef FC_T
#undef FC_SFX
#undef FC_V
#undef FC_L
#undef FC_MASK
#undef FC_OP
#undef FC_TR8X8
#undef FC_PF_AHEAD

#else  /* no AVX-512 target: the caller always uses BLAS */

static int fc_gemm_avx512_cpu(void) { return 0; }

#define FC_GEMM_STUB(name, T) \
    static int name(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, \
                    T alpha, const T* A, ptrdiff_t lda, const T* B, ptrdiff_t ldb, \
                    T beta, T* C, ptrdiff_t ldc) \
    { \
        (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)A; \
        (void)lda; (void)B; (void)ldb; (void)beta; (void)C; (void)ldc; \
        return -1; \
    }
FC_GEMM_STUB(fc_gemm_avx512_d, double)
FC_GEMM_STUB(fc_gemm_avx512_s, float)

#endif
#endif
