# Winograd's minimal filtering for 3x3, stride-1, undilated, ungrouped
# convolutions (NCHW; NHWC at the end), included by _kernels.pyx: F(2x2, 3x3) for the forward and
# for the input gradient (the full correlation of the padded sensitivity
# map with the rotated, swapped filters), F(3x3, 2x2) for the filter
# gradient (at the end of this file).
#
# Each 2x2 block of outputs (a "tile") is read from the 4x4 input patch d
# that covers its four 3x3 windows:  y = A^T [ (G g G^T) . (B^T d B) ] A
# (Lavin & Gray, 2016), where g is one 3x3 filter and . multiplies the
# sixteen transformed entries elementwise.  Summed over the input channels,
# each of the sixteen entries xi is one GEMM
#     M[xi] (C_out x tiles) = U[xi] (C_out x C_in) @ V[xi] (C_in x tiles),
# 16 * C_out * C_in multiply-adds per tile against the textbook's
# 36 * C_out * C_in: 2.25x fewer.  U (the transformed filters,
# winograd_filters) is computed once per call; B^T d B and A^T M A are
# additions and subtractions only (_winograd.h).
#
# Work items are blocks of ``block_tiles`` consecutive tiles of the batch
# (image after image, so small planes' tiles share a block), so the
# workspace is threads x block, whatever the batch size, and the blocks
# (and every bit of the result) do not depend on the thread count.
#
# The transforms mix neighbouring inputs, so an infinite or NaN input (or a
# transform that overflows) can leave NaN where the textbook sum gives an
# infinity.  Every tile's outputs are checked as they are written; if any is
# not finite the entry point returns False and the Python layer recomputes
# the call with the GEMM kernels (the textbook's infinities and NaNs).


cdef extern from "_winograd.h" nogil:
    # the transforms, vectorized across the tiles (see the header)
    void fc_winograd_in_f32(const float* e, const float* od, Py_ssize_t width, Py_ssize_t n,
                            float* v, Py_ssize_t v_stride)
    void fc_winograd_in_f64(const double* e, const double* od, Py_ssize_t width,
                            Py_ssize_t n, double* v, Py_ssize_t v_stride)
    int fc_winograd_out_f32(const float* m, Py_ssize_t m_stride, Py_ssize_t n, float b,
                            float* row0, float* row1, int odd_last)
    int fc_winograd_out_f64(const double* m, Py_ssize_t m_stride, Py_ssize_t n, double b,
                            double* row0, double* row1, int odd_last)
    void fc_winograd_grad_f32(const float* ge, const float* go, Py_ssize_t n, float* w,
                              Py_ssize_t w_stride)
    void fc_winograd_in_nhwc_f32(const float** d, Py_ssize_t ch, float* v, Py_ssize_t v_stride)
    void fc_winograd_in_nhwc_f64(const double** d, Py_ssize_t ch, double* v,
                                 Py_ssize_t v_stride)
    int fc_winograd_out_nhwc_f32(const float* m, Py_ssize_t m_stride, Py_ssize_t ch,
                                 const float* bias, float* p00, float* p01, float* p10,
                                 float* p11)
    int fc_winograd_out_nhwc_f64(const double* m, Py_ssize_t m_stride, Py_ssize_t ch,
                                 const double* bias, double* p00, double* p01, double* p10,
                                 double* p11)
    void fc_winograd_grad_nhwc_f32(const float* g00, const float* g01, const float* g10,
                                   const float* g11, Py_ssize_t ch, float* w,
                                   Py_ssize_t w_stride)
    void fc_winograd_grad_nhwc_f64(const double* g00, const double* g01, const double* g10,
                                   const double* g11, Py_ssize_t ch, double* w,
                                   Py_ssize_t w_stride)
    void fc_winograd_grad_f64(const double* ge, const double* go, Py_ssize_t n, double* w,
                              Py_ssize_t w_stride)


# The Winograd filter gradients sum M (16 x C_out x C_in) of at least this
# many bytes with all threads on one block of tiles at a time, smaller ones
# in a copy of M per reduction slot (see conv2d_grad_weight_winograd).
# Measured (2 threads, 5 alternating rounds, NCHW / NHWC): M of 4 MiB and
# 8 MiB -- 256 channels, big's 100x100 planes or 2 x 56x56 -- 1.27-1.54x /
# 1.50-1.91x faster shared (the big layer's float64 copies took 59 MiB,
# page-faulted in on every call); M of 1-2 MiB (128 channels) 0.77-0.84x /
# 0.92-0.98x, vgg3x3's 256-512 KiB 0.65-0.70x / 0.90-0.94x (a barrier pair
# per block around GEMMs as small as 64 x 64 x 128).
cdef Py_ssize_t WINOGRAD_SHARED_SUMS_BYTES = 4 * 1024 * 1024


cdef enum:
    # Elements between the sixteen matrices V[xi] (and M[xi], W[xi]) beyond
    # their size: without it a block's sixteen rows of one tile lie a
    # multiple of 4 KiB apart and the transforms' sixteen load or store
    # streams fight over one L1 set.
    WINOGRAD_SKEW = 16


# A batch of fewer tiles than a block is still cut in two items when each
# would keep this many.
cdef Py_ssize_t WINOGRAD_MIN_SPLIT = 32
# From this many items on, blocks stay whole (the last one short): at most
# an eighth of the work is left to one thread, and products kept at
# block_tiles columns keep their GEMM (float64 64 x 64 x 126 fell below the
# own GEMM's size floor and ran 1.2x slower in OpenBLAS).
cdef Py_ssize_t WINOGRAD_WHOLE_BLOCK_ITEMS = 8


