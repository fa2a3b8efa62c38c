# Winograd's minimal filtering for 3x3, stride-1, undilated, ungrouped
# convolutions, both layouts, included by _kernels.pyx: F(2x2, 3x3) for the
# forward and for the input gradient (the full correlation of the padded
# sensitivity map with the rotated, swapped filters), F(3x3, 2x2) for the
# filter gradient (the second half of this file).
#
# Each 2x2 block of outputs (a "tile") is read from the 4x4 input patch d
# that covers its four 3x3 windows:  y = A^T [ (G g G^T) . (B^T d B) ] A
# (Lavin & Gray, 2016), where g is one 3x3 filter and . multiplies the
# sixteen transformed entries elementwise.  Summed over the input channels,
# each of the sixteen entries xi is one GEMM
#     M[xi] (tiles x C_out) = V[xi] (tiles x C_in) @ U[xi] (C_in x C_out),
# 16 * C_out * C_in multiply-adds per tile against the textbook's
# 36 * C_out * C_in: 2.25x fewer.  U (the transformed filters,
# winograd_filters) is computed once per call; B^T d B and A^T M A are
# additions and subtractions only, one tile at a time along its pixels'
# channel vectors (_winograd.h).
#
# NHWC reads its pixels in place.  NCHW first copies each block's input
# rows to a channels-last stage, and writes its outputs to another that is
# then copied to the planes (_stage_channels_last, _unstage_tiles): the
# transforms that ran along a tile row in NCHW had few tiles to run along
# on small planes (4 on 7x7), and the copies cost less than they did.
# Against those (2 threads): float32 forward 1.10-1.46x on planes up to
# 28x28, 1.0-1.1x on 56x56; float64 0.93-1.18x, the least on the big
# 100x100 layer, whose stages (rows x 100 pixels x 256 channels) spill L2.
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
    # one tile's transforms along the channels (see the header)
    void fc_winograd_in_f32(const float** d, Py_ssize_t ch, float* v, Py_ssize_t v_stride)
    void fc_winograd_in_f64(const double** d, Py_ssize_t ch, double* v,
                                 Py_ssize_t v_stride)
    int fc_winograd_out_f32(const float* m, Py_ssize_t m_stride, Py_ssize_t ch,
                                 const float* bias, float* p00, float* p01, float* p10,
                                 float* p11)
    int fc_winograd_out_f64(const double* m, Py_ssize_t m_stride, Py_ssize_t ch,
                                 const double* bias, double* p00, double* p01, double* p10,
                                 double* p11)
    void fc_winograd_grad_f32(const float* g00, const float* g01, const float* g10,
                                   const float* g11, Py_ssize_t ch, float* w,
                                   Py_ssize_t w_stride)
    void fc_winograd_grad_f64(const double* g00, const double* g01, const double* g10,
                                   const double* g11, Py_ssize_t ch, double* w,
                                   Py_ssize_t w_stride)
    # NCHW planes to channels-last stages and back
    void fc_transpose_f32(const float* src, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t cols,
                          float* dst, Py_ssize_t ldd, int along_dst)
    void fc_transpose_f64(const double* src, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t cols,
                          double* dst, Py_ssize_t ldd, int along_dst)


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
    # A row's filters far apart (NCHW's forward, NHWC's input gradient): read
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
            if tap_step == 1:   # (NCHW) a filter's taps together in w as well
                for c in range(cols):
                    for r in range(n_rows):
                        for t in range(9):
                            stage[(r * cols + c) * 9 + t] = w[(r0 + r) * row_step
                                                              + c * col_step + t]
            else:               # (NHWC) the rows' taps together
                for c in range(cols):
                    for t in range(9):
                        for r in range(n_rows):
                            stage[(r * cols + c) * 9 + t] = w[(r0 + r) * row_step
                                                              + c * col_step + t * tap_step]
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
    """``u[4a + b, i, o] = (G g G^T)[a, b]`` for each 3x3 filter g of the
    correlation from input channel i to output channel o (inputs trusted):
    g = ``weight[o, i]`` (``u`` is (16, C_in, C_out)), or with
    ``rotate_swap`` the input gradient's ``weight[i, o, ::-1, ::-1]``
    (``u`` is (16, C_out, C_in) of a (C_out, C_in, 3, 3) weight).  Summed
    in double precision and rounded once.  Rows of G: (1, 0, 0),
    (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)."""
    cdef Py_ssize_t rows = u.shape[1], cols = u.shape[2]
    cdef int status
    if rows == 0 or cols == 0:
        return
    with nogil:
        if rotate_swap:     # g(r, c) = weight[r, c] rotated: weight is (rows, cols, 3, 3)
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, 9 * cols, 9, 1,
                                           True, &u[0, 0, 0], n_threads)
        else:               # g(r, c) = weight[c, r]: weight is (cols, rows, 3, 3)
            status = _winograd_filter_rows(&weight[0, 0, 0, 0], rows, cols, 9, 9 * rows, 1,
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


# --- NCHW's channels-last stages ----------------------------------------------
#
# A block of tiles reaches a run of the batch's rows (image after image:
# row r of image n is batch row n*h + r); NCHW copies that run of its
# input, or of its sensitivity map, to a stage that reads like NHWC, and
# writes its outputs to one that _unstage_tiles copies to the planes.


cdef inline Py_ssize_t _block_first_row(Py_ssize_t g0, Py_ssize_t tiles, Py_ssize_t tiles_w,
                                        Py_ssize_t h, Py_ssize_t off) noexcept nogil:
    """The first batch row (row r of image n is batch row ``n*h + r``) that
    the tiles from g0 on reach, tile row i of an image covering its rows
    from ``2*i + off`` on (those that exist)."""
    cdef Py_ssize_t n = g0 // tiles
    return n * h + min(max(2 * (g0 % tiles // tiles_w) + off, 0), h)


cdef inline Py_ssize_t _block_end_row(Py_ssize_t g1, Py_ssize_t tiles, Py_ssize_t tiles_w,
                                      Py_ssize_t h, Py_ssize_t off, Py_ssize_t span,
                                      Py_ssize_t lo) noexcept nogil:
    """One past the last batch row that the tiles before g1 reach, tile row
    i covering rows ``2*i + off`` to ``2*i + off + span - 1``; at least
    ``lo`` (the first row)."""
    cdef Py_ssize_t n = (g1 - 1) // tiles
    return max(lo, n * h + min(max(2 * ((g1 - 1) % tiles // tiles_w) + off + span, 0), h))


cdef Py_ssize_t _most_block_rows(Py_ssize_t total, Py_ssize_t block, Py_ssize_t tiles,
                                 Py_ssize_t tiles_w, Py_ssize_t h, Py_ssize_t off,
                                 Py_ssize_t span) noexcept nogil:
    """The most batch rows that a block of the ``total`` tiles reaches (the
    stage's size; see _block_first_row and _block_end_row)."""
    cdef Py_ssize_t k, g0, lo, most = 0
    for k in range(_ceil_div(total, block)):
        g0 = k * block
        lo = _block_first_row(g0, tiles, tiles_w, h, off)
        most = max(most, _block_end_row(min(g0 + block, total), tiles, tiles_w, h, off, span,
                                        lo) - lo)
    return most


cdef void _stage_channels_last(const floating* src, Py_ssize_t n_ch, Py_ssize_t h,
                               Py_ssize_t w, Py_ssize_t lo, Py_ssize_t hi,
                               floating* dst) noexcept nogil:
    """Batch rows ``lo <= L < hi`` of the NCHW planes ``src`` (n_ch channels
    of h x w) as channels-last pixels: channel c of column col of row L at
    ``dst[((L - lo)*w + col)*n_ch + c]``."""
    cdef Py_ssize_t row = lo, n, r, r1
    while row < hi:
        n = row // h
        r = row - n * h
        r1 = min(h, hi - n * h)         # this image's rows r .. r1 - 1: one transpose
        if floating is float:
            fc_transpose_f32(src + (n * n_ch * h + r) * w, h * w, n_ch, (r1 - r) * w,
                             dst + (row - lo) * w * n_ch, n_ch, 0)
        else:
            fc_transpose_f64(src + (n * n_ch * h + r) * w, h * w, n_ch, (r1 - r) * w,
                             dst + (row - lo) * w * n_ch, n_ch, 0)
        row = n * h + r1


cdef Py_ssize_t _stage_block(const floating* src, Py_ssize_t n_ch, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t tiles, Py_ssize_t tiles_w,
                             Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t off, Py_ssize_t span,
                             floating* dst) noexcept nogil:
    """The batch rows that the tiles g0 <= g < g1 reach (``off``, ``span``
    as for _block_end_row), staged channels last at ``dst``; returns the
    first of them, the transforms' ``row0``."""
    cdef Py_ssize_t lo = _block_first_row(g0, tiles, tiles_w, h, off)
    _stage_channels_last(src, n_ch, h, w, lo, _block_end_row(g1, tiles, tiles_w, h, off, span, lo),
                         dst)
    return lo


cdef inline void _pixels_to_planes(const floating* src, Py_ssize_t n_ch, Py_ssize_t n_pix,
                                   floating* dst, Py_ssize_t plane) noexcept nogil:
    """``n_pix`` channels-last pixels to a run of each of the n_ch planes."""
    if floating is float:
        fc_transpose_f32(src, n_ch, n_pix, n_ch, dst, plane, 1)
    else:
        fc_transpose_f64(src, n_ch, n_pix, n_ch, dst, plane, 1)


cdef void _unstage_tiles(const floating* src, Py_ssize_t n_ch, Py_ssize_t h, Py_ssize_t w,
                         Py_ssize_t lo, Py_ssize_t tiles, Py_ssize_t tiles_w,
                         Py_ssize_t g0, Py_ssize_t g1, floating* dst) noexcept nogil:
    """The output pixels of the tiles g0 <= g < g1 (2x2 each, those inside
    the h x w planes), staged channels last from batch row ``lo`` on as
    _stage_channels_last lays them out, to the NCHW planes ``dst``; no other
    pixel (another block's, in the same row) is written."""
    cdef Py_ssize_t n, t0, t1, i, i_last, i_end, j0, j1, r
    for n in range(g0 // tiles, (g1 - 1) // tiles + 1):
        t0 = max(g0 - n * tiles, 0)
        t1 = min(g1 - n * tiles, tiles)
        i = t0 // tiles_w
        i_last = (t1 - 1) // tiles_w
        while i <= i_last:
            j0 = max(t0 - i * tiles_w, 0)
            j1 = min(t1 - i * tiles_w, tiles_w)
            if j0 == 0 and j1 == tiles_w:
                # whole tile rows: their output rows in one transpose
                i_end = i + 1
                while i_end <= i_last and (i_end + 1) * tiles_w <= t1:
                    i_end += 1
                r = 2 * i
                _pixels_to_planes(src + (n * h + r - lo) * w * n_ch, n_ch,
                                  (min(2 * i_end, h) - r) * w, dst + (n * n_ch * h + r) * w,
                                  h * w)
                i = i_end
            else:
                for r in range(2 * i, min(2 * i + 2, h)):
                    _pixels_to_planes(src + ((n * h + r - lo) * w + 2 * j0) * n_ch, n_ch,
                                      min(2 * j1, w) - 2 * j0,
                                      dst + (n * n_ch * h + r) * w + 2 * j0, h * w)
                i += 1


# --- one tile's transforms, along its pixels' channels (both layouts) ----------


cdef void _winograd_inputs(const floating* xp, Py_ssize_t c_in, Py_ssize_t in_h,
                           Py_ssize_t in_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                           Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                           Py_ssize_t g1, floating* v, Py_ssize_t vs,
                           const floating* zeros, Py_ssize_t row0) noexcept nogil:
    """V[xi][g - g0][c] at ``v[xi*vs + (g - g0)*c_in + c]`` for the tiles
    g0 <= g < g1 of the batch; pixels outside the image read ``zeros``.
    ``xp`` holds the batch's rows from ``row0`` on (row r of image n is
    batch row ``n*in_h + r``): 0 for the whole batch, or a stage's first
    row (_stage_channels_last)."""
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
                    d[4 * r + q] = xp + ((n * in_h + row - row0) * in_w + col) * c_in
                else:
                    d[4 * r + q] = zeros
        if floating is float:
            fc_winograd_in_f32(d, c_in, v + (g - g0) * c_in, vs)
        else:
            fc_winograd_in_f64(d, c_in, v + (g - g0) * c_in, vs)


cdef bint _winograd_outputs(const floating* m, Py_ssize_t ms, Py_ssize_t c_out,
                            const floating* bp, floating* yp, Py_ssize_t out_h,
                            Py_ssize_t out_w, Py_ssize_t tiles_w, Py_ssize_t tiles,
                            Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t row0,
                            floating* spare) noexcept nogil:
    """A^T M A + bias of the tiles g0 <= g < g1 (M[xi][g - g0][o] at
    ``m[xi*ms + (g - g0)*c_out + o]``) into their channels-last output
    pixels, ``yp`` holding the batch's output rows from ``row0`` on (as
    _winograd_inputs' ``xp``); a tile's pixels past the last row or
    column go to ``spare`` (3 pixels).  False if some value was not
    finite."""
    cdef Py_ssize_t g, n, t, i, j
    cdef floating* p00
    cdef floating* p01
    cdef floating* p10
    cdef floating* p11
    cdef int bad = 0
    for g in range(g0, g1):
        n = g // tiles
        t = g % tiles
        i = t // tiles_w
        j = t % tiles_w
        p00 = yp + ((n * out_h + 2 * i - row0) * out_w + 2 * j) * c_out
        p01 = p00 + c_out if 2 * j + 1 < out_w else spare
        p10 = p00 + out_w * c_out if 2 * i + 1 < out_h else spare + c_out
        p11 = (p10 + c_out if 2 * i + 1 < out_h and 2 * j + 1 < out_w
               else spare + 2 * c_out)
        if floating is float:
            bad |= fc_winograd_out_f32(m + (g - g0) * c_out, ms, c_out, bp,
                                       p00, p01, p10, p11)
        else:
            bad |= fc_winograd_out_f64(m + (g - g0) * c_out, ms, c_out, bp,
                                       p00, p01, p10, p11)
    return not bad


cdef inline void _winograd_grad_tile(const floating* gp, Py_ssize_t c_out,
                                     Py_ssize_t out_h, Py_ssize_t out_w,
                                     Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g,
                                     floating* w, Py_ssize_t ws,
                                     const floating* zeros, Py_ssize_t row0) noexcept nogil:
    """W[xi][g][:] = (A g A^T)[xi] of tile g's 2x2 sensitivity block (the
    channel vectors; ``zeros`` past the map's last row or column), at
    ``w[xi*ws + o]``; ``gp`` holds the batch's rows from ``row0`` on (as
    _winograd_inputs' ``xp``)."""
    cdef Py_ssize_t n = g // tiles, t = g % tiles
    cdef Py_ssize_t i = t // tiles_w, j = t % tiles_w
    cdef const floating* g00 = gp + ((n * out_h + 2 * i - row0) * out_w + 2 * j) * c_out
    cdef const floating* g01 = g00 + c_out if 2 * j + 1 < out_w else zeros
    cdef const floating* g10 = g00 + out_w * c_out if 2 * i + 1 < out_h else zeros
    cdef const floating* g11 = (g10 + c_out if 2 * i + 1 < out_h and 2 * j + 1 < out_w
                                else zeros)
    if floating is float:
        fc_winograd_grad_f32(g00, g01, g10, g11, c_out, w, ws)
    else:
        fc_winograd_grad_f64(g00, g01, g10, g11, c_out, w, ws)


# --- the forward and the input gradient: F(2x2, 3x3) --------------------------


cdef int _winograd_correlate_blocks(const floating* xp, Py_ssize_t n_img, Py_ssize_t c_in,
                                    Py_ssize_t in_h, Py_ssize_t in_w, const floating* up,
                                    const floating* bp, floating* yp, Py_ssize_t c_out,
                                    Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t pad_top,
                                    Py_ssize_t pad_left, Py_ssize_t block_tiles, bint nchw,
                                    int n_threads, bint* finite) noexcept nogil:
    """The work of conv2d_winograd (``nchw``) and conv2d_winograd_nhwc:
    ``bp`` NULL for no bias.  Returns a status code; clears ``finite`` if
    some output was not finite."""
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    cdef Py_ssize_t total = n_img * tiles
    cdef Py_ssize_t block = _winograd_block(total, block_tiles)
    cdef Py_ssize_t n_items = _ceil_div(total, block)
    # per thread: V, then M of one block, then a zero pixel (and zero bias)
    # and three spare output pixels.  NCHW stages its block's input rows
    # channels last where M goes (before its GEMMs write M), and its output
    # pixels where V was (after they read V).
    cdef Py_ssize_t v_size = 16 * (c_in * block + WINOGRAD_SKEW)
    cdef Py_ssize_t m_size = 16 * (c_out * block + WINOGRAD_SKEW)
    if nchw:
        v_size = max(v_size, _most_block_rows(total, block, tiles, tiles_w, out_h, 0, 2)
                     * out_w * c_out)
        m_size = max(m_size, _most_block_rows(total, block, tiles, tiles_w, in_h, -pad_top, 4)
                     * in_w * c_in)
    cdef Py_ssize_t zeros_at = v_size + m_size
    cdef Py_ssize_t spare_at = zeros_at + max(c_in, c_out)
    cdef Py_ssize_t work_size = spare_at + 3 * c_out
    cdef Py_ssize_t item, g0, g1, nt, xi, vs, ms, lo
    cdef floating* work = NULL
    cdef floating* m
    cdef const floating* b
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    with parallel(num_threads=n_threads):
        work = <floating*>_workspace(work_size * sizeof(floating))
        if work == NULL:
            status_p[0] = STATUS_NO_MEMORY
        else:
            memset(work + zeros_at, 0, max(c_in, c_out) * sizeof(floating))
        for item in prange(n_items, schedule="static"):
            if work == NULL:
                continue
            g0 = item * block
            g1 = min(g0 + block, total)
            nt = g1 - g0
            vs = nt * c_in + WINOGRAD_SKEW
            ms = nt * c_out + WINOGRAD_SKEW
            m = work + v_size
            b = bp if bp != NULL else work + zeros_at
            if nchw:
                lo = _stage_block(xp, c_in, in_h, in_w, tiles, tiles_w, g0, g1, -pad_top, 4, m)
                _winograd_inputs(m, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                 g0, g1, work, vs, work + zeros_at, lo)
            else:
                _winograd_inputs(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                 g0, g1, work, vs, work + zeros_at, 0)
            for xi in range(16):
                gemm(NO_TRANS, NO_TRANS, nt, c_out, c_in,
                     <floating>1, work + xi * vs, c_in, up + xi * c_in * c_out, c_out,
                     <floating>0, m + xi * ms, c_out)
            if nchw:
                lo = _block_first_row(g0, tiles, tiles_w, out_h, 0)
                if not _winograd_outputs(m, ms, c_out, b, work, out_h, out_w, tiles_w,
                                         tiles, g0, g1, lo, work + spare_at):
                    finite[0] = False
                _unstage_tiles(work, c_out, out_h, out_w, lo, tiles, tiles_w, g0, g1, yp)
            elif not _winograd_outputs(m, ms, c_out, b, yp, out_h, out_w, tiles_w, tiles,
                                       g0, g1, 0, work + spare_at):
                finite[0] = False
        free(work)
    return status


cdef bint _winograd_correlate(const floating[:, :, :, ::1] x,
                              const floating[:, :, ::1] u, const floating[::1] bias,
                              bint has_bias, floating[:, :, :, ::1] out, Py_ssize_t pad_top,
                              Py_ssize_t pad_left, Py_ssize_t block_tiles, bint nchw,
                              int n_threads) except -1:
    """The two entry points' shapes unpacked for _winograd_correlate_blocks."""
    cdef Py_ssize_t n_img = x.shape[0]
    cdef Py_ssize_t c_in = x.shape[1] if nchw else x.shape[3]
    cdef Py_ssize_t in_h = x.shape[2] if nchw else x.shape[1]
    cdef Py_ssize_t in_w = x.shape[3] if nchw else x.shape[2]
    cdef Py_ssize_t c_out = out.shape[1] if nchw else out.shape[3]
    cdef Py_ssize_t out_h = out.shape[2] if nchw else out.shape[1]
    cdef Py_ssize_t out_w = out.shape[3] if nchw else out.shape[2]
    cdef bint finite = True
    cdef int status
    if n_img == 0 or c_out == 0 or out_h == 0 or out_w == 0:
        return True
    blas_serial_enter()
    try:
        with nogil:
            status = _winograd_correlate_blocks(
                &x[0, 0, 0, 0], n_img, c_in, in_h, in_w, &u[0, 0, 0],
                &bias[0] if has_bias else NULL, &out[0, 0, 0, 0], c_out, out_h, out_w,
                pad_top, pad_left, block_tiles, nchw, n_threads, &finite)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return finite


def conv2d_winograd(const floating[:, :, :, ::1] x,
                    const floating[:, :, ::1] u,
                    const floating[::1] bias,
                    bint has_bias,
                    floating[:, :, :, ::1] out,
                    Py_ssize_t pad_top, Py_ssize_t pad_left,
                    Py_ssize_t block_tiles, int n_threads):
    """3x3 stride-1 correlation ``out = conv2d(x, w) + bias`` by Winograd
    F(2x2, 3x3) (inputs trusted).

    ``u`` is ``(16, C_in, C_out)``, the transformed filters ``G w G^T``
    entry by entry (``winograd_filters``); ``out`` is ``(N, C_out, Ho,
    Wo)``, ``pad_top`` and ``pad_left`` the leading paddings (the trailing
    ones are implied by ``Ho``/``Wo``).  The batch's tiles, image after
    image, are cut into work items of ``block_tiles`` (>= 1): the M of
    their GEMMs, small planes' tiles from several images.  Returns False,
    with ``out`` incomplete, if some output was not finite (the caller then
    takes the GEMM kernels).
    """
    return _winograd_correlate(x, u, bias, has_bias, out, pad_top, pad_left, block_tiles, True,
                               n_threads)


def conv2d_winograd_nhwc(const floating[:, :, :, ::1] x,
                         const floating[:, :, ::1] u,
                         const floating[::1] bias,
                         bint has_bias,
                         floating[:, :, :, ::1] out,
                         Py_ssize_t pad_top, Py_ssize_t pad_left,
                         Py_ssize_t block_tiles, int n_threads):
    """``conv2d_winograd`` in NHWC (inputs trusted): ``x`` (N, H, W, C_in),
    ``u`` (16, C_in, C_out), ``out`` (N, Ho, Wo, C_out).  Returns False,
    with ``out`` incomplete, if some output was not finite."""
    return _winograd_correlate(x, u, bias, has_bias, out, pad_top, pad_left, block_tiles, False,
                               n_threads)


# --- the filter gradient: F(3x3, 2x2) ------------------------------------------
#
# dW[o, c] = sum over tiles of the correlation of the tile's 4x4 input patch
# d with its 2x2 block g of the sensitivity map.  The forward's identity,
# transposed (sum_rs g_rs y_rs for every filter w), gives each tile's part
# as G^T [ (A g A^T) . (B^T d B) ] G: the same B^T d B as the forward, the
# sensitivity blocks through A, and one G^T M G per filter at the end, after
# the sixteen GEMMs  M[xi] (C_out x C_in) += W[xi]^T (C_out x tiles) @
# V[xi] (tiles x C_in)  have summed all tiles (NHWC: M[xi]^T).  As
# conv2d_grad_weight, the work items go to a number of reduction slots
# fixed by the shape, each summed in order, and the slots are added in
# order: the same bits for any thread count.


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


cdef inline void _winograd_grad_gemm(bint nchw, Py_ssize_t c_in, Py_ssize_t c_out,
                                     Py_ssize_t nt, const floating* v, const floating* w,
                                     floating beta, floating* m) noexcept nogil:
    """``M[xi] = beta*M[xi] + W[xi]^T V[xi]`` (NCHW: dW's C_out x C_in) or
    ``V[xi]^T W[xi]`` (NHWC: C_in x C_out) of one entry, ``v`` (nt x C_in)
    and ``w`` (nt x C_out) a block's transforms."""
    if nchw:
        gemm(TRANS, NO_TRANS, c_out, c_in, nt, <floating>1, w, c_out, v, c_in, beta, m, c_in)
    else:
        gemm(TRANS, NO_TRANS, c_in, c_out, nt, <floating>1, v, c_in, w, c_out, beta, m, c_out)


cdef int _winograd_grad_weight_blocks(const floating* xp, const floating* gp,
                                      Py_ssize_t n_img, Py_ssize_t c_in, Py_ssize_t in_h,
                                      Py_ssize_t in_w, Py_ssize_t c_out, Py_ssize_t out_h,
                                      Py_ssize_t out_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                                      Py_ssize_t block_tiles, bint nchw, int n_threads,
                                      floating* dwp, bint* finite) noexcept nogil:
    """The work of conv2d_grad_weight_winograd (``nchw``; ``dwp`` (C_out,
    C_in, 3, 3)) and conv2d_grad_weight_winograd_nhwc (``dwp`` (C_in, C_out,
    3, 3)), for at least one image, tile and channel each way.  Returns a
    status code; clears ``finite`` if some value was not finite."""
    cdef Py_ssize_t tiles_w = (out_w + 1) // 2
    cdef Py_ssize_t tiles = (out_h + 1) // 2 * tiles_w
    cdef Py_ssize_t total = n_img * tiles
    cdef Py_ssize_t block = _winograd_block(total, block_tiles)
    cdef Py_ssize_t n_red = _ceil_div(total, block)
    cdef Py_ssize_t m_size = 16 * c_out * c_in
    cdef Py_ssize_t n_slots = _reduction_slots(n_red, m_size, sizeof(floating))
    cdef bint shared_sums = _winograd_shared_sums(n_slots, m_size * sizeof(floating))
    # M[xi] sums dW's filters as (C_out x C_in) in NCHW, as (C_in x C_out) in
    # NHWC (_winograd_grad_gemm)
    # per block: V, W, a zero pixel, and in NCHW the block's input rows and
    # sensitivity rows staged channels last; after M where all threads share
    # the block, else per thread
    cdef Py_ssize_t w_at = 16 * (c_in * block + WINOGRAD_SKEW)
    cdef Py_ssize_t zeros_at = w_at + 16 * (c_out * block + WINOGRAD_SKEW)
    cdef Py_ssize_t xs_at = zeros_at + max(c_in, c_out), gs_at = xs_at, vw_size = xs_at
    if nchw:
        gs_at = xs_at + (_most_block_rows(total, block, tiles, tiles_w, in_h, -pad_top, 4)
                         * in_w * c_in)
        vw_size = gs_at + (_most_block_rows(total, block, tiles, tiles_w, out_h, 0, 2)
                           * out_w * c_out)
    cdef Py_ssize_t s, r, r0, g0, g1, nt, xi, vs, ws, g, k, a, b
    cdef Py_ssize_t x_lo = 0, x_hi = 0, g_lo = 0, g_hi = 0
    # a block's rows to stage, split (n_threads 0: OpenMP's default count)
    cdef Py_ssize_t n_chunks = 2 * max(n_threads, 1)
    cdef floating* acc
    cdef floating* work = NULL
    cdef floating* v = NULL     # (each thread sets its own; GCC would warn of the copy)
    cdef floating* w = NULL
    cdef const floating* xsrc
    cdef const floating* gsrc
    cdef floating* partial = <floating*>_workspace(
        (m_size + vw_size if shared_sums else n_slots * m_size) * sizeof(floating))
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    if partial == NULL:
        return STATUS_NO_MEMORY
    if shared_sums:
        work = partial + m_size
        memset(work + zeros_at, 0, max(c_in, c_out) * sizeof(floating))
        with parallel(num_threads=n_threads):
            for r in range(n_red):                  # every thread, in step
                g0 = r * block
                g1 = min(g0 + block, total)
                nt = g1 - g0
                vs = nt * c_in + WINOGRAD_SKEW
                ws = nt * c_out + WINOGRAD_SKEW
                v = work
                w = work + w_at
                xsrc = xp
                gsrc = gp
                x_lo = x_hi = g_lo = g_hi = 0
                if nchw:                            # the stages, rows split over the threads
                    x_lo = _block_first_row(g0, tiles, tiles_w, in_h, -pad_top)
                    x_hi = _block_end_row(g1, tiles, tiles_w, in_h, -pad_top, 4, x_lo)
                    g_lo = _block_first_row(g0, tiles, tiles_w, out_h, 0)
                    g_hi = _block_end_row(g1, tiles, tiles_w, out_h, 0, 2, g_lo)
                    xsrc = work + xs_at
                    gsrc = work + gs_at
                    for k in prange(2 * n_chunks, schedule="static"):
                        if k < n_chunks:
                            a = x_lo + _ceil_div((x_hi - x_lo) * k, n_chunks)
                            b = x_lo + _ceil_div((x_hi - x_lo) * (k + 1), n_chunks)
                            _stage_channels_last(xp, c_in, in_h, in_w, a, b,
                                                 work + xs_at + (a - x_lo) * in_w * c_in)
                        else:
                            a = g_lo + _ceil_div((g_hi - g_lo) * (k - n_chunks), n_chunks)
                            b = g_lo + _ceil_div((g_hi - g_lo) * (k - n_chunks + 1), n_chunks)
                            _stage_channels_last(gp, c_out, out_h, out_w, a, b,
                                                 work + gs_at + (a - g_lo) * out_w * c_out)
                    fc_omp_barrier()                # (prange ends without one here)
                for g in prange(g0, g1, schedule="static"):
                    _winograd_inputs(xsrc, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                     g, g + 1, v + (g - g0) * c_in, vs, work + zeros_at, x_lo)
                    _winograd_grad_tile(gsrc, c_out, out_h, out_w, tiles_w, tiles, g,
                                        w + (g - g0) * c_out, ws, work + zeros_at, g_lo)
                fc_omp_barrier()                    # the transforms are all in
                # the first block overwrites (no clearing pass)
                for xi in prange(16, schedule="static"):
                    _winograd_grad_gemm(nchw, c_in, c_out, nt, v + xi * vs, w + xi * ws,
                                        <floating>(0 if r == 0 else 1),
                                        partial + xi * c_in * c_out)
                fc_omp_barrier()                    # before the next block's stages
    else:
        with parallel(num_threads=n_threads):
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
                    g1 = min(g0 + block, total)
                    nt = g1 - g0
                    vs = nt * c_in + WINOGRAD_SKEW
                    ws = nt * c_out + WINOGRAD_SKEW
                    xsrc = xp
                    gsrc = gp
                    x_lo = 0
                    g_lo = 0
                    if nchw:
                        x_lo = _stage_block(xp, c_in, in_h, in_w, tiles, tiles_w, g0, g1,
                                            -pad_top, 4, work + xs_at)
                        g_lo = _stage_block(gp, c_out, out_h, out_w, tiles, tiles_w, g0, g1,
                                            0, 2, work + gs_at)
                        xsrc = work + xs_at
                        gsrc = work + gs_at
                    _winograd_inputs(xsrc, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                     g0, g1, work, vs, work + zeros_at, x_lo)
                    for g in range(g0, g1):
                        _winograd_grad_tile(gsrc, c_out, out_h, out_w, tiles_w, tiles, g,
                                            work + w_at + (g - g0) * c_out, ws,
                                            work + zeros_at, g_lo)
                    # the slot's first block overwrites (no clearing pass)
                    for xi in range(16):
                        _winograd_grad_gemm(nchw, c_in, c_out, nt, work + xi * vs,
                                            work + w_at + xi * ws,
                                            <floating>(0 if r == r0 else 1),
                                            acc + xi * c_in * c_out)
            free(work)
        if status == STATUS_OK:
            _add_slots(partial, n_slots, m_size, partial, n_threads)
    if status == STATUS_OK and not _winograd_filter_grads(partial, c_out if nchw else c_in,
                                                          c_in if nchw else c_out, dwp,
                                                          n_threads):
        finite[0] = False
    free(partial)
    return status


cdef bint _winograd_grad_weight(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_out,
                                floating[:, :, :, ::1] dw, Py_ssize_t pad_top,
                                Py_ssize_t pad_left, Py_ssize_t block_tiles, bint nchw,
                                int n_threads) except -1:
    """The two entry points' shapes unpacked for _winograd_grad_weight_blocks."""
    cdef Py_ssize_t n_img = x.shape[0]
    cdef Py_ssize_t c_in = x.shape[1] if nchw else x.shape[3]
    cdef Py_ssize_t in_h = x.shape[2] if nchw else x.shape[1]
    cdef Py_ssize_t in_w = x.shape[3] if nchw else x.shape[2]
    cdef Py_ssize_t c_out = grad_out.shape[1] if nchw else grad_out.shape[3]
    cdef Py_ssize_t out_h = grad_out.shape[2] if nchw else grad_out.shape[1]
    cdef Py_ssize_t out_w = grad_out.shape[3] if nchw else grad_out.shape[2]
    cdef bint finite = True
    cdef int status
    if dw.size == 0:                # no channels: nothing to sum (and no element 0)
        return True
    if n_img == 0 or out_h == 0 or out_w == 0:
        memset(&dw[0, 0, 0, 0], 0, dw.size * sizeof(floating))
        return True
    blas_serial_enter()
    try:
        with nogil:
            status = _winograd_grad_weight_blocks(
                &x[0, 0, 0, 0], &grad_out[0, 0, 0, 0], n_img, c_in, in_h, in_w, c_out, out_h,
                out_w, pad_top, pad_left, block_tiles, nchw, n_threads, &dw[0, 0, 0, 0],
                &finite)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return finite


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
    return _winograd_grad_weight(x, grad_out, grad_weight, pad_top, pad_left, block_tiles,
                                 True, n_threads)


def conv2d_grad_weight_winograd_nhwc(const floating[:, :, :, ::1] x,
                                     const floating[:, :, :, ::1] grad_out,
                                     floating[:, :, :, ::1] sums,
                                     Py_ssize_t pad_top, Py_ssize_t pad_left,
                                     Py_ssize_t block_tiles, int n_threads):
    """``conv2d_grad_weight_winograd`` in NHWC (inputs trusted): ``x`` (N, H,
    W, C_in), ``grad_out`` (N, Ho, Wo, C_out); the filter gradient goes to
    ``sums`` as (C_in, C_out, 3, 3), for the caller to lay out as (3, 3,
    C_in, C_out).  Returns False if some value was not finite."""
    return _winograd_grad_weight(x, grad_out, sums, pad_top, pad_left, block_tiles, False,
                                 n_threads)
