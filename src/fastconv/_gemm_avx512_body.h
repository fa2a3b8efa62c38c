/*
 * The body of _gemm_avx512.h, included there once per element type with
 * these macros set (no include guard, on purpose):
 *   FC_T        double | float
 *   FC_SFX(x)   x##_d  | x##_s         (function names)
 *   FC_V        __m512d | __m512       (one vector, FC_L lanes)
 *   FC_L        8 | 16
 *   FC_MASK     __mmask8 | __mmask16
 *   FC_OP(x)    _mm512_##x##_pd | _mm512_##x##_ps
 *   FC_TR8X8    the 8 x 8 transpose of this type
 *   FC_PF_AHEAD elements of packed A to prefetch ahead of the micro-kernel
 *               (0: none)
 * A tile is FC_GEMM_MR = 8 rows by 3 vectors (FC_NR = 24 doubles or 48
 * floats); narrower panels take 2 or 1 vectors.
 */

#define FC_NR (3 * FC_L)

/* one k step of row r of the tile */
#define FC_GEMM_ROW(r) \
    a = FC_OP(set1)(ap[r]); \
    c##r##0 = FC_OP(fmadd)(a, b0, c##r##0); \
    if (nv > 1) c##r##1 = FC_OP(fmadd)(a, b1, c##r##1); \
    if (nv > 2) c##r##2 = FC_OP(fmadd)(a, b2, c##r##2);
#define FC_GEMM_ZERO(r) \
    FC_V c##r##0 = FC_OP(setzero)(), c##r##1 = FC_OP(setzero)(), c##r##2 = FC_OP(setzero)();
#define FC_GEMM_OUT(cr, mk, acc) \
    if (beta == 0) \
        FC_OP(mask_storeu)(cr, mk, FC_OP(mul)(va, acc)); \
    else \
        FC_OP(mask_storeu)(cr, mk, FC_OP(fmadd)(vb, FC_OP(maskz_loadu)(mk, cr), \
                                                 FC_OP(mul)(va, acc)));