cdef Py_ssize_t _winograd_block(Py_ssize_t total, Py_ssize_t block_tiles) noexcept nogil:
    """Tiles per work item: ``block_tiles``, or for batches of fewer than
    WINOGRAD_WHOLE_BLOCK_ITEMS blocks the ``total`` tiles cut into an even
    number of equal items where there are two or more (392 tiles in blocks
    of 128 had been 128, 128, 128, 8: one of two threads did 256 of them).
    A function of the shape only."""
    block_tiles = max(block_tiles, 1)
    cdef Py_ssize_t n_items = _ceil_div(total, block_tiles)
    if n_items >= WINOGRAD_WHOLE_BLOCK_ITEMS:
        return block_tiles
    if n_items % 2 == 1 and (n_items > 1 or total >= 2 * WINOGRAD_MIN_SPLIT):
        n_items += 1
    return max(1, _ceil_div(total, n_items))


cdef void _winograd_input_rows(const floating* plane, Py_ssize_t in_h, Py_ssize_t in_w,
                               Py_ssize_t top, Py_ssize_t col0, Py_ssize_t n,
                               floating* s, floating* v, Py_ssize_t v_stride) noexcept nogil:
    """B^T d B of n tiles side by side in one channel: tile jj's patch is
    rows top..top+3, columns col0 + 2*jj .. col0 + 2*jj + 3 of the plane
    (zero outside it).  Entry xi of tile jj goes to ``v[xi*v_stride + jj]``;
    ``s`` is scratch for 8*(n + 1) values."""
    cdef Py_ssize_t width = n + 1
    cdef floating* e = s                # patch rows' even columns col0 + 2*jj
    cdef floating* od = s + 4 * width   # and odd ones, jj <= n
    cdef const floating* row
    cdef Py_ssize_t k, jj, r, c, lo, hi
    # jj in [lo, hi): both columns col0 + 2*jj and col0 + 2*jj + 1 inside the row
    lo = min((1 - col0) // 2 if col0 < 0 else 0, width)
    hi = max(min((in_w - col0) // 2, width), lo)
    for k in range(4):
        r = top + k
        if r < 0 or r >= in_h:
            memset(e + k * width, 0, width * sizeof(floating))
            memset(od + k * width, 0, width * sizeof(floating))
            continue
        row = plane + r * in_w
        for jj in range(lo, hi):
            e[k * width + jj] = row[col0 + 2 * jj]
            od[k * width + jj] = row[col0 + 2 * jj + 1]
        for jj in range(lo):
            c = col0 + 2 * jj
            e[k * width + jj] = row[c] if 0 <= c < in_w else 0
            od[k * width + jj] = row[c + 1] if 0 <= c + 1 < in_w else 0
        for jj in range(hi, width):
            c = col0 + 2 * jj
            e[k * width + jj] = row[c] if 0 <= c < in_w else 0
            od[k * width + jj] = row[c + 1] if 0 <= c + 1 < in_w else 0
    if floating is float:
        fc_winograd_in_f32(e, od, width, n, v, v_stride)
    else:
        fc_winograd_in_f64(e, od, width, n, v, v_stride)


cdef enum:
    # Filters per chunk of the filter transforms: their sixteen entries are
    # written as sixteen runs, one per U[xi], where one filter at a time
    # scattered its sixteen values C_out*C_in apart (one L1 set, missed on
    # every store: 512 x 512 filters took 13.5 ms, now 1.0 ms on 2 threads).
    WINOGRAD_FILTER_CHUNK = 32
    # rows of strided filters staged at a time (see _winograd_filter_rows)
    WINOGRAD_STAGE_ROWS = 8


cdef void _winograd_filter_chunk(const floating* src, Py_ssize_t j_step, Py_ssize_t tap_step,
                                 bint rotate, Py_ssize_t n, floating* u,
                                 Py_ssize_t us) noexcept nogil:
    """``u[xi*us + j] = (G g_j G^T)[xi]`` for the ``n <= WINOGRAD_FILTER_CHUNK``
    3x3 filters g_j, tap t (row-major) of g_j at ``src + j*j_step +
    t*tap_step`` (taps read back to front if `rotate`), summed in double
    precision and rounded once."""
    cdef double g[9][WINOGRAD_FILTER_CHUNK]     # g[3*row + col][j]
    cdef double t[12][WINOGRAD_FILTER_CHUNK]    # (G g)[a][col] at t[3*a + col][j]
    cdef Py_ssize_t j, r, a
    cdef floating* row
    for r in range(9):
        for j in range(n):
            g[r][j] = src[j * j_step + (8 - r if rotate else r) * tap_step]
    for r in range(3):              # G g: rows of the filter's columns
        for j in range(n):
            t[r][j] = g[r][j]
            t[3 + r][j] = 0.5 * (g[r][j] + g[3 + r][j] + g[6 + r][j])
            t[6 + r][j] = 0.5 * (g[r][j] - g[3 + r][j] + g[6 + r][j])
            t[9 + r][j] = g[6 + r][j]
    for a in range(4):              # then G^T on the right
        row = u + 4 * a * us
        for j in range(n):
            row[j] = <floating>t[3 * a][j]
            row[us + j] = <floating>(0.5 * (t[3 * a][j] + t[3 * a + 1][j] + t[3 * a + 2][j]))
            row[2 * us + j] = <floating>(0.5 * (t[3 * a][j] - t[3 * a + 1][j]
                                                + t[3 * a + 2][j]))
            row[3 * us + j] = <floating>t[3 * a + 2][j]


cdef int _winograd_filter_rows(const floating* w, Py_ssize_t rows, Py_ssize_t cols,
                               Py_ssize_t row_step, Py_ssize_t col_step, Py_ssize_t tap_step,
                               bint rotate, floating* u, int n_threads) noexcept nogil:
    """``u[xi*rows*cols + r*cols + c] = (G g G^T)[xi]`` for the filters
    g(r, c), tap t at ``w[r*row_step + c*col_step + t*tap_step]`` (back to
    front if `rotate`): U's rows in parallel, each in chunks of
    WINOGRAD_FILTER_CHUNK.  Each filter on its own, so the result does not
    depend on `n_threads`.  Returns a status code."""
    cdef Py_ssize_t n_chunks = _ceil_div(cols, WINOGRAD_FILTER_CHUNK), us = rows * cols
    cdef Py_ssize_t item, r, r0, n_rows, c, c0, k, t
    cdef floating* stage = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    if col_step <= 9:       # a row's filters packed together: read in place
        for r in prange(rows, schedule="static", num_threads=n_threads):
            for k in range(n_chunks):
                c0 = k * WINOGRAD_FILTER_CHUNK
                _winograd_filter_chunk(w + r * row_step + c0 * col_step, col_step, tap_step,
                                       rotate, min(WINOGRAD_FILTER_CHUNK, cols - c0),
                                       u + r * cols + c0, us)
        return status
    # A row's filters far apart (the input gradient's swapped ones): read
    # row by row, their lines fell in a few cache sets and missed (512 x 512
    # float64 took 53 ms).  Each item copies the filters of
    # WINOGRAD_STAGE_ROWS rows, contiguous along r, to a per-thread stage,
    # one filter's taps together.
    with parallel(num_threads=n_threads):
        stage = <floating*>_workspace(WINOGRAD_STAGE_ROWS * cols * 9 * sizeof(floating))
        if stage == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for item in prange(_ceil_div(rows, WINOGRAD_STAGE_ROWS), schedule="static"):
            if stage == NULL:
                continue
            r0 = item * WINOGRAD_STAGE_ROWS
            n_rows = min(WINOGRAD_STAGE_ROWS, rows - r0)
            for c in range(cols):
                for t in range(9):
                    for r in range(n_rows):
                        stage[(r * cols + c) * 9 + t] = w[(r0 + r) * row_step + c * col_step
                                                          + t * tap_step]
            for r in range(n_rows):
                for k in range(n_chunks):
                    c0 = k * WINOGRAD_FILTER_CHUNK
                    _winograd_filter_chunk(stage + (r * cols + c0) * 9, 9, 1, rotate,
                                           min(WINOGRAD_FILTER_CHUNK, cols - c0),
                                           u + (r0 + r) * cols + c0, us)
        free(stage)
    return status


def winograd_filters(const floating[:, :, :, ::1] weight, floating[:, :, ::1] u,
                     bint rotate_swap, int n_threads=1):
    """``u[4a + b, o, c] = (G g G^T)[a, b]`` for each 3x3 filter g
    (inputs trusted): g = ``weight[o, c]`` (``u`` is (16, C_out, C_in)), or
    with ``rotate_swap`` the input gradient's ``weight[c, o, ::-1, ::-1]``
    (``u`` is (16, C_in, C_out) of a (C_out, C_in, 3, 3) weight).  Summed
    in double precision and rounded once.  Rows of G: (1, 0, 0),
    (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)."""
    cdef Py_ssize_t rows = u.shape[1], cols = u.shape[2]
    cdef int status
    if rows == 0 or cols == 0:
        return
    with nogil:
        if rotate_swap:     # g(o, c) = weight[c, o]: weight is (cols, rows, 3, 3)
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, 9, 9 * rows, 1,
                                           True, &u[0, 0, 0], n_threads)
        else:
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, 9 * cols, 9, 1,
                                           False, &u[0, 0, 0], n_threads)
    _raise_for_status(status)


def winograd_filters_nhwc(const floating[:, :, :, ::1] weight, floating[:, :, ::1] u,
                          bint rotate_swap, int n_threads=1):
    """:func:`winograd_filters` of a channels-last weight ``(3, 3, C_in,
    C_out)``, in the layout the NHWC kernels take: ``u[xi, i, o]``
    (correlation input channel i, output channel o) is entry xi of g =
    ``weight[:, :, i, o]`` (``u`` is (16, C_in, C_out)), or with
    ``rotate_swap`` of the input gradient's ``weight[::-1, ::-1, o, i]``
    (``u`` is (16, C_out, C_in))."""
    cdef Py_ssize_t rows = u.shape[1], cols = u.shape[2]
    cdef Py_ssize_t tap_step = weight.shape[2] * weight.shape[3]
    cdef int status
    if rows == 0 or cols == 0:
        return
    with nogil:
        if rotate_swap:     # g(i, o) = weight[::-1, ::-1, o, i]: weight is (3, 3, cols, rows)
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, 1, rows, tap_step,
                                           True, &u[0, 0, 0], n_threads)
        else:
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, cols, 1, tap_step,
                                           False, &u[0, 0, 0], n_threads)
    _raise_for_status(status)


