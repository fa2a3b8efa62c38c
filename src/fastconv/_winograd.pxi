# Winograd F(2x2, 3x3) for 3x3, stride-1, undilated, ungrouped NCHW
# correlations (the forward, and the input gradient as the full correlation
# of the padded sensitivity map with the rotated, swapped filters); included
# by _kernels.pyx.
#
# Each 2x2 block of outputs (a "tile") is read from the 4x4 input patch d
# that covers its four 3x3 windows:  y = A^T [ (G g G^T) . (B^T d B) ] A
# (Lavin & Gray, 2016), where g is one 3x3 filter and . multiplies the
# sixteen transformed entries elementwise.  Summed over the input channels,
# each of the sixteen entries xi is one GEMM
#     M[xi] (C_out x tiles) = U[xi] (C_out x C_in) @ V[xi] (C_in x tiles),
# 16 * C_out * C_in multiply-adds per tile against the textbook's
# 36 * C_out * C_in: 2.25x fewer.  U (the transformed filters) comes from
# the Python layer; B^T d B and A^T M A are additions and subtractions only.
#
# Work items are (image, block of consecutive tiles), the block sized so a
# thread's V and M stay in its L2 (``block_tiles``, from the Python layer),
# so the workspace is threads x block, whatever the batch size, and the
# tiling (and every bit of the result) does not depend on the thread count.
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


def winograd_filters(const floating[:, :, :, ::1] weight, floating[:, :, ::1] u,
                     bint rotate_swap):
    """``u[4a + b, o, c] = (G g G^T)[a, b]`` for each 3x3 filter g
    (inputs trusted): g = ``weight[o, c]`` (``u`` is (16, C_out, C_in)), or
    with ``rotate_swap`` the input gradient's ``weight[c, o, ::-1, ::-1]``
    (``u`` is (16, C_in, C_out) of a (C_out, C_in, 3, 3) weight).  Summed
    in double precision and rounded once.  Rows of G: (1, 0, 0),
    (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)."""
    cdef Py_ssize_t n_out = u.shape[1], n_in = u.shape[2]
    cdef Py_ssize_t o, c, r, a, b
    cdef double g[3][3]
    cdef double t[4][3]
    cdef const floating* src
    with nogil:
        for o in range(n_out):
            for c in range(n_in):
                src = &weight[c, o, 0, 0] if rotate_swap else &weight[o, c, 0, 0]
                for r in range(9):
                    g[r // 3][r % 3] = src[8 - r] if rotate_swap else src[r]
                for r in range(3):      # G g: rows of the filter's columns
                    t[0][r] = g[0][r]
                    t[1][r] = 0.5 * (g[0][r] + g[1][r] + g[2][r])
                    t[2][r] = 0.5 * (g[0][r] - g[1][r] + g[2][r])
                    t[3][r] = g[2][r]
                for a in range(4):      # then G^T on the right
                    u[4 * a, o, c] = <floating>t[a][0]
                    u[4 * a + 1, o, c] = <floating>(0.5 * (t[a][0] + t[a][1] + t[a][2]))
                    u[4 * a + 2, o, c] = <floating>(0.5 * (t[a][0] - t[a][1] + t[a][2]))
                    u[4 * a + 3, o, c] = <floating>t[a][2]


cdef void _winograd_inputs(const floating* xp, Py_ssize_t c_in, Py_ssize_t in_h,
                           Py_ssize_t in_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                           Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                           Py_ssize_t g1, floating* v, floating* scratch) noexcept nogil:
    """V[xi][c][g - g0] for the tiles g0 <= g < g1 of the whole batch (tile
    g is tile g % tiles of image g // tiles), tile row by tile row."""
    cdef Py_ssize_t nt = g1 - g0, c, n, t0, t1, i, j0, j1
    for c in range(c_in):
        for n in range(g0 // tiles, (g1 - 1) // tiles + 1):
            t0 = max(g0 - n * tiles, 0)
            t1 = min(g1 - n * tiles, tiles)
            for i in range(t0 // tiles_w, (t1 - 1) // tiles_w + 1):
                j0 = max(t0 - i * tiles_w, 0)
                j1 = min(t1 - i * tiles_w, tiles_w)
                _winograd_input_rows(xp + (n * c_in + c) * in_h * in_w, in_h, in_w,
                                     2 * i - pad_top, 2 * j0 - pad_left, j1 - j0, scratch,
                                     v + c * nt + n * tiles + i * tiles_w + j0 - g0, c_in * nt)


cdef bint _winograd_outputs(const floating* m, Py_ssize_t c_out, const floating* bp,
                            floating* yp, Py_ssize_t out_h, Py_ssize_t out_w,
                            Py_ssize_t tiles_w, Py_ssize_t tiles, Py_ssize_t g0,
                            Py_ssize_t g1, floating* spare) noexcept nogil:
    """A^T M A + bias of the tiles g0 <= g < g1 into the output planes
    (``bp`` NULL: no bias); False if some value was not finite."""
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
                                               c_out * nt, j1 - j0, b, row0, row1,
                                               j1 == tiles_w and out_w % 2 == 1)
                else:
                    bad |= fc_winograd_out_f64(m + o * nt + n * tiles + i * tiles_w + j0 - g0,
                                               c_out * nt, j1 - j0, b, row0, row1,
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
    cdef Py_ssize_t block = max(1, min(block_tiles, n_img * tiles))
    cdef Py_ssize_t n_items = _ceil_div(n_img * tiles, block)
    # per thread: V and M of one block, the input rows' scratch, and a
    # spare output row (an odd Ho's missing second row)
    cdef Py_ssize_t scratch_at = 16 * (c_in + c_out) * block
    cdef Py_ssize_t spare_at = scratch_at + 8 * (tiles_w + 1)
    cdef Py_ssize_t work_size = spare_at + 2 * tiles_w
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* up = &u[0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, g0, g1, nt, xi
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
                _winograd_inputs(xp, c_in, in_h, in_w, pad_top, pad_left, tiles_w, tiles,
                                 g0, g1, work, work + scratch_at)
                for xi in range(16):
                    gemm(NO_TRANS, NO_TRANS, c_out, nt, c_in,
                         <floating>1, up + xi * c_out * c_in, c_in,
                         work + xi * c_in * nt, nt,
                         <floating>0, work + (16 * c_in + xi * c_out) * nt, nt)
                if not _winograd_outputs(work + 16 * c_in * nt, c_out, bp, yp, out_h, out_w,
                                         tiles_w, tiles, g0, g1, work + spare_at):
                    finite_p[0] = False
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return finite