#define FC_GEMM_STORE(r) \
    if (r < mr) { \
        FC_T* cr = c + (r) * ldc; \
        FC_GEMM_OUT(cr, m0, c##r##0) \
        if (nv > 1) { FC_GEMM_OUT(cr + FC_L, m1, c##r##1) } \
        if (nv > 2) { FC_GEMM_OUT(cr + 2 * FC_L, m2, c##r##2) } \
    }

/* C[0:mr, 0:nr] = alpha * sum_p ap[p][0:8] (x) bp[p][0:nr] + beta * C, with
   nv = ceil(nr / FC_L) vectors per row, the last one's store masked when
   `tail` (the packed panel is zero-padded, so the loads need no mask). */
FC_TGT __attribute__((always_inline))
static inline void FC_SFX(fc_gemm_micro)(const int nv, const int tail, fc_gsize kc,
                                         const FC_T* ap, const FC_T* bp, fc_gsize nr,
                                         FC_T* c, fc_gsize ldc, fc_gsize mr,
                                         FC_T alpha, FC_T beta)
{
    FC_MASK ml = tail ? (FC_MASK)((1u << (nr - FC_L * (nv - 1))) - 1) : (FC_MASK)~0u;
    FC_MASK m0 = nv == 1 ? ml : (FC_MASK)~0u, m1 = nv == 2 ? ml : (FC_MASK)~0u, m2 = ml;
    FC_GEMM_ZERO(0) FC_GEMM_ZERO(1) FC_GEMM_ZERO(2) FC_GEMM_ZERO(3)
    FC_GEMM_ZERO(4) FC_GEMM_ZERO(5) FC_GEMM_ZERO(6) FC_GEMM_ZERO(7)
    FC_V a, b0, b1 = FC_OP(setzero)(), b2 = FC_OP(setzero)();
    const FC_T* b = bp;
    for (fc_gsize p = 0; p < kc; p++) {
        /* the A panel streams from L2, one line per k step in float64:
           asking 4 steps ahead measured ~5 % faster there (res_s2, pw1x1,
           Winograd products vs torch.mm, 3 alternating processes); float32
           (half a line per step) ran 3-5 % slower with it, so it has none.
           A prefetch past the workspace's end is harmless (never faults). */
        if (FC_PF_AHEAD)
            _mm_prefetch((const char*)(ap + FC_PF_AHEAD), _MM_HINT_T0);
        b0 = FC_OP(loadu)(b);
        if (nv > 1) b1 = FC_OP(loadu)(b + FC_L);
        if (nv > 2) b2 = FC_OP(loadu)(b + 2 * FC_L);
        FC_GEMM_ROW(0) FC_GEMM_ROW(1) FC_GEMM_ROW(2) FC_GEMM_ROW(3)
        FC_GEMM_ROW(4) FC_GEMM_ROW(5) FC_GEMM_ROW(6) FC_GEMM_ROW(7)
        ap += FC_GEMM_MR;
        b += FC_NR;
    }
    FC_V va = FC_OP(set1)(alpha), vb = FC_OP(set1)(beta);
    FC_GEMM_STORE(0) FC_GEMM_STORE(1) FC_GEMM_STORE(2) FC_GEMM_STORE(3)
    FC_GEMM_STORE(4) FC_GEMM_STORE(5) FC_GEMM_STORE(6) FC_GEMM_STORE(7)
}

#undef FC_GEMM_ROW
#undef FC_GEMM_ZERO
#undef FC_GEMM_OUT
#undef FC_GEMM_STORE

typedef void (*FC_SFX(fc_gemm_micro_fn))(fc_gsize, const FC_T*, const FC_T*, fc_gsize,
                                         FC_T*, fc_gsize, fc_gsize, FC_T, FC_T);
#define FC_GEMM_MICRO(name, nv, tail) \
    FC_TGT __attribute__((noinline)) \
    static void FC_SFX(name)(fc_gsize kc, const FC_T* ap, const FC_T* bp, fc_gsize nr, \
                             FC_T* c, fc_gsize ldc, fc_gsize mr, FC_T alpha, FC_T beta) \
    { FC_SFX(fc_gemm_micro)(nv, tail, kc, ap, bp, nr, c, ldc, mr, alpha, beta); }
FC_GEMM_MICRO(fc_gemm_micro_3, 3, 0)
FC_GEMM_MICRO(fc_gemm_micro_3t, 3, 1)
FC_GEMM_MICRO(fc_gemm_micro_2, 2, 0)
FC_GEMM_MICRO(fc_gemm_micro_2t, 2, 1)
FC_GEMM_MICRO(fc_gemm_micro_1, 1, 0)
FC_GEMM_MICRO(fc_gemm_micro_1t, 1, 1)
#undef FC_GEMM_MICRO

static FC_SFX(fc_gemm_micro_fn) FC_SFX(fc_gemm_micro_for)(fc_gsize nr)
{
    if (nr > 2 * FC_L) return nr == 3 * FC_L ? FC_SFX(fc_gemm_micro_3) : FC_SFX(fc_gemm_micro_3t);
    if (nr > FC_L) return nr == 2 * FC_L ? FC_SFX(fc_gemm_micro_2) : FC_SFX(fc_gemm_micro_2t);
    return nr == FC_L ? FC_SFX(fc_gemm_micro_1) : FC_SFX(fc_gemm_micro_1t);
}

/* Rows [i0, i0 + mc) x columns [p0, p0 + kc) of op(A) into 8-row panels,
   ap[panel][p][r], rows past mc zero. */
FC_TGT
static void FC_SFX(fc_gemm_pack_a)(int trans, const FC_T* A, fc_gsize lda, fc_gsize i0,
                                   fc_gsize mc, fc_gsize p0, fc_gsize kc, FC_T* ap)
{
    for (fc_gsize ir = 0; ir < mc; ir += FC_GEMM_MR) {
        fc_gsize mr = mc - ir < FC_GEMM_MR ? mc - ir : FC_GEMM_MR;
        fc_gsize p = 0;
        if (mr == FC_GEMM_MR) {
            if (trans) {        /* op(A) = A^T: eight consecutive elements per p */
                for (; p < kc; p++)
                    memcpy(ap + p * FC_GEMM_MR, A + (p0 + p) * lda + i0 + ir,
                           FC_GEMM_MR * sizeof(FC_T));
            } else {
                for (; p + 8 <= kc; p += 8)
                    FC_TR8X8(A + (i0 + ir) * lda + p0 + p, lda, ap + p * FC_GEMM_MR,
                             FC_GEMM_MR);
            }
        }
        for (; p < kc; p++) {
            for (fc_gsize r = 0; r < mr; r++) {
                fc_gsize i = i0 + ir + r, q = p0 + p;
                ap[p * FC_GEMM_MR + r] = trans ? A[q * lda + i] : A[i * lda + q];
            }
            for (fc_gsize r = mr; r < FC_GEMM_MR; r++)
                ap[p * FC_GEMM_MR + r] = 0;
        }
        ap += FC_GEMM_MR * kc;
    }
}

/* Rows [p0, p0 + kc) x columns [j0, j0 + nr) of op(B), nr <= FC_NR, into one
   panel bp[p][j], columns past nr zero. */
FC_TGT
static void FC_SFX(fc_gemm_pack_b)(int trans, const FC_T* B, fc_gsize ldb, fc_gsize p0,
                                   fc_gsize kc, fc_gsize j0, fc_gsize nr, FC_T* bp)
{
    fc_gsize p = 0;
    if (nr == FC_NR) {
        if (!trans) {
            for (; p < kc; p++) {
                const FC_T* s = B + (p0 + p) * ldb + j0;
                FC_OP(storeu)(bp + p * FC_NR, FC_OP(loadu)(s));
                FC_OP(storeu)(bp + p * FC_NR + FC_L, FC_OP(loadu)(s + FC_L));
                FC_OP(storeu)(bp + p * FC_NR + 2 * FC_L, FC_OP(loadu)(s + 2 * FC_L));
            }
        } else {            /* op(B) = B^T: 8 x 8 transposes */
            for (; p + 8 <= kc; p += 8)
                for (fc_gsize j = 0; j < FC_NR; j += 8)
                    FC_TR8X8(B + (j0 + j) * ldb + p0 + p, ldb, bp + p * FC_NR + j, FC_NR);
        }
    }
    for (; p < kc; p++) {
        for (fc_gsize j = 0; j < nr; j++) {
            fc_gsize q = p0 + p, col = j0 + j;
            bp[p * FC_NR + j] = trans ? B[col * ldb + q] : B[q * ldb + col];
        }
        for (fc_gsize j = nr; j < FC_NR; j++)
            bp[p * FC_NR + j] = 0;
    }
}

/* The product, or -1 (nothing written) without a workspace. */
static int FC_SFX(fc_gemm_avx512)(int trans_a, int trans_b, fc_gsize m, fc_gsize n,
                                  fc_gsize k, FC_T alpha, const FC_T* A, fc_gsize lda,
                                  const FC_T* B, fc_gsize ldb, FC_T beta,
                                  FC_T* C, fc_gsize ldc)
{
    FC_T* work = (FC_T*)fc_gemm_workspace();
    FC_T *ap, *bp;
    if (work == NULL)
        return -1;
    /* op(B)'s K block packed once for all M blocks (FC_GEMM_B_PANELS) */
    int b_once = m > FC_GEMM_MC && n <= FC_GEMM_B_PANELS * FC_NR;
    ap = work;
    bp = work + FC_GEMM_MC * FC_GEMM_KC;
    for (fc_gsize p0 = 0; p0 < k; p0 += FC_GEMM_KC) {
        fc_gsize kc = k - p0 < FC_GEMM_KC ? k - p0 : FC_GEMM_KC;
        FC_T blk_beta = p0 == 0 ? beta : 1;    /* later K blocks add to C */
        for (fc_gsize j0 = 0; b_once && j0 < n; j0 += FC_NR)
            FC_SFX(fc_gemm_pack_b)(trans_b, B, ldb, p0, kc, j0, n - j0 < FC_NR ? n - j0 : FC_NR,
                                   bp + j0 * kc);
        for (fc_gsize i0 = 0; i0 < m; i0 += FC_GEMM_MC) {
            fc_gsize mc = m - i0 < FC_GEMM_MC ? m - i0 : FC_GEMM_MC;
            FC_SFX(fc_gemm_pack_a)(trans_a, A, lda, i0, mc, p0, kc, ap);
            for (fc_gsize j0 = 0; j0 < n; j0 += FC_NR) {
                fc_gsize nr = n - j0 < FC_NR ? n - j0 : FC_NR;
                FC_SFX(fc_gemm_micro_fn) micro = FC_SFX(fc_gemm_micro_for)(nr);
                FC_T* panel = b_once ? bp + j0 * kc : bp;
                if (!b_once)
                    FC_SFX(fc_gemm_pack_b)(trans_b, B, ldb, p0, kc, j0, nr, bp);
                for (fc_gsize ir = 0; ir < mc; ir += FC_GEMM_MR) {
                    fc_gsize mr = mc - ir < FC_GEMM_MR ? mc - ir : FC_GEMM_MR;
                    micro(kc, ap + ir * kc, panel, nr, C + (i0 + ir) * ldc + j0, ldc, mr,
                          alpha, blk_beta);
                }
            }
        }
    }
    return 0;
}

#undef FC_NR