cdef void _winograd_inputs(const floating* xp, Py_ssize_t c_in, Py_ssize_t in_h,
                           Py_ssize_t in_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                           Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                           Py_ssize_t g1, floating* v, Py_ssize_t vs,
                           floating* scratch, Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil:
    """V[xi][c][g - g0] at ``v[xi*vs + c*(g1 - g0) + g - g0]`` for the tiles
    g0 <= g < g1 of the whole batch (tile g is tile g % tiles of image
    g // tiles), tile row by tile row, for the channels c_lo <= c < c_hi."""
    cdef Py_ssize_t nt = g1 - g0, c, n, t0, t1, i, j0, j1
    for c in range(c_lo, c_hi):
        for n in range(g0 // tiles, (g1 - 1) // tiles + 1):
            t0 = max(g0 - n * tiles, 0)
            t1 = min(g1 - n * tiles, tiles)
            for i in range(t0 // tiles_w, (t1 - 1) // tiles_w + 1):
                j0 = max(t0 - i * tiles_w, 0)
                j1 = min(t1 - i * tiles_w, tiles_w)
                _winograd_input_rows(xp + (n * c_in + c) * in_h * in_w, in_h, in_w,
                                     2 * i - pad_top, 2 * j0 - pad_left, j1 - j0, scratch,
                                     v + c * nt + n * tiles + i * tiles_w + j0 - g0, vs)


cdef bint _winograd_outputs(const floating* m, Py_ssize_t ms, Py_ssize_t c_out,
                            const floating* bp,
                            floating* yp, Py_ssize_t out_h, Py_ssize_t out_w,
                            Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                            Py_ssize_t g1, floating* spare) noexcept nogil:
    """A^T M A + bias of the tiles g0 <= g < g1 (M[xi][o][g - g0] at
    ``m[xi*ms + o*(g1 - g0) + g - g0]``) into the output planes (``bp``
    NULL: no bias); False if some value was not finite."""
    cdef Py_ssize_t nt = g1 - g0, o, n, t0, t1, i, j0, j1
    cdef floating* row0
    cdef floating* row1
    cdef floating b
    cdef int bad = 0
    for o in range(c_out):
        b = bp[o] if bp != NULL else 0
        for n in range(g0 // tiles, (g1 - 1) // tiles + 1):
            t0 = max(g0 - n * tiles, 0)
            t1 = min(g1 - n * tiles, tiles)
            for i in range(t0 // tiles_w, (t1 - 1) // tiles_w + 1):
                j0 = max(t0 - i * tiles_w, 0)
                j1 = min(t1 - i * tiles_w, tiles_w)
                row0 = yp + ((n * c_out + o) * out_h + 2 * i) * out_w + 2 * j0
                # an odd Ho's last tile row writes its second row to `spare`
                row1 = row0 + out_w if 2 * i + 1 < out_h else spare
                if floating is float:
                    bad |= fc_winograd_out_f32(m + o * nt + n * tiles + i * tiles_w + j0 - g0,
                                               ms, j1 - j0, b, row0, row1,
                                               j1 == tiles_w and out_w % 2 == 1)
                else:
                    bad |= fc_winograd_out_f64(m + o * nt + n * tiles + i * tiles_w + j0 - g0,
                                               ms, j1 - j0, b, row0, row1,
                                               j1 == tiles_w and out_w % 2 == 1)
    return not bad


def conv2d_winograd(const floating[:, :, :, ::1] x,
                    const floating[:, :, ::1] u,
                    const floating[::1] bias,
                    bint has_bias,
                    floating[:, :, :, ::1] out,
                    Py_ssize_t pad_top, Py_ssize_t pad_left,
                    Py_ssize_t block_tiles, int n_threads):
    """3x3 stride-1 correlation ``out = conv2d(x, w) + bias`` by Winograd
    F(2x2, 3x3) (inputs trusted).

    ``u`` is ``(16, C_out, C_in)``, the transformed filters ``G w G^T``
    entry by entry (``winograd_filters``); ``out`` is ``(N, C_out, Ho,
    Wo)``, ``pad_top`` and ``pad_left`` the leading paddings (the trailing
    ones are implied by ``Ho``/``Wo``).  The batch's tiles, image after
    image, are cut into work items of ``block_tiles`` (>= 1): the N of
    their GEMMs, small planes' tiles from several images.  Returns False,
    with ``out`` incomplete, if some output was not finite (the caller then
    takes the GEMM kernels).
    """
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = out.shape[1], out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    if n_img == 0 or c_out == 0 or tiles == 0:
        return True
    cdef Py_ssize_t block = _winograd_block(n_img * tiles, block_tiles)
    cdef Py_ssize_t n_items = _ceil_div(n_img * tiles, block)
    # per thread: V and M of one block, the input rows' scratch, and a
    # spare output row (an odd Ho's missing second row)
    cdef Py_ssize_t scratch_at = 16 * (c_in * block + c_out * block + 2 * WINOGRAD_SKEW)
    cdef Py_ssize_t spare_at = scratch_at + 8 * (tiles_w + 1)
    cdef Py_ssize_t work_size = spare_at + 2 * tiles_w
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* up = &u[0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, g0, g1, nt, xi, vs, ms
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    cdef bint finite = True
    cdef bint* finite_p = &finite

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = <floating*>_workspace(work_size * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work == NULL:
                    continue
                g0 = item * block
                g1 = min(g0 + block, n_img * tiles)
                nt = g1 - g0
                # V (16 x C_in x nt) at work, M (16 x C_out x nt) after it
                vs = c_in * nt + WINOGRAD_SKEW
                ms = c_out * nt + WINOGRAD_SKEW
                _winograd_inputs(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                 g0, g1, work, vs, work + scratch_at, 0, c_in)
                for xi in range(16):
                    gemm(NO_TRANS, NO_TRANS, c_out, nt, c_in,
                         <floating>1, up + xi * c_out * c_in, c_in, work + xi * vs, nt,
                         <floating>0, work + 16 * vs + xi * ms, nt)
                if not _winograd_outputs(work + 16 * vs, ms, c_out, bp, yp, out_h, out_w,
                                         tiles_w, tiles, g0, g1, work + spare_at):
                    finite_p[0] = False
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return finite


# --- the filter gradient: F(3x3, 2x2) ------------------------------------------
#
# dW[o, c] = sum over tiles of the correlation of the tile's 4x4 input patch
# d with its 2x2 block g of the sensitivity map.  The forward's identity,
# transposed (sum_rs g_rs y_rs for every filter w), gives each tile's part
# as G^T [ (A g A^T) . (B^T d B) ] G: the same B^T d B as the forward, the
# sensitivity blocks through A, and one G^T M G per filter at the end, after
# the sixteen GEMMs  M[xi] (C_out x C_in) += W[xi] (C_out x tiles) @
# V[xi]^T  have summed all tiles.  As conv2d_grad_weight, the work items go
# to a number of reduction slots fixed by the shape, each summed in order,
# and the slots are added in order: the same bits for any thread count.


cdef void _winograd_grad_blocks(const floating* gp, Py_ssize_t c_out, Py_ssize_t out_h,
                                Py_ssize_t out_w, Py_ssize_t tiles_w, Py_ssize_t tiles,
                                Py_ssize_t g0, Py_ssize_t g1, floating* w, Py_ssize_t ws,
                                floating* scratch, Py_ssize_t o_lo,
                                Py_ssize_t o_hi) noexcept nogil:
    """W[xi][o][g - g0] = (A g A^T)[xi], at ``w[xi*ws + o*(g1 - g0) + g - g0]``,
    for the 2x2 sensitivity blocks of the tiles g0 <= g < g1 (zero past the
    map's last row or column), for the channels o_lo <= o < o_hi."""
    cdef Py_ssize_t nt = g1 - g0, o, n, t0, t1, i, j0, j1, r, jj, cnt, pairs
    cdef const floating* src
    cdef floating* ge
    cdef floating* go
    for o in range(o_lo, o_hi):
        for n in range(g0 // tiles, (g1 - 1) // tiles + 1):
            t0 = max(g0 - n * tiles, 0)
            t1 = min(g1 - n * tiles, tiles)
            for i in range(t0 // tiles_w, (t1 - 1) // tiles_w + 1):
                j0 = max(t0 - i * tiles_w, 0)
                j1 = min(t1 - i * tiles_w, tiles_w)
                cnt = j1 - j0
                # blocks whose odd column lies inside the map
                pairs = min(cnt, out_w // 2 - j0)
                ge = scratch
                go = scratch + 2 * cnt
                for r in range(2):
                    if 2 * i + r >= out_h:
                        memset(ge + r * cnt, 0, cnt * sizeof(floating))
                        memset(go + r * cnt, 0, cnt * sizeof(floating))
                        continue
                    src = gp + ((n * c_out + o) * out_h + 2 * i + r) * out_w + 2 * j0
                    for jj in range(pairs):
                        ge[r * cnt + jj] = src[2 * jj]
                        go[r * cnt + jj] = src[2 * jj + 1]
                    for jj in range(pairs, cnt):
                        ge[r * cnt + jj] = src[2 * jj]
                        go[r * cnt + jj] = 0
                if floating is float:
                    fc_winograd_grad_f32(ge, go, cnt, w + o * nt + n * tiles + i * tiles_w + j0 - g0,
                                         ws)
                else:
                    fc_winograd_grad_f64(ge, go, cnt, w + o * nt + n * tiles + i * tiles_w + j0 - g0,
                                         ws)


cdef bint _winograd_filter_grad_chunk(const floating* m, Py_ssize_t size, Py_ssize_t n,
                                     floating* dw) noexcept nogil:
    """``dw[9*j .. 9*j + 8] = G^T M[:, j] G`` for the ``n <=
    WINOGRAD_FILTER_CHUNK`` filters j whose sixteen entries lie at
    ``m[a*size + j]``; False if some value is not finite.  Rows of G^T:
    (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1)."""
    cdef floating q[16][WINOGRAD_FILTER_CHUNK]
    cdef floating t[4][3]
    cdef floating z = 0
    cdef Py_ssize_t j, a
    for a in range(16):             # sixteen runs, not sixteen strided values per filter
        memcpy(&q[a][0], m + a * size, n * sizeof(floating))
    for j in range(n):
        for a in range(4):          # M G: each row's three columns
            t[a][0] = q[4 * a][j] + <floating>0.5 * (q[4 * a + 1][j] + q[4 * a + 2][j])
            t[a][1] = <floating>0.5 * (q[4 * a + 1][j] - q[4 * a + 2][j])
            t[a][2] = <floating>0.5 * (q[4 * a + 1][j] + q[4 * a + 2][j]) + q[4 * a + 3][j]
        for a in range(3):          # then G^T on the left
            dw[j * 9 + a] = t[0][a] + <floating>0.5 * (t[1][a] + t[2][a])
            dw[j * 9 + 3 + a] = <floating>0.5 * (t[1][a] - t[2][a])
            dw[j * 9 + 6 + a] = <floating>0.5 * (t[1][a] + t[2][a]) + t[3][a]
        for a in range(9):
            z = z + (dw[j * 9 + a] - dw[j * 9 + a])
    return z == 0


cdef bint _winograd_filter_grads(const floating* m, Py_ssize_t c_out, Py_ssize_t c_in,
                                 floating* dw, int n_threads) noexcept nogil:
    """``dw[o, c] = G^T M[:, o, c] G`` (3x3 from the 4x4 entries) for every
    filter, in chunks over `n_threads`; False if some value is not finite."""
    cdef Py_ssize_t size = c_out * c_in, item, k0
    cdef bint finite = True
    cdef bint* finite_p = &finite
    for item in prange(_ceil_div(size, WINOGRAD_FILTER_CHUNK), schedule="static",
                       num_threads=n_threads):
        k0 = item * WINOGRAD_FILTER_CHUNK
        if not _winograd_filter_grad_chunk(m + k0, size, min(WINOGRAD_FILTER_CHUNK, size - k0),
                                           dw + 9 * k0):
            finite_p[0] = False
    return finite


cdef inline bint _winograd_shared_sums(Py_ssize_t n_slots, Py_ssize_t m_bytes) noexcept nogil:
    """Whether a Winograd filter gradient sums into one shared M (all
    threads on a block at a time) rather than into ``n_slots`` copies: for
    an M of WINOGRAD_SHARED_SUMS_BYTES or more, and where the blocks make
    one slot only, which would leave all but one thread idle."""
    return n_slots == 1 or m_bytes >= WINOGRAD_SHARED_SUMS_BYTES


def conv2d_grad_weight_winograd(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_out,
                                floating[:, :, :, ::1] grad_weight,
                                Py_ssize_t pad_top, Py_ssize_t pad_left,
                                Py_ssize_t block_tiles, int n_threads):
    """Filter gradient of a 3x3 stride-1 correlation by Winograd F(3x3, 2x2)
    (inputs trusted): ``grad_weight`` (C_out, C_in, 3, 3) of ``x`` (N, C_in,
    H, W) and ``grad_out`` (N, C_out, Ho, Wo), leading paddings given.
    Returns False, with ``grad_weight`` incomplete, if some value was not
    finite.

    The batch's tiles are taken about ``block_tiles`` at a time
    (``_winograd_block``).  Sums M of fewer than WINOGRAD_SHARED_SUMS_BYTES,
    with blocks for two reduction slots or more: each work item (a slot of
    blocks) transforms its blocks and sums ``W[xi] V[xi]^T`` into its own
    copy of M, and the copies are added in order.  Larger M, or blocks for
    one slot only (which had left all but one thread idle): all threads
    work on one block at a time -- its transforms, a channel each, then the
    sixteen ``M[xi] += W[xi] V[xi]^T``, an ``xi`` each -- straight into the
    one M.  Either way every sum runs in an order fixed by the shape, so
    the result is the same bit for bit for any thread count.
    """
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = grad_out.shape[1], out_h = grad_out.shape[2]
    cdef Py_ssize_t out_w = grad_out.shape[3]
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    if grad_weight.size == 0:       # no channels: nothing to sum (and no element 0)
        return True
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    if n_img == 0 or tiles == 0:
        memset(dwp, 0, grad_weight.size * sizeof(floating))
        return True
    cdef Py_ssize_t block = _winograd_block(n_img * tiles, block_tiles)
    cdef Py_ssize_t n_red = _ceil_div(n_img * tiles, block)
    cdef Py_ssize_t m_size = 16 * c_out * c_in
    cdef Py_ssize_t n_slots = _reduction_slots(n_red, m_size, sizeof(floating))
    cdef bint shared_sums = _winograd_shared_sums(n_slots, m_size * sizeof(floating))
    # per block: V (16 x C_in x nt), then W (16 x C_out x nt)
    cdef Py_ssize_t vw_size = 16 * (c_in * block + c_out * block + 2 * WINOGRAD_SKEW)
    # the shared variant's V and W follow M; the slots' are per thread
    cdef Py_ssize_t v_at = m_size
    cdef Py_ssize_t scratch_size = 8 * (tiles_w + 1)
    cdef Py_ssize_t work_size = scratch_size + (0 if shared_sums else vw_size)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef Py_ssize_t s, r, r0, g0, g1, nt, xi, vs, ws, ch
    cdef floating* acc = NULL
    cdef floating* work = NULL
    # (set here, though each thread sets its own: the parallel blocks copy
    # them in, and GCC would warn of the copy)
    cdef floating* v = NULL
    cdef floating* w = NULL
    cdef floating* partial = <floating*>_workspace(
        (m_size + vw_size if shared_sums else n_slots * m_size) * sizeof(floating))
    cdef int status = STATUS_OK if partial != NULL else STATUS_NO_MEMORY
    cdef int* status_p = &status
    cdef bint finite = True

    blas_serial_enter()
    try:
        if partial != NULL and shared_sums:
            v = partial + v_at
            with nogil, parallel(num_threads=n_threads):
                # per thread: the rows' scratch of the input transforms
                work = <floating*>_workspace(work_size * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
                for r in range(n_red):              # every thread, in step
                    g0 = r * block
                    g1 = min(g0 + block, n_img * tiles)
                    nt = g1 - g0
                    vs = c_in * nt + WINOGRAD_SKEW
                    ws = c_out * nt + WINOGRAD_SKEW
                    w = v + 16 * vs
                    # round-robin: each thread gets input and gradient channels
                    for ch in prange(c_in + c_out, schedule="static", chunksize=1):
                        if work == NULL:
                            continue
                        if ch < c_in:
                            _winograd_inputs(xp, c_in, in_h, in_w, pad_top, pad_left,
                                             tiles_w, tiles, g0, g1, v, vs, work, ch, ch + 1)
                        else:
                            _winograd_grad_blocks(gp, c_out, out_h, out_w, tiles_w, tiles,
                                                  g0, g1, w, ws, work, ch - c_in, ch - c_in + 1)
                    fc_omp_barrier()                # the transforms are all in
                    # the first block overwrites (no clearing pass)
                    for xi in prange(16, schedule="static"):
                        gemm(NO_TRANS, TRANS, c_out, c_in, nt, <floating>1,
                             w + xi * ws, nt, v + xi * vs, nt,
                             <floating>(0 if r == 0 else 1), partial + xi * c_out * c_in, c_in)
                    fc_omp_barrier()                # before the next block's transforms
                free(work)
        elif partial != NULL:
            with nogil, parallel(num_threads=n_threads):
                # per thread: V and W of one block, then the rows' scratch
                work = <floating*>_workspace(work_size * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
                for s in prange(n_slots, schedule="static"):
                    if work == NULL:
                        continue
                    acc = partial + s * m_size
                    r0 = s * n_red // n_slots
                    for r in range(r0, (s + 1) * n_red // n_slots):
                        g0 = r * block
                        g1 = min(g0 + block, n_img * tiles)
                        nt = g1 - g0
                        vs = c_in * nt + WINOGRAD_SKEW
                        ws = c_out * nt + WINOGRAD_SKEW
                        _winograd_inputs(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w,
                                         tiles, g0, g1, work, vs, work + vw_size, 0, c_in)
                        _winograd_grad_blocks(gp, c_out, out_h, out_w, tiles_w, tiles, g0, g1,
                                              work + 16 * vs, ws, work + vw_size, 0, c_out)
                        # the slot's first block overwrites (no clearing pass)
                        for xi in range(16):
                            gemm(NO_TRANS, TRANS, c_out, c_in, nt, <floating>1,
                                 work + 16 * vs + xi * ws, nt, work + xi * vs, nt,
                                 <floating>(0 if r == r0 else 1), acc + xi * c_out * c_in, c_in)
                free(work)
            if status == STATUS_OK:
                with nogil:
                    _add_slots(partial, n_slots, m_size, partial, n_threads)
        if status == STATUS_OK:
            with nogil:
                finite = _winograd_filter_grads(partial, c_out, c_in, dwp, n_threads)
    finally:
        blas_serial_exit()
        free(partial)
    _raise_for_status(status)
    return finite


# --- channels last (NHWC) -----------------------------------------------------
#
# The same three kernels with the channels innermost: a tile's transforms
# run along the channel vectors of its pixels (_winograd.h), and the GEMMs
# take the transposed orientation, M[xi]^T (tiles x C_out) = V[xi]^T (tiles
# x C_in) @ U[xi] (C_in x C_out), and M[xi] (C_in x C_out) += V[xi] W[xi]^T
# for the filter gradient.


cdef void _winograd_inputs_nhwc(const floating* xp, Py_ssize_t c_in, Py_ssize_t in_h,
                                Py_ssize_t in_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                                Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                                Py_ssize_t g1, floating* v, Py_ssize_t vs,
                                const floating* zeros) noexcept nogil:
    """V[xi][g - g0][c] at ``v[xi*vs + (g - g0)*c_in + c]`` for the tiles
    g0 <= g < g1 of the batch; pixels outside the image read ``zeros``."""
    cdef const floating* d[16]
    cdef Py_ssize_t g, n, t, i, j, r, q, row, col
    for g in range(g0, g1):
        n = g // tiles
        t = g % tiles
        i = t // tiles_w
        j = t % tiles_w
        for r in range(4):
            row = 2 * i - pad_top + r
            for q in range(4):
                col = 2 * j - pad_left + q
                if 0 <= row < in_h and 0 <= col < in_w:
                    d[4 * r + q] = xp + ((n * in_h + row) * in_w + col) * c_in
                else:
                    d[4 * r + q] = zeros
        if floating is float:
            fc_winograd_in_nhwc_f32(d, c_in, v + (g - g0) * c_in, vs)
        else:
            fc_winograd_in_nhwc_f64(d, c_in, v + (g - g0) * c_in, vs)


def conv2d_winograd_nhwc(const floating[:, :, :, ::1] x,
                         const floating[:, :, ::1] u,
                         const floating[::1] bias,
                         floating[:, :, :, ::1] out,
                         Py_ssize_t pad_top, Py_ssize_t pad_left,
                         Py_ssize_t block_tiles, int n_threads):
    """``conv2d_winograd`` in NHWC (inputs trusted): ``x`` (N, H, W, C_in),
    ``u`` (16, C_in, C_out), ``bias`` (C_out,) (zeros for none), ``out``
    (N, Ho, Wo, C_out).  Returns False, with ``out`` incomplete, if some
    output was not finite."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t c_in = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2], c_out = out.shape[3]
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    if n_img == 0 or c_out == 0 or tiles == 0:
        return True
    cdef Py_ssize_t block = _winograd_block(n_img * tiles, block_tiles)
    cdef Py_ssize_t n_items = _ceil_div(n_img * tiles, block)
    # per thread: V and M of one block, a zero pixel, three spare pixels
    # (a tile's outputs past the image's last row or column)
    cdef Py_ssize_t zeros_at = 16 * (c_in * block + c_out * block + 2 * WINOGRAD_SKEW)
    cdef Py_ssize_t spare_at = zeros_at + c_in
    cdef Py_ssize_t work_size = spare_at + 3 * c_out
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* up = &u[0, 0, 0]
    cdef const floating* bp = &bias[0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, g0, g1, nt, xi, vs, ms, g, n, t, i, j
    cdef floating* work = NULL
    # (scalars, not an array: prange makes assigned scalars thread-private)
    cdef floating* p00
    cdef floating* p01
    cdef floating* p10
    cdef floating* p11
    cdef int bad
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    cdef bint finite = True
    cdef bint* finite_p = &finite

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = <floating*>_workspace(work_size * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            else:
                memset(work + zeros_at, 0, c_in * sizeof(floating))
            for item in prange(n_items, schedule="static"):
                if work == NULL:
                    continue
                g0 = item * block
                g1 = min(g0 + block, n_img * tiles)
                nt = g1 - g0
                vs = nt * c_in + WINOGRAD_SKEW
                ms = nt * c_out + WINOGRAD_SKEW
                _winograd_inputs_nhwc(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w,
                                      tiles, g0, g1, work, vs, work + zeros_at)
                for xi in range(16):
                    gemm(NO_TRANS, NO_TRANS, nt, c_out, c_in,
                         <floating>1, work + xi * vs, c_in, up + xi * c_in * c_out, c_out,
                         <floating>0, work + 16 * vs + xi * ms, c_out)
                for g in range(g0, g1):
                    n = g // tiles
                    t = g % tiles
                    i = t // tiles_w
                    j = t % tiles_w
                    p00 = yp + ((n * out_h + 2 * i) * out_w + 2 * j) * c_out
                    p01 = p00 + c_out if 2 * j + 1 < out_w else work + spare_at
                    p10 = p00 + out_w * c_out if 2 * i + 1 < out_h else work + spare_at + c_out
                    p11 = (p10 + c_out if 2 * i + 1 < out_h and 2 * j + 1 < out_w
                           else work + spare_at + 2 * c_out)
                    if floating is float:
                        bad = fc_winograd_out_nhwc_f32(work + 16 * vs + (g - g0) * c_out, ms,
                                                       c_out, bp, p00, p01, p10, p11)
                    else:
                        bad = fc_winograd_out_nhwc_f64(work + 16 * vs + (g - g0) * c_out, ms,
                                                       c_out, bp, p00, p01, p10, p11)
                    if bad:
                        finite_p[0] = False
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return finite


cdef inline void _winograd_grad_tile_nhwc(const floating* gp, Py_ssize_t c_out,
                                          Py_ssize_t out_h, Py_ssize_t out_w,
                                          Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g,
                                          floating* w, Py_ssize_t ws,
                                          const floating* zeros) noexcept nogil:
    """W[xi][g][:] = (A g A^T)[xi] of tile g's 2x2 sensitivity block (the
    channel vectors; ``zeros`` past the map's last row or column), at
    ``w[xi*ws + o]``."""
    cdef Py_ssize_t n = g // tiles, t = g % tiles
    cdef Py_ssize_t i = t // tiles_w, j = t % tiles_w
    cdef const floating* g00 = gp + ((n * out_h + 2 * i) * out_w + 2 * j) * c_out
    cdef const floating* g01 = g00 + c_out if 2 * j + 1 < out_w else zeros
    cdef const floating* g10 = g00 + out_w * c_out if 2 * i + 1 < out_h else zeros
    cdef const floating* g11 = (g10 + c_out if 2 * i + 1 < out_h and 2 * j + 1 < out_w
                                else zeros)
    if floating is float:
        fc_winograd_grad_nhwc_f32(g00, g01, g10, g11, c_out, w, ws)
    else:
        fc_winograd_grad_nhwc_f64(g00, g01, g10, g11, c_out, w, ws)


def conv2d_grad_weight_winograd_nhwc(const floating[:, :, :, ::1] x,
                                     const floating[:, :, :, ::1] grad_out,
                                     floating[:, :, :, ::1] sums,
                                     Py_ssize_t pad_top, Py_ssize_t pad_left,
                                     Py_ssize_t block_tiles, int n_threads):
    """``conv2d_grad_weight_winograd`` in NHWC (inputs trusted): ``x`` (N, H,
    W, C_in), ``grad_out`` (N, Ho, Wo, C_out); the filter gradient goes to
    ``sums`` as (C_in, C_out, 3, 3), for the caller to lay out as (3, 3,
    C_in, C_out).  The same two variants (the shared one's transforms a
    tile each).  Returns False if some value was not finite."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t c_in = x.shape[3]
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef Py_ssize_t c_out = grad_out.shape[3]
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    if sums.size == 0:              # no channels: nothing to sum (and no element 0)
        return True
    cdef floating* dwp = &sums[0, 0, 0, 0]
    if n_img == 0 or tiles == 0:
        memset(dwp, 0, sums.size * sizeof(floating))
        return True
    cdef Py_ssize_t block = _winograd_block(n_img * tiles, block_tiles)
    cdef Py_ssize_t n_red = _ceil_div(n_img * tiles, block)
    cdef Py_ssize_t m_size = 16 * c_in * c_out
    cdef Py_ssize_t n_slots = _reduction_slots(n_red, m_size, sizeof(floating))
    cdef bint shared_sums = _winograd_shared_sums(n_slots, m_size * sizeof(floating))
    # per block: V (16 x nt x C_in), then W (16 x nt x C_out), then a zero
    # pixel (wide enough for either side); after M when shared, else per thread
    cdef Py_ssize_t zeros_at = 16 * (c_in * block + c_out * block + 2 * WINOGRAD_SKEW)
    cdef Py_ssize_t vw_size = zeros_at + max(c_in, c_out)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef Py_ssize_t s, r, r0, g0, g1, nt, xi, vs, ws, g
    cdef floating* acc = NULL
    cdef floating* work = NULL
    cdef floating* v = NULL
    cdef floating* w = NULL     # (each thread sets its own; see the NCHW kernel)
    cdef floating* zeros
    cdef floating* partial = <floating*>_workspace(
        (m_size + vw_size if shared_sums else n_slots * m_size) * sizeof(floating))
    cdef int status = STATUS_OK if partial != NULL else STATUS_NO_MEMORY
    cdef int* status_p = &status
    cdef bint finite = True

    blas_serial_enter()
    try:
        if partial != NULL and shared_sums:
            v = partial + m_size
            zeros = v + zeros_at
            memset(zeros, 0, max(c_in, c_out) * sizeof(floating))
            with nogil, parallel(num_threads=n_threads):
                for r in range(n_red):              # every thread, in step
                    g0 = r * block
                    g1 = min(g0 + block, n_img * tiles)
                    nt = g1 - g0
                    vs = nt * c_in + WINOGRAD_SKEW
                    ws = nt * c_out + WINOGRAD_SKEW
                    w = v + 16 * vs
                    for g in prange(g0, g1, schedule="static"):
                        _winograd_inputs_nhwc(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w,
                                              tiles, g, g + 1, v + (g - g0) * c_in, vs, zeros)
                        _winograd_grad_tile_nhwc(gp, c_out, out_h, out_w, tiles_w, tiles, g,
                                                 w + (g - g0) * c_out, ws, zeros)
                    fc_omp_barrier()                # the transforms are all in
                    # the first block overwrites (no clearing pass)
                    for xi in prange(16, schedule="static"):
                        gemm(TRANS, NO_TRANS, c_in, c_out, nt, <floating>1,
                             v + xi * vs, c_in, w + xi * ws, c_out,
                             <floating>(0 if r == 0 else 1), partial + xi * c_in * c_out, c_out)
                    fc_omp_barrier()                # before the next block's transforms
        elif partial != NULL:
            with nogil, parallel(num_threads=n_threads):
                work = <floating*>_workspace(vw_size * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
                else:
                    memset(work + zeros_at, 0, max(c_in, c_out) * sizeof(floating))
                for s in prange(n_slots, schedule="static"):
                    if work == NULL:
                        continue
                    acc = partial + s * m_size
                    r0 = s * n_red // n_slots
                    for r in range(r0, (s + 1) * n_red // n_slots):
                        g0 = r * block
                        g1 = min(g0 + block, n_img * tiles)
                        nt = g1 - g0
                        vs = nt * c_in + WINOGRAD_SKEW
                        ws = nt * c_out + WINOGRAD_SKEW
                        _winograd_inputs_nhwc(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w,
                                              tiles, g0, g1, work, vs, work + zeros_at)
                        for g in range(g0, g1):
                            _winograd_grad_tile_nhwc(gp, c_out, out_h, out_w, tiles_w, tiles, g,
                                                     work + 16 * vs + (g - g0) * c_out, ws,
                                                     work + zeros_at)
                        # the slot's first block overwrites (no clearing pass)
                        for xi in range(16):
                            gemm(TRANS, NO_TRANS, c_in, c_out, nt, <floating>1,
                                 work + xi * vs, c_in, work + 16 * vs + xi * ws, c_out,
                                 <floating>(0 if r == r0 else 1), acc + xi * c_in * c_out, c_out)
                free(work)
            if status == STATUS_OK:
                with nogil:
                    _add_slots(partial, n_slots, m_size, partial, n_threads)
        if status == STATUS_OK:
            with nogil:
                finite = _winograd_filter_grads(partial, c_in, c_out, dwp, n_threads)
    finally:
        blas_serial_exit()
        free(partial)
    _raise_for_status(status)
    return finite
