# Channels-last (NHWC) kernels, included at the end of _kernels.pyx so that
# both SIMD builds carry them.  Same contracts as the NCHW kernels above
# (inputs trusted, outputs preallocated by fastconv.functional), with
# x (N, H, W, C), weight (kh, kw, C_in/groups, C_out) and outputs in the same
# order.  In this layout a pixel's channels are contiguous, so:
#   * the patch matrix is built from contiguous channel runs, one row per
#     output position, and the weight already *is* the (kh*kw*cg, C_out)
#     GEMM operand -- no repacking of filters for the forward pass;
#   * 1x1 stride-1 convolutions are a single GEMM on the input as it lies;
#   * depthwise and pooling loops run along C, unit stride, with no
#     deinterleaving.

# --- patches -----------------------------------------------------------------

cdef inline bint _unit_spaced(const Py_ssize_t* off, Py_ssize_t n) noexcept nogil:
    """Column offsets that step by one (dilation 1)."""
    cdef Py_ssize_t i
    for i in range(1, n):
        if off[i] != off[i - 1] + 1:
            return False
    return True


cdef void _pack_patches_nhwc(const floating* src, Py_ssize_t src_h, Py_ssize_t src_w,
                             Py_ssize_t n_ch, Py_ssize_t c0, Py_ssize_t cg,
                             const Py_ssize_t* row_off, Py_ssize_t n_u,
                             const Py_ssize_t* col_off, Py_ssize_t n_v,
                             Py_ssize_t step_i, Py_ssize_t step_j,
                             Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                             floating* dst) noexcept nogil:
    """Pack a count x (n_u*n_v*cg) patch matrix, row-major.

    Row ``l`` (grid position ``(qi, qj) = divmod(p0 + l, grid_w)``) holds,
    for each tap ``(iu, iv)`` in order, the channels ``c0 .. c0+cg`` of
    ``src[qi*step_i + row_off[iu], qj*step_j + col_off[iv]]`` (an
    ``src_h x src_w x n_ch`` image), or zeros where that pixel is outside
    the image (the zero padding of the textbook).  With all channels
    (groups 1) and dilation 1, a kernel row's taps are one contiguous run of
    the image row and are copied as one block.
    """
    cdef Py_ssize_t l, iu, iv, ii, jj, c, v_lo, v_hi
    cdef Py_ssize_t qi = p0 // grid_w
    cdef Py_ssize_t qj = p0 - qi * grid_w
    cdef Py_ssize_t run = n_v * cg
    cdef bint whole_rows = cg == n_ch and _unit_spaced(col_off, n_v)
    cdef floating* d = dst
    cdef const floating* s
    for l in range(count):
        for iu in range(n_u):
            ii = qi * step_i + row_off[iu]
            if whole_rows:
                jj = qj * step_j + col_off[0]
                v_lo = min(n_v, max(0, -jj))
                v_hi = max(v_lo, min(n_v, src_w - jj))
                if ii < 0 or ii >= src_h:
                    v_hi = v_lo
                if v_lo > 0:
                    memset(d, 0, v_lo * cg * sizeof(floating))
                if v_hi > v_lo:
                    # integer offsets: no pointer is formed outside the image
                    memcpy(d + v_lo * cg, src + (ii * src_w + jj + v_lo) * n_ch,
                           (v_hi - v_lo) * cg * sizeof(floating))
                if v_hi < n_v:
                    memset(d + v_hi * cg, 0, (n_v - v_hi) * cg * sizeof(floating))
                d += run
                continue
            for iv in range(n_v):
                jj = qj * step_j + col_off[iv]
                if 0 <= ii < src_h and 0 <= jj < src_w:
                    s = src + (ii * src_w + jj) * n_ch + c0
                    for c in range(cg):
                        d[c] = s[c]
                else:
                    for c in range(cg):
                        d[c] = 0
                d += cg
        qj += 1
        if qj == grid_w:
            qj = 0
            qi += 1


cdef inline bint _narrow_patches(Py_ssize_t cg, Py_ssize_t n_v) noexcept nogil:
    """Few channels per kernel row (C_in/groups * kw < 32): a patch row's
    runs would be too short to copy well, so the patch matrix is packed
    transposed -- one row per (tap, channel), filled along the output
    positions (the NCHW-style packing) -- and the GEMMs transpose it."""
    return cg * n_v < 32


cdef void _pack_patches_nhwc_t(const floating* src, Py_ssize_t src_h, Py_ssize_t src_w,
                               Py_ssize_t n_ch, Py_ssize_t c0, Py_ssize_t cg,
                               const Py_ssize_t* row_off, Py_ssize_t n_u,
                               const Py_ssize_t* col_off, Py_ssize_t n_v,
                               Py_ssize_t step_i, Py_ssize_t step_j,
                               Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                               floating* dst) noexcept nogil:
    """The transpose of ``_pack_patches_nhwc``: a (n_u*n_v*cg) x count
    matrix whose row ``(iu*n_v + iv)*cg + c`` runs along the output
    positions, one grid row segment at a time (zeros outside the image)."""
    cdef Py_ssize_t iu, iv, c, l, qi, qj, seg, ii, co, lo, hi, a, b, t, base
    cdef Py_ssize_t pix_step = step_j * n_ch
    cdef floating* d
    for iu in range(n_u):
        for iv in range(n_v):
            co = col_off[iv]
            # grid columns whose source column lies inside the image
            lo = max(0, _ceil_div(-co, step_j))
            hi = _floor_div(src_w - 1 - co, step_j) + 1
            for c in range(cg):
                d = dst + ((iu * n_v + iv) * cg + c) * count
                qi = p0 // grid_w
                qj = p0 - qi * grid_w
                l = 0
                while l < count:
                    seg = min(grid_w - qj, count - l)
                    ii = qi * step_i + row_off[iu]
                    if ii < 0 or ii >= src_h or hi <= lo:
                        memset(d + l, 0, seg * sizeof(floating))
                    else:
                        a = min(max(lo, qj), qj + seg)      # first in-image column
                        b = max(min(hi, qj + seg), a)       # one past the last
                        if a > qj:
                            memset(d + l, 0, (a - qj) * sizeof(floating))
                        # integer offsets: no pointer is formed outside the image
                        base = (ii * src_w + co) * n_ch + c0 + c
                        if pix_step == 1:       # one channel, stride 1: a run
                            if b > a:
                                memcpy(d + l + (a - qj), src + base + a,
                                       (b - a) * sizeof(floating))
                        else:
                            for t in range(a, b):
                                d[l + t - qj] = src[base + t * pix_step]
                        if qj + seg > b:
                            memset(d + l + (b - qj), 0, (qj + seg - b) * sizeof(floating))
                    l += seg
                    qi += 1
                    qj = 0


cdef void _unpack_add_patches_nhwc_t(const floating* src, Py_ssize_t dst_h, Py_ssize_t dst_w,
                                     Py_ssize_t n_ch, Py_ssize_t c0, Py_ssize_t cg,
                                     const Py_ssize_t* row_off, Py_ssize_t n_u,
                                     const Py_ssize_t* col_off, Py_ssize_t n_v,
                                     Py_ssize_t step_i, Py_ssize_t step_j,
                                     Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                                     floating* dst) noexcept nogil:
    """The adjoint of ``_pack_patches_nhwc_t`` (col2im of the transposed
    patch matrix), in row-major order of (row, position): a fixed order."""
    cdef Py_ssize_t iu, iv, c, l, qi, qj, seg, ii, co, lo, hi, a, b, t, base
    cdef Py_ssize_t pix_step = step_j * n_ch
    cdef const floating* s
    for iu in range(n_u):
        for iv in range(n_v):
            co = col_off[iv]
            lo = max(0, _ceil_div(-co, step_j))
            hi = _floor_div(dst_w - 1 - co, step_j) + 1
            for c in range(cg):
                s = src + ((iu * n_v + iv) * cg + c) * count
                qi = p0 // grid_w
                qj = p0 - qi * grid_w
                l = 0
                while l < count:
                    seg = min(grid_w - qj, count - l)
                    ii = qi * step_i + row_off[iu]
                    if 0 <= ii < dst_h and hi > lo:
                        a = min(max(lo, qj), qj + seg)
                        b = max(min(hi, qj + seg), a)
                        base = (ii * dst_w + co) * n_ch + c0 + c
                        if pix_step == 1:
                            for t in range(a, b):
                                dst[base + t] += s[l + t - qj]
                        else:
                            for t in range(a, b):
                                dst[base + t * pix_step] += s[l + t - qj]
                    l += seg
                    qi += 1
                    qj = 0


cdef void _unpack_add_patches_nhwc(const floating* src, Py_ssize_t dst_h, Py_ssize_t dst_w,
                                   Py_ssize_t n_ch, Py_ssize_t c0, Py_ssize_t cg,
                                   const Py_ssize_t* row_off, Py_ssize_t n_u,
                                   const Py_ssize_t* col_off, Py_ssize_t n_v,
                                   Py_ssize_t step_i, Py_ssize_t step_j,
                                   Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                                   floating* dst) noexcept nogil:
    """The adjoint of ``_pack_patches_nhwc`` (col2im): add each patch row's
    channel runs back into the pixels they came from, skipping those outside
    the image, in row then tap order (a fixed summation order)."""
    cdef Py_ssize_t l, iu, iv, ii, jj, c
    cdef Py_ssize_t qi = p0 // grid_w
    cdef Py_ssize_t qj = p0 - qi * grid_w
    cdef const floating* s = src
    cdef floating* d
    for l in range(count):
        for iu in range(n_u):
            ii = qi * step_i + row_off[iu]
            for iv in range(n_v):
                jj = qj * step_j + col_off[iv]
                if 0 <= ii < dst_h and 0 <= jj < dst_w:
                    d = dst + (ii * dst_w + jj) * n_ch + c0
                    for c in range(cg):
                        d[c] = d[c] + s[c]
                s += cg
        qj += 1
        if qj == grid_w:
            qj = 0
            qi += 1


# --- convolution -------------------------------------------------------------

def conv2d_forward_nhwc(const floating[:, :, :, ::1] x,
                        const floating[:, :, :, ::1] weight,
                        const floating[::1] bias,
                        bint has_bias,
                        floating[:, :, :, ::1] out,
                        Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_top, Py_ssize_t pad_left,
                        Py_ssize_t dil_h, Py_ssize_t dil_w,
                        Py_ssize_t groups, int n_threads):
    """NHWC ``out = conv2d(x, weight) + bias``: per (image, group, tile of
    output positions), ``out_tile = patches @ weight[:, group columns]``.

    A 1x1, stride-1, unpadded convolution multiplies the input rows as they
    lie (each tile's rows of ``x``, viewed as ``(H*W, C_in)``), with no
    packing at all.
    """
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t c_in = x.shape[3]
    cdef Py_ssize_t kh = weight.shape[0], kw = weight.shape[1]
    cdef Py_ssize_t cg = weight.shape[2], c_out = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t positions = out_h * out_w, k_dim = kh * kw * cg
    cdef Py_ssize_t in_plane = in_h * in_w
    if n_img == 0 or positions == 0 or c_out == 0 or k_dim == 0:
        return
    cdef bint direct = (kh == 1 and kw == 1 and stride_h == 1 and stride_w == 1
                        and pad_top == 0 and pad_left == 0)
    cdef Py_ssize_t tile = _tile_size(k_dim, positions, n_img * groups, sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t n_items = n_img * groups * n_tiles
    cdef bint narrow = _narrow_patches(cg, kw)
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, t, p0, count, o, l
    cdef floating* dst
    cdef floating beta = 1 if has_bias else 0
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = NULL
            if not direct:
                work = <floating*>_workspace(k_dim * tile * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if direct or work != NULL:
                    n = item // (groups * n_tiles)
                    g = (item // n_tiles) % groups
                    t = item % n_tiles
                    p0 = t * tile
                    count = min(tile, positions - p0)
                    dst = yp + (n * positions + p0) * c_out + g * og
                    # the bias goes in first and the GEMM adds onto it
                    # (beta = 1): no second pass over the output
                    if has_bias:
                        for l in range(count):
                            memcpy(dst + l * c_out, bp + g * og, og * sizeof(floating))
                    if direct:
                        gemm(NO_TRANS, NO_TRANS, count, og, k_dim, <floating>1,
                             xp + (n * in_plane + p0) * c_in + g * cg, c_in,
                             wp + g * og, c_out, beta, dst, c_out)
                    elif narrow:
                        _pack_patches_nhwc_t(xp + n * in_plane * c_in, in_h, in_w, c_in,
                                             g * cg, cg, &row_off[0], kh, &col_off[0], kw,
                                             stride_h, stride_w, out_w, p0, count, work)
                        gemm(TRANS, NO_TRANS, count, og, k_dim, <floating>1,
                             work, count, wp + g * og, c_out, beta, dst, c_out)
                    else:
                        _pack_patches_nhwc(xp + n * in_plane * c_in, in_h, in_w, c_in,
                                           g * cg, cg, &row_off[0], kh, &col_off[0], kw,
                                           stride_h, stride_w, out_w, p0, count, work)
                        gemm(NO_TRANS, NO_TRANS, count, og, k_dim, <floating>1,
                             work, k_dim, wp + g * og, c_out, beta, dst, c_out)
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


def conv2d_grad_weight_nhwc(const floating[:, :, :, ::1] x,
                            const floating[:, :, :, ::1] grad_out,
                            floating[:, :, :, ::1] grad_weight,
                            Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_top, Py_ssize_t pad_left,
                            Py_ssize_t dil_h, Py_ssize_t dil_w,
                            Py_ssize_t groups, int n_threads):
    """NHWC ``grad_weight = sum over images and tiles of patches^T @ dY``.

    A group's ``k_dim x og`` gradient may be cut into row blocks of whole
    kernel rows (``_grad_weight_block``, the NHWC counterpart of the
    NCHW column blocks: dW's rows run kernel row by kernel row), each
    packing only its kernel rows' patches; where one kernel row alone is
    over GW_ROW_BLOCK_BYTES, into blocks of one tap's channel range (dW's
    rows run channel by channel within a tap).  8 x 512 x 7 x 7, 3x3
    (2 threads, alternating rounds): 3 kernel-row blocks of 3.1 MB (and 6
    reduction slots of the whole 9.4 MB float32 gradient) took 20.7 ms in
    float32 and 25.8 ms in float64; blocks of one tap's 256 channels
    (float32) or 128 (float64), 512 KiB each, 5.3 and 12.5 ms.  8 x 256 x 14 x 14
    float64 13.3 -> 11.0 ms, res_s2 float64 6.7 -> 6.5 ms.  Reduced in a
    fixed number of slots that depends
    on the shape only and the slots added in order (as
    ``conv2d_grad_weight``): bitwise the same for any thread count.
    """
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t c_in = x.shape[3]
    cdef Py_ssize_t kh = grad_weight.shape[0], kw = grad_weight.shape[1]
    cdef Py_ssize_t cg = grad_weight.shape[2], c_out = grad_weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef Py_ssize_t positions = out_h * out_w, k_dim = kh * kw * cg
    cdef Py_ssize_t in_plane = in_h * in_w, w_size = k_dim * c_out
    cdef floating* dwp = &grad_weight[0, 0, 0, 0] if w_size else NULL
    cdef Py_ssize_t i
    if w_size == 0:
        return
    if n_img == 0 or positions == 0:
        memset(dwp, 0, w_size * sizeof(floating))
        return
    cdef bint direct = (kh == 1 and kw == 1 and stride_h == 1 and stride_w == 1
                        and pad_top == 0 and pad_left == 0)
    # row blocks of `rb` kernel rows (the last one may have fewer), or, when
    # one kernel row is too large, blocks of `cc` channels of one tap
    cdef Py_ssize_t rb = _grad_weight_block(kh, kw * cg * og * sizeof(floating),
                                            GW_ROW_BLOCK_BYTES)
    cdef bint tap_blocks = (GW_ROW_BLOCK_BYTES > 0
                            and kw * cg * og * <Py_ssize_t>sizeof(floating) > GW_ROW_BLOCK_BYTES)
    cdef Py_ssize_t cc = (_grad_weight_block(cg, og * sizeof(floating), GW_ROW_BLOCK_BYTES)
                          if tap_blocks else cg)
    cdef Py_ssize_t n_cc = _ceil_div(cg, cc)
    cdef Py_ssize_t n_rb = kh * kw * n_cc if tap_blocks else _ceil_div(kh, rb)
    cdef Py_ssize_t block_rows = cc if tap_blocks else rb * kw * cg   # patch rows, full block
    cdef Py_ssize_t tile = _grad_weight_tile_size(block_rows, positions, n_img,
                                                  sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t n_red = n_img * n_tiles
    cdef Py_ssize_t n_slots = _reduction_slots(n_red, w_size, sizeof(floating),
                                               groups * n_rb if n_rb > 1 else 1)
    cdef Py_ssize_t n_units = groups * n_rb * n_slots
    cdef bint narrow = _narrow_patches(cc, 1) if tap_blocks else _narrow_patches(cg, kw)
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* partial = dwp
    if n_slots > 1:
        partial = <floating*>_workspace(n_slots * w_size * sizeof(floating))
        if partial == NULL:
            raise MemoryError("fastconv: could not allocate filter-gradient partial sums")
    cdef Py_ssize_t unit, g, blk, u0, nu, v0, nv, c0, nc, rows, s, r, r0, r1, n, t, p0, count
    cdef floating* acc
    cdef const floating* dy
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = NULL
            if not direct:
                work = <floating*>_workspace(block_rows * tile * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
            for unit in prange(n_units, schedule="static"):
                if direct or work != NULL:
                    g = unit // (n_rb * n_slots)
                    blk = unit // n_slots % n_rb
                    s = unit % n_slots
                    # the block: taps (u0.., v0..) x channels c0.. (dW's rows in order)
                    if tap_blocks:
                        u0 = blk // n_cc // kw
                        v0 = blk // n_cc % kw
                        c0 = blk % n_cc * cc
                        nu = 1
                        nv = 1
                        nc = min(cc, cg - c0)
                    else:
                        u0 = blk * rb
                        v0 = 0
                        c0 = 0
                        nu = min(rb, kh - u0)
                        nv = kw
                        nc = cg
                    rows = nu * nv * nc
                    # this group's columns of the block's rows of slot s (row stride c_out)
                    acc = partial + s * w_size + ((u0 * kw + v0) * cg + c0) * c_out + g * og
                    for r in range(rows):
                        memset(acc + r * c_out, 0, og * sizeof(floating))
                    r0 = s * n_red // n_slots
                    r1 = (s + 1) * n_red // n_slots
                    for r in range(r0, r1):
                        n = r // n_tiles
                        t = r % n_tiles
                        p0 = t * tile
                        count = min(tile, positions - p0)
                        dy = gp + (n * positions + p0) * c_out + g * og
                        if direct:
                            gemm(TRANS, NO_TRANS, rows, og, count, <floating>1,
                                 xp + (n * in_plane + p0) * c_in + g * cg + c0, c_in,
                                 dy, c_out, <floating>1, acc, c_out)
                        elif narrow:
                            _pack_patches_nhwc_t(xp + n * in_plane * c_in, in_h, in_w, c_in,
                                                 g * cg + c0, nc, &row_off[u0], nu,
                                                 &col_off[v0], nv,
                                                 stride_h, stride_w, out_w, p0, count, work)
                            gemm(NO_TRANS, NO_TRANS, rows, og, count, <floating>1,
                                 work, count, dy, c_out, <floating>1, acc, c_out)
                        else:
                            _pack_patches_nhwc(xp + n * in_plane * c_in, in_h, in_w, c_in,
                                               g * cg + c0, nc, &row_off[u0], nu,
                                               &col_off[v0], nv,
                                               stride_h, stride_w, out_w, p0, count, work)
                            gemm(TRANS, NO_TRANS, rows, og, count, <floating>1,
                                 work, rows, dy, c_out, <floating>1, acc, c_out)
            free(work)
        if n_slots > 1 and status == STATUS_OK:
            with nogil:
                _add_slots(partial, n_slots, w_size, dwp, n_threads)
    finally:
        blas_serial_exit()
        if n_slots > 1:
            free(partial)
    _raise_for_status(status)


cdef enum:
    # channels per work item of the channel-blocked NHWC reductions
    CHANNEL_BLOCK = 256


cdef void _sum_rows_nhwc(const floating* gp, Py_ssize_t rows, Py_ssize_t c_out,
                         Py_ssize_t c0, Py_ssize_t cn, double* out) noexcept nogil:
    """``out[c] = sum_r gp[r, c0 + c]`` for c < cn (at most CHANNEL_BLOCK),
    in float64, two interleaved row accumulators, in a fixed order."""
    cdef double acc0[CHANNEL_BLOCK]
    cdef double acc1[CHANNEL_BLOCK]
    cdef Py_ssize_t r, c
    cdef const floating* row
    for c in range(cn):
        acc0[c] = 0
        acc1[c] = 0
    for r in range(0, rows - 1, 2):
        row = gp + r * c_out + c0
        for c in range(cn):
            acc0[c] = acc0[c] + row[c]
            acc1[c] = acc1[c] + row[c_out + c]
    if rows % 2:
        row = gp + (rows - 1) * c_out + c0
        for c in range(cn):
            acc0[c] = acc0[c] + row[c]
    for c in range(cn):
        out[c] = acc0[c] + acc1[c]


cdef enum:
    # rows per slot of the NHWC bias gradient, at least (shape-only split)
    BIAS_SLOT_ROWS = 1024


def conv2d_grad_bias_nhwc(const floating[:, :, :, ::1] grad_out,
                          floating[::1] grad_bias, int n_threads):
    """``grad_bias[o] = sum_{n, p, q} grad_out[n, p, q, o]``: rows summed
    along the contiguous channels in float64.  The rows are split into a
    number of slots that depends on the shape only (so a few channels still
    use every thread), each slot summed per block of channels in order, and
    the slots added in order: bitwise the same for any thread count."""
    cdef Py_ssize_t rows = grad_out.shape[0] * grad_out.shape[1] * grad_out.shape[2]
    cdef Py_ssize_t c_out = grad_out.shape[3]
    cdef Py_ssize_t item, s, b, c, c0, r0, r1
    cdef double total
    if c_out == 0:
        return
    if rows == 0:
        for c in range(c_out):
            grad_bias[c] = 0
        return
    cdef Py_ssize_t n_blocks = _ceil_div(c_out, CHANNEL_BLOCK)
    cdef Py_ssize_t n_slots = max(1, min(MAX_SLOTS, rows // BIAS_SLOT_ROWS))
    cdef double[:, ::1] partial = np.empty((n_slots, c_out), dtype=np.float64)
    cdef double* pp = &partial[0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    with nogil:
        for item in prange(n_slots * n_blocks, schedule="static", num_threads=n_threads):
            s = item // n_blocks
            b = item % n_blocks
            c0 = b * CHANNEL_BLOCK
            r0 = s * rows // n_slots
            r1 = (s + 1) * rows // n_slots
            _sum_rows_nhwc(gp + r0 * c_out, r1 - r0, c_out, c0,
                           min(CHANNEL_BLOCK, c_out - c0), pp + s * c_out + c0)
    for c in range(c_out):
        total = pp[c]
        for s in range(1, n_slots):
            total = total + pp[s * c_out + c]
        grad_bias[c] = <floating>total


def conv2d_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,
                           const floating[:, :, :, ::1] weight,
                           floating[:, :, :, ::1] grad_in,
                           Py_ssize_t stride_h, Py_ssize_t stride_w,
                           Py_ssize_t pad_top, Py_ssize_t pad_left,
                           Py_ssize_t dil_h, Py_ssize_t dil_w,
                           Py_ssize_t groups, int n_threads):
    """NHWC input gradient by rotated, in/out-swapped filters over the
    stride-dilated sensitivity map, phase by phase (see conv2d_grad_input):
    per phase, ``dx_phase = patches(dY) @ W_phase`` with ``W_phase[(u, v, o),
    c] = w[u, v, c, o]`` for the phase's taps.

    ``grad_in`` must be zero-filled on entry where positions lie in a
    stride phase without taps (they stay untouched); every other position
    is written by exactly one work item -- every position when the taps
    reach every phase (stride 1, or 3x3 with stride 2).
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[1]
    cdef Py_ssize_t in_w = grad_in.shape[2], c_in = grad_in.shape[3]
    cdef Py_ssize_t kh = weight.shape[0], kw = weight.shape[1]
    cdef Py_ssize_t cg = weight.shape[2], c_out = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef Py_ssize_t out_plane = out_h * out_w, in_plane = in_h * in_w
    if n_img == 0 or out_plane == 0 or c_out == 0 or cg == 0:
        return

    # ---- plan (GIL): phases, swapped filters per phase, work items
    plan = _grad_input_plan(np.asarray(weight), True, groups, n_img, in_h, in_w,
                            pad_top, pad_left, stride_h, stride_w, dil_h, dil_w,
                            sizeof(floating), n_threads)
    if plan is None:
        return
    cdef Py_ssize_t[:, ::1] meta = plan[0]
    cdef Py_ssize_t[:, ::1] tiles = plan[1]
    cdef Py_ssize_t[::1] r_off = plan[2]
    cdef Py_ssize_t[::1] c_off = plan[3]
    cdef const floating[::1] wpack = plan[4]
    cdef Py_ssize_t max_k = plan[5], tile = plan[6]
    cdef bint strided = stride_h != 1 or stride_w != 1
    cdef Py_ssize_t n_tile_items = tiles.shape[0]
    cdef Py_ssize_t n_items = n_img * groups * n_tile_items
    # 1x1, stride 1, unpadded: dY rows as they lie are the patch matrix
    cdef bint direct = (kh == 1 and kw == 1 and not strided
                        and pad_top == 0 and pad_left == 0)
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef const floating* wpp = &wpack[0]
    cdef const Py_ssize_t* rop = &r_off[0]
    cdef const Py_ssize_t* cop = &c_off[0]
    cdef Py_ssize_t item, n, g, ti, ph, p0, count, kp, grid_w, c, l, li, lj
    cdef floating* work = NULL
    cdef floating* res
    cdef floating* dst
    cdef floating* target
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    # workspace: [packed dY patches (tile x max_k)] [GEMM result (tile x cg)]
    cdef Py_ssize_t res_offset = 0 if direct else max_k * tile
    cdef Py_ssize_t work_size = res_offset + (cg * tile if strided else 0)

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = NULL
            if work_size > 0:
                work = <floating*>_workspace(work_size * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work_size == 0 or work != NULL:
                    n = item // (groups * n_tile_items)
                    g = (item // n_tile_items) % groups
                    ti = item % n_tile_items
                    ph = tiles[ti, 0]
                    p0 = tiles[ti, 1]
                    count = tiles[ti, 2]
                    kp = meta[ph, 9]
                    grid_w = meta[ph, 7]
                    if strided:
                        res = work + res_offset
                        dst = res
                    else:
                        # stride 1: the one phase covers the plane in order
                        dst = dxp + (n * in_plane + p0) * c_in + g * cg
                    if direct:
                        gemm(NO_TRANS, NO_TRANS, count, cg, kp, <floating>1,
                             gp + (n * out_plane + p0) * c_out + g * og, c_out,
                             wpp + meta[ph, 8] + g * kp * cg, cg,
                             <floating>0, dst, c_in)
                    else:
                        _pack_patches_nhwc(gp + n * out_plane * c_out, out_h, out_w, c_out,
                                           g * og, og, rop + meta[ph, 0], meta[ph, 1],
                                           cop + meta[ph, 2], meta[ph, 3],
                                           1, 1, grid_w, p0, count, work)
                        gemm(NO_TRANS, NO_TRANS, count, cg, kp, <floating>1,
                             work, kp, wpp + meta[ph, 8] + g * kp * cg, cg,
                             <floating>0, dst, cg if strided else c_in)
                    if strided:
                        for l in range(count):
                            li = (p0 + l) // grid_w
                            lj = (p0 + l) - li * grid_w
                            target = dxp + (n * in_plane
                                            + (meta[ph, 4] + li * stride_h) * in_w
                                            + meta[ph, 6] + lj * stride_w) * c_in + g * cg
                            for c in range(cg):
                                target[c] = res[l * cg + c]
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


def conv2d_grad_input_scatter_nhwc(const floating[:, :, :, ::1] grad_out,
                                   const floating[:, :, :, ::1] weight,
                                   floating[:, :, :, ::1] grad_in,
                                   Py_ssize_t stride_h, Py_ssize_t stride_w,
                                   Py_ssize_t pad_top, Py_ssize_t pad_left,
                                   Py_ssize_t dil_h, Py_ssize_t dil_w,
                                   Py_ssize_t groups, int n_threads):
    """The same NHWC input gradient visiting only the non-zeros of the
    dilated map (see conv2d_grad_input_scatter): ``dPatches = dY @ W_g^T``
    per tile, then col2im.  The cheaper order when C_in/groups is too small
    for an efficient gather GEMM (the caller picks by shape).

    Work items are (image, group): each clears its own slice of ``grad_in``
    (the image, or the group's channels of every pixel) and adds into it in
    a fixed order, so ``grad_in`` may hold anything on entry, as in the
    NCHW kernel (the clearing is parallel and leaves the slice in cache,
    where a zero-filled allocation is a serial pass over the whole array).
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[1]
    cdef Py_ssize_t in_w = grad_in.shape[2], c_in = grad_in.shape[3]
    cdef Py_ssize_t kh = weight.shape[0], kw = weight.shape[1]
    cdef Py_ssize_t cg = weight.shape[2], c_out = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, k_dim = kh * kw * cg
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef Py_ssize_t positions = out_h * out_w, in_plane = in_h * in_w
    if n_img == 0 or positions == 0 or c_out == 0 or cg == 0:
        np.asarray(grad_in)[...] = 0
        return
    cdef Py_ssize_t tile = _tile_size(k_dim, positions, 1, sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t n_items = n_img * groups
    cdef bint narrow = _narrow_patches(cg, kw)
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, t, p0, count, pix
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = <floating*>_workspace(k_dim * tile * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work != NULL:
                    n = item // groups
                    g = item % groups
                    if groups == 1:
                        memset(dxp + n * in_plane * c_in, 0,
                               in_plane * c_in * sizeof(floating))
                    else:
                        for pix in range(in_plane):
                            memset(dxp + (n * in_plane + pix) * c_in + g * cg, 0,
                                   cg * sizeof(floating))
                    for t in range(n_tiles):
                        p0 = t * tile
                        count = min(tile, positions - p0)
                        if narrow:
                            # dPatches^T (k_dim x count) = W_g @ dY[n, tile, group]^T
                            gemm(NO_TRANS, TRANS, k_dim, count, og, <floating>1,
                                 wp + g * og, c_out,
                                 gp + (n * positions + p0) * c_out + g * og, c_out,
                                 <floating>0, work, count)
                            _unpack_add_patches_nhwc_t(work, in_h, in_w, c_in, g * cg, cg,
                                                       &row_off[0], kh, &col_off[0], kw,
                                                       stride_h, stride_w, out_w, p0, count,
                                                       dxp + n * in_plane * c_in)
                            continue
                        # dPatches (count x k_dim) = dY[n, tile, group] @ W_g^T
                        gemm(NO_TRANS, TRANS, count, k_dim, og, <floating>1,
                             gp + (n * positions + p0) * c_out + g * og, c_out,
                             wp + g * og, c_out, <floating>0, work, k_dim)
                        _unpack_add_patches_nhwc(work, in_h, in_w, c_in, g * cg, cg,
                                                 &row_off[0], kh, &col_off[0], kw,
                                                 stride_h, stride_w, out_w, p0, count,
                                                 dxp + n * in_plane * c_in)
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


# --- depthwise (channel multiplier 1), along the channels ---------------------

cdef enum:
    # channels a depthwise pixel accumulates in registers at a time
    DW_BLOCK = 16


cdef void _dw_pixel(floating* dst, const floating** src, const floating** wts,
                    Py_ssize_t n_taps, Py_ssize_t ch) noexcept nogil:
    """``dst[c] = sum_t wts[t][c] * src[t][c]`` (taps in the given order):
    block by block of channels, each block's sums kept in registers across
    all taps and stored once (in the AVX2 build, four vectors of channels
    at a time: _depthwise_avx2.h, the same sums)."""
    cdef floating acc[DW_BLOCK]
    cdef Py_ssize_t blk, c0, c, t, cb
    cdef const floating* a
    cdef const floating* b
    if FC_DW_AVX2 and ch >= _avx2_lanes(sizeof(floating)):
        if floating is float:
            fc_dw_pixel_f32(dst, src, wts, n_taps, ch)
        else:
            fc_dw_pixel_f64(dst, src, wts, n_taps, ch)
        return
    for blk in range(ch // DW_BLOCK):
        c0 = blk * DW_BLOCK
        for c in range(DW_BLOCK):
            acc[c] = 0
        for t in range(n_taps):
            a = wts[t] + c0
            b = src[t] + c0
            for c in range(DW_BLOCK):
                acc[c] = acc[c] + a[c] * b[c]
        for c in range(DW_BLOCK):
            dst[c0 + c] = acc[c]
    c0 = ch - ch % DW_BLOCK
    cb = ch - c0
    if cb:
        for c in range(cb):
            acc[c] = 0
        for t in range(n_taps):
            a = wts[t] + c0
            b = src[t] + c0
            for c in range(cb):
                acc[c] = acc[c] + a[c] * b[c]
        for c in range(cb):
            dst[c0 + c] = acc[c]


def depthwise_forward_nhwc(const floating[:, :, :, ::1] x,
                           const floating[:, :, :, ::1] weight,
                           const floating[::1] bias,
                           bint has_bias,
                           floating[:, :, :, ::1] out,
                           Py_ssize_t stride_h, Py_ssize_t stride_w,
                           Py_ssize_t pad_top, Py_ssize_t pad_left,
                           Py_ssize_t dil_h, Py_ssize_t dil_w,
                           Py_ssize_t groups, int n_threads):
    """Depthwise NHWC forward (groups == C_in == C_out): every output pixel
    accumulates its in-image taps as vector multiply-adds along C.  Taps
    in the zero padding are skipped (the caller routes non-finite weights to
    the GEMM, where 0 * inf stays NaN as in the textbook)."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t ch = x.shape[3]
    cdef Py_ssize_t kh = weight.shape[0], kw = weight.shape[1]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    if n_img == 0 or out_h * out_w == 0 or ch == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t row, n, p, q, u, v, ii, jj, c, t
    cdef Py_ssize_t taps = kh * kw
    cdef floating* dst
    cdef const floating** src = NULL
    cdef const floating** wts
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        # per thread: the pixel's in-image taps (input and weight rows)
        src = <const floating**>_workspace(2 * taps * sizeof(floating*))
        if src == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for row in prange(n_img * out_h, schedule="static"):
            if src != NULL:
                wts = src + taps
                n = row // out_h
                p = row % out_h
                for q in range(out_w):
                    t = 0
                    for u in range(kh):
                        ii = p * stride_h + u * dil_h - pad_top
                        if ii < 0 or ii >= in_h:
                            continue
                        for v in range(kw):
                            jj = q * stride_w + v * dil_w - pad_left
                            if jj < 0 or jj >= in_w:
                                continue
                            src[t] = xp + ((n * in_h + ii) * in_w + jj) * ch
                            wts[t] = wp + (u * kw + v) * ch
                            t = t + 1
                    dst = yp + (row * out_w + q) * ch
                    _dw_pixel(dst, src, wts, t, ch)
                    if has_bias:
                        for c in range(ch):
                            dst[c] = dst[c] + bp[c]
        free(src)
    _raise_for_status(status)


def depthwise_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,
                              const floating[:, :, :, ::1] weight,
                              floating[:, :, :, ::1] grad_in,
                              Py_ssize_t stride_h, Py_ssize_t stride_w,
                              Py_ssize_t pad_top, Py_ssize_t pad_left,
                              Py_ssize_t dil_h, Py_ssize_t dil_w,
                              Py_ssize_t groups, int n_threads):
    """Depthwise NHWC input gradient, the textbook full correlation read as
    a gather: ``dx[i, j, c]`` sums ``w[u, v, c] * dY[p, q, c]`` over the
    taps of the 180-degree-rotated filter (u, v descending) whose position
    ``p*stride + u*dil - pad = i`` (likewise j) lands on a sensitivity --
    the inserted zeros of the dilated map are never multiplied.  Writes
    every element."""
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[1]
    cdef Py_ssize_t in_w = grad_in.shape[2], ch = grad_in.shape[3]
    cdef Py_ssize_t kh = weight.shape[0], kw = weight.shape[1]
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    if n_img == 0 or in_h * in_w == 0 or ch == 0:
        return
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t row, n, i, j, u, v, a, b, p, q, t
    cdef Py_ssize_t taps = kh * kw
    cdef const floating** src = NULL
    cdef const floating** wts
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        src = <const floating**>_workspace(2 * taps * sizeof(floating*))
        if src == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for row in prange(n_img * in_h, schedule="static"):
            if src != NULL:
                wts = src + taps
                n = row // in_h
                i = row % in_h
                for j in range(in_w):
                    t = 0
                    for u in range(kh - 1, -1, -1):
                        a = i + pad_top - u * dil_h
                        if a < 0 or a % stride_h:
                            continue
                        p = a // stride_h
                        if p >= out_h:
                            continue
                        for v in range(kw - 1, -1, -1):
                            b = j + pad_left - v * dil_w
                            if b < 0 or b % stride_w:
                                continue
                            q = b // stride_w
                            if q >= out_w:
                                continue
                            src[t] = gp + ((n * out_h + p) * out_w + q) * ch
                            wts[t] = wp + (u * kw + v) * ch
                            t = t + 1
                    _dw_pixel(dxp + (row * in_w + j) * ch, src, wts, t, ch)
        free(src)
    _raise_for_status(status)


cdef void _depthwise_grad_weight_rows_nhwc(const floating* xp, const floating* gp,
                                           floating* acc, Py_ssize_t r0, Py_ssize_t r1,
                                           Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t ch,
                                           Py_ssize_t out_h, Py_ssize_t out_w,
                                           Py_ssize_t kh, Py_ssize_t kw,
                                           Py_ssize_t stride_h, Py_ssize_t stride_w,
                                           Py_ssize_t pad_top, Py_ssize_t pad_left,
                                           Py_ssize_t dil_h, Py_ssize_t dil_w) noexcept nogil:
    """Add the contributions of output rows [r0, r1) (flattened n*out_h + p)
    to ``acc[(u*kw + v)*ch + c]``, in row, column, tap order.

    A tap in the zero padding adds ``dY * 0`` as the textbook does: nothing
    (+-0) for a finite dY, NaN for an inf or NaN one.  Only pixels at the
    border pay for it, where a scan of the whole dY for non-finite values
    (to send them elsewhere) took a fifth of the dw3x3 filter gradient."""
    cdef Py_ssize_t row, n, p, q, u, v, ii, jj, c
    cdef const floating* g
    cdef const floating* src
    cdef floating* a
    # output rows and columns whose taps all lie inside the input
    cdef Span inner_rows = _inner_columns((kh - 1) * dil_h + 1, stride_h, pad_top, in_h, out_h)
    cdef Span inner = _inner_columns((kw - 1) * dil_w + 1, stride_w, pad_left, in_w, out_w)
    for row in range(r0, r1):
        n = row // out_h
        p = row % out_h
        for q in range(out_w):
            g = gp + (row * out_w + q) * ch
            for u in range(kh):
                ii = p * stride_h + u * dil_h - pad_top
                if ii < 0 or ii >= in_h:
                    continue
                for v in range(kw):
                    jj = q * stride_w + v * dil_w - pad_left
                    if jj < 0 or jj >= in_w:
                        continue
                    src = xp + ((n * in_h + ii) * in_w + jj) * ch
                    a = acc + (u * kw + v) * ch
                    for c in range(ch):
                        a[c] = a[c] + g[c] * src[c]
            if inner_rows.lo <= p < inner_rows.hi and inner.lo <= q < inner.hi:
                continue
            # a border pixel: its taps in the padding (kept out of the loop
            # above, which stays as lean as without them)
            for u in range(kh):
                ii = p * stride_h + u * dil_h - pad_top
                for v in range(kw):
                    jj = q * stride_w + v * dil_w - pad_left
                    if ii < 0 or ii >= in_h or jj < 0 or jj >= in_w:
                        a = acc + (u * kw + v) * ch
                        for c in range(ch):
                            a[c] = a[c] + g[c] * <floating>0


def depthwise_grad_weight_nhwc(const floating[:, :, :, ::1] x,
                               const floating[:, :, :, ::1] grad_out,
                               floating[:, :, :, ::1] grad_weight,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_top, Py_ssize_t pad_left,
                               Py_ssize_t dil_h, Py_ssize_t dil_w,
                               Py_ssize_t groups, int n_threads):
    """Depthwise NHWC filter gradient: the output rows are split into a
    fixed number of slots (shape only), each summed in order into its own
    buffer, the buffers added in order -- bitwise the same for any thread
    count.  Taps in the zero padding multiply dY by zero, so an inf or NaN
    sensitivity gives the textbook's NaN (no scan for them beforehand)."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t ch = x.shape[3]
    cdef Py_ssize_t kh = grad_weight.shape[0], kw = grad_weight.shape[1]
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef Py_ssize_t w_size = kh * kw * ch
    cdef Py_ssize_t n_rows = n_img * out_h
    if w_size == 0:
        return
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    memset(dwp, 0, w_size * sizeof(floating))
    if n_rows == 0 or out_w == 0:
        return
    cdef Py_ssize_t n_slots = _reduction_slots(n_rows, w_size, sizeof(floating))
    cdef floating* partial = dwp
    if n_slots > 1:
        partial = <floating*>_workspace(n_slots * w_size * sizeof(floating))
        if partial == NULL:
            raise MemoryError("fastconv: could not allocate filter-gradient partial sums")
        memset(partial, 0, n_slots * w_size * sizeof(floating))
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef Py_ssize_t s
    try:
        with nogil:
            for s in prange(n_slots, schedule="static", num_threads=n_threads):
                _depthwise_grad_weight_rows_nhwc(
                    xp, gp, partial + s * w_size,
                    s * n_rows // n_slots, (s + 1) * n_rows // n_slots,
                    in_h, in_w, ch, out_h, out_w, kh, kw, stride_h, stride_w,
                    pad_top, pad_left, dil_h, dil_w)
            if n_slots > 1:
                _add_slots(partial, n_slots, w_size, dwp, n_threads)
    finally:
        if n_slots > 1:
            free(partial)


# --- pooling, along the channels -----------------------------------------------

def max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                            floating[:, :, :, ::1] out,
                            int64_t[:, :, :, ::1] indices,
                            Py_ssize_t k_h, Py_ssize_t k_w,
                            Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w, int n_threads):
    """NHWC window maxima and flat in-plane indices ``h*W + w`` (the rules
    of max_pool2d_forward: first maximum in row-major window order, NaN
    wins, a later NaN over an earlier one).  Each window tap is one vector
    select along the contiguous channels."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t ch = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    if n_img == 0 or out_h * out_w == 0 or ch == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef int64_t* ip = &indices[0, 0, 0, 0]
    cdef Py_ssize_t row, n, p, q, i, j, c, h0, h1, w0, w1
    cdef int64_t flat
    cdef floating val, cur
    cdef bint take
    cdef floating* best
    cdef int64_t* bidx
    cdef const floating* src
    # a pixel's window in registers, whole AVX2 vectors along C (flat
    # indices in int32 lanes for float)
    cdef bint avx2 = (FC_POOL_AVX2 and POOL_FAST_PATHS and ch >= _avx2_lanes(sizeof(floating))
                      and in_h * in_w < (1 << 31))
    with nogil:
        for row in prange(n_img * out_h, schedule="static", num_threads=n_threads):
            n = row // out_h
            p = row % out_h
            h0 = max(p * stride_h - pad_h, 0)
            h1 = min(p * stride_h - pad_h + k_h, in_h)
            for q in range(out_w):
                w0 = max(q * stride_w - pad_w, 0)
                w1 = min(q * stride_w - pad_w + k_w, in_w)
                best = yp + (row * out_w + q) * ch
                bidx = ip + (row * out_w + q) * ch
                if avx2:
                    if floating is float:
                        fc_max_px_f32(xp + n * in_h * in_w * ch, in_w, ch, h0, h1, w0, w1,
                                      best, bidx)
                    else:
                        fc_max_px_f64(xp + n * in_h * in_w * ch, in_w, ch, h0, h1, w0, w1,
                                      best, bidx)
                    continue
                flat = h0 * in_w + w0
                for c in range(ch):
                    best[c] = -INFINITY
                    bidx[c] = flat
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        src = xp + ((n * in_h + i) * in_w + j) * ch
                        flat = i * in_w + j
                        for c in range(ch):
                            val = src[c]
                            cur = best[c]
                            take = (val > cur) | (val != val)
                            best[c] = val if take else cur
                            bidx[c] = flat if take else bidx[c]


cdef bint _max_backward_image_k2s2_nhwc(const floating* g, const int64_t* idx,
                                        floating* dx, Py_ssize_t in_h, Py_ssize_t in_w,
                                        Py_ssize_t out_h, Py_ssize_t out_w,
                                        Py_ssize_t ch) noexcept nogil:
    """One image of the NHWC max-pool gradient written once, pixel block by
    pixel block (AVX2, ``_pool_avx2.h``), when every index lies in its own
    2x2 block of pixels (see _max_backward_plane_k2s2: disjoint blocks take
    at most one contribution per element, so each element is ``+0.0 + g``
    or ``+0.0``, as the scatter makes it).  Returns False (the image partly
    written) at the first pixel with an index outside its block."""
    cdef Py_ssize_t p, q, l
    cdef int64_t f00
    for p in range(out_h):
        for q in range(out_w):
            l = p * out_w + q
            f00 = 2 * p * in_w + 2 * q
            if floating is float:
                if not fc_max_grad_px_f32(g + l * ch, idx + l * ch, dx + f00 * ch, ch, f00,
                                          in_w):
                    return False
            else:
                if not fc_max_grad_px_f64(g + l * ch, idx + l * ch, dx + f00 * ch, ch, f00,
                                          in_w):
                    return False
        _zero_block_row_tails(dx + 2 * p * in_w * ch, in_w, out_w, ch)
    memset(dx + 2 * out_h * in_w * ch, 0, (in_h - 2 * out_h) * in_w * ch * sizeof(floating))
    return True


def max_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,
                             const int64_t[:, :, :, ::1] indices,
                             floating[:, :, :, ::1] grad_in, int n_threads):
    """Route each NHWC ``grad_out`` element to its input pixel.

    Work items are (image, block of channels): each zero-fills its part of
    ``grad_in`` and adds its sensitivities in output order, so every element
    is written by one item in a fixed order.  An index outside ``[0, H*W)``
    is never written and makes the call raise ``ValueError``.  Where the
    geometry allows, a first parallel pass over whole images writes each
    image whose indices all lie in their own 2x2 blocks (2x2, stride-2
    pooling) once instead (``_max_backward_image_k2s2_nhwc``; the same
    values); only the other images take the scatter items.
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], ch = grad_in.shape[3]
    cdef Py_ssize_t in_plane = grad_in.shape[1] * grad_in.shape[2]
    cdef Py_ssize_t out_plane = grad_out.shape[1] * grad_out.shape[2]
    if n_img == 0 or in_plane == 0 or ch == 0:
        return
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const int64_t* ip = &indices[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t in_h = grad_in.shape[1], in_w = grad_in.shape[2]
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    cdef bint blocks = (FC_POOL_AVX2 and POOL_FAST_PATHS and 2 * out_h <= in_h
                        and 2 * out_w <= in_w and ch >= _avx2_lanes(sizeof(floating)))
    # images the first pass wrote (it stops at its first index outside a
    # 2x2 block, so other pools pay for one pixel per image)
    written_arr = np.zeros(n_img, dtype=np.uint8)
    cdef uint8_t[::1] written = written_arr
    cdef Py_ssize_t n_blocks = _ceil_div(ch, CHANNEL_BLOCK)
    cdef Py_ssize_t item, n, c0, cn, pix, l, c
    cdef int64_t k
    cdef const floating* g
    cdef const int64_t* idx
    cdef floating* img
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil:
        if blocks:
            for n in prange(n_img, schedule="static", num_threads=n_threads):
                written[n] = _max_backward_image_k2s2_nhwc(
                    gp + n * out_plane * ch, ip + n * out_plane * ch,
                    dxp + n * in_plane * ch, in_h, in_w, out_h, out_w, ch)
        for item in prange(n_img * n_blocks, schedule="static", num_threads=n_threads):
            n = item // n_blocks
            if written[n]:
                continue
            c0 = (item % n_blocks) * CHANNEL_BLOCK
            cn = min(CHANNEL_BLOCK, ch - c0)
            img = dxp + n * in_plane * ch + c0
            if cn == ch:
                memset(img, 0, in_plane * ch * sizeof(floating))
            else:
                for pix in range(in_plane):
                    memset(img + pix * ch, 0, cn * sizeof(floating))
            for l in range(out_plane):
                g = gp + (n * out_plane + l) * ch + c0
                idx = ip + (n * out_plane + l) * ch + c0
                for c in range(cn):
                    k = idx[c]
                    if k < 0 or k >= in_plane:
                        status_p[0] = STATUS_BAD_INDEX
                    else:
                        img[k * ch + c] = img[k * ch + c] + g[c]
    _raise_for_status(status)


cdef inline void _divide_by(floating* values, Py_ssize_t n, double div,
                            bint float_exact) noexcept nogil:
    """``values[c] = values[c] / div`` rounded once (see _divide_row)."""
    cdef Py_ssize_t c
    cdef float fdiv
    if floating is float:
        if float_exact:
            fdiv = <float>div
            for c in range(n):
                values[c] = values[c] / fdiv
            return
    for c in range(n):
        values[c] = <floating>(values[c] / div)


cdef inline void _divide_into(const floating* src, floating* dst, Py_ssize_t n, double div,
                              bint float_exact) noexcept nogil:
    """``dst[c] = src[c] / div`` rounded once (see _divide_row)."""
    cdef Py_ssize_t c
    cdef float fdiv
    if floating is float:
        if float_exact:
            fdiv = <float>div
            for c in range(n):
                dst[c] = src[c] / fdiv
            return
    for c in range(n):
        dst[c] = <floating>(src[c] / div)


def avg_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                            floating[:, :, :, ::1] out,
                            Py_ssize_t k_h, Py_ssize_t k_w,
                            Py_ssize_t stride_h, Py_ssize_t stride_w,
                            Py_ssize_t pad_h, Py_ssize_t pad_w,
                            bint count_include_pad, int n_threads):
    """NHWC window means: each window summed in row-major order along the
    channels, divided by PyTorch's divisor (see avg_pool2d_forward; the same
    sums and divisions, so the same bits as the NCHW kernel)."""
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[1], in_w = x.shape[2]
    cdef Py_ssize_t ch = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    if n_img == 0 or out_h * out_w == 0 or ch == 0:
        return
    cdef const double[::1] col_div = _avg_col_divisors(k_w, stride_w, pad_w, in_w, out_w,
                                                       count_include_pad)
    cdef const double* cdiv = &col_div[0]
    cdef bint float_exact = _float_exact_divisors(k_h, k_w)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t row, n, p, q, i, j, c
    cdef Window wh, ww
    cdef double row_div, div
    cdef floating* acc
    cdef const floating* src
    # (float: the division in float32 is exact only for float-exact divisors)
    cdef bint avx2 = (FC_POOL_AVX2 and POOL_FAST_PATHS and ch >= _avx2_lanes(sizeof(floating))
                      and (float_exact or floating is double))
    with nogil:
        for row in prange(n_img * out_h, schedule="static", num_threads=n_threads):
            n = row // out_h
            p = row % out_h
            wh = _avg_window(p, k_h, stride_h, pad_h, in_h)
            row_div = <double>wh.padded if count_include_pad else <double>(wh.stop - wh.start)
            for q in range(out_w):
                ww = _avg_window(q, k_w, stride_w, pad_w, in_w)
                acc = yp + (row * out_w + q) * ch
                if avx2:
                    # a pixel's window summed in registers, whole AVX2
                    # vectors along C
                    if floating is float:
                        fc_avg_px_f32(xp + n * in_h * in_w * ch, in_w, ch, wh.start, wh.stop,
                                      ww.start, ww.stop, acc, <float>(row_div * cdiv[q]))
                    else:
                        fc_avg_px_f64(xp + n * in_h * in_w * ch, in_w, ch, wh.start, wh.stop,
                                      ww.start, ww.stop, acc, row_div * cdiv[q])
                    continue
                for c in range(ch):
                    acc[c] = 0
                for i in range(wh.start, wh.stop):
                    for j in range(ww.start, ww.stop):
                        src = xp + ((n * in_h + i) * in_w + j) * ch
                        for c in range(ch):
                            acc[c] = acc[c] + src[c]
                div = row_div * cdiv[q]
                _divide_by(acc, ch, div, float_exact)


cdef enum:
    # output rows per work item of the NHWC average-pool backward
    AVG_CHUNK_ROWS = 8


cdef void _avg_backward_rows_k2s2_nhwc(const floating* g, floating* dx, floating* share,
                                       Py_ssize_t p0, Py_ssize_t p1,
                                       Py_ssize_t in_h, Py_ssize_t in_w,
                                       Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t ch,
                                       Py_ssize_t pad_h, Py_ssize_t stride_h,
                                       bint count_include_pad, const double* cdiv,
                                       bint float_exact) noexcept nogil:
    """Output rows [p0, p1) of one image's 2x2, stride-2, unpadded NHWC
    average-pool gradient, windows inside the input: the input rows 2p and
    2p+1 (and, for the last rows, the rows no window covers) written once,
    ``+0.0 + share`` -- the gather's value for a single covering window."""
    cdef Py_ssize_t p, q, a, b, c
    cdef Window wh
    cdef double row_div
    cdef floating zero = 0
    cdef floating* dst
    for p in range(p0, p1):
        wh = _avg_window(p, 2, stride_h, pad_h, in_h)
        row_div = <double>wh.padded if count_include_pad else <double>(wh.stop - wh.start)
        for q in range(out_w):
            if FC_POOL_AVX2 and ch >= _avx2_lanes(sizeof(floating)) and (
                    float_exact or floating is double):
                if floating is float:
                    fc_avg_grad_px_k2_f32(g + (p * out_w + q) * ch,
                                          dx + (2 * p * in_w + 2 * q) * ch, ch, in_w,
                                          <float>(row_div * cdiv[q]))
                else:
                    fc_avg_grad_px_k2_f64(g + (p * out_w + q) * ch,
                                          dx + (2 * p * in_w + 2 * q) * ch, ch, in_w,
                                          row_div * cdiv[q])
                continue
            _divide_into(g + (p * out_w + q) * ch, share, ch, row_div * cdiv[q], float_exact)
            for a in range(2):
                for b in range(2):
                    dst = dx + ((2 * p + a) * in_w + 2 * q + b) * ch
                    for c in range(ch):
                        dst[c] = zero + share[c]
        _zero_block_row_tails(dx + 2 * p * in_w * ch, in_w, out_w, ch)
    if p1 == out_h:
        memset(dx + 2 * out_h * in_w * ch, 0, (in_h - 2 * out_h) * in_w * ch * sizeof(floating))


cdef void _avg_spread_row_k3s2_nhwc(const floating* share, floating* h, Py_ssize_t in_w,
                                    Py_ssize_t out_w, Py_ssize_t ch) noexcept nogil:
    """One output row's NHWC spread row for 3-wide, stride-2, unpadded
    windows inside the row: pixel 2q gets (+0.0 + s[q]) + s[q-1], pixel
    2q+1 gets +0.0 + s[q] (``share`` holds s[-1] = 0, s[0..out_w-1] and
    s[out_w] = 0 pixels of ch channels) -- the NCHW spread row's sums."""
    cdef Py_ssize_t q, c, j
    cdef floating zero = 0
    cdef const floating* cur
    cdef const floating* prev
    cdef floating* d
    for q in range(out_w + 1):
        cur = share + (q + 1) * ch
        prev = share + q * ch
        j = 2 * q
        if j < in_w:
            d = h + j * ch
            for c in range(ch):
                d[c] = (zero + cur[c]) + prev[c]
        if j + 1 < in_w:
            d = h + (j + 1) * ch
            for c in range(ch):
                d[c] = zero + cur[c]
    if 2 * out_w + 2 < in_w:
        memset(h + (2 * out_w + 2) * ch, 0, (in_w - 2 * out_w - 2) * ch * sizeof(floating))


cdef void _avg_backward_rows_k3s2_nhwc(const floating* g, floating* dx, floating* share,
                                       floating* h_prev, Py_ssize_t p0, Py_ssize_t p1,
                                       Py_ssize_t in_h, Py_ssize_t in_w,
                                       Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t ch,
                                       bint count_include_pad, const double* cdiv,
                                       bint float_exact) noexcept nogil:
    """Output rows [p0, p1) of one image's 3x3, stride-2, unpadded NHWC
    average-pool gradient, windows inside the input, separable as in NCHW
    (fc_avg_grad_plane_k3s2, the same sums and bits): input row 2p+1 is
    output row p's spread row H_p, written in place, and row 2p is
    H_{p-1} + H_p, H_{p-1} being row 2p-1 (or, at the chunk's start,
    recomputed into ``h_prev``).  The last chunk also writes row 2*out_h
    (H of the last row) and zeros below.  ``share`` holds out_w + 2 pixels
    whose first and last stay zero."""
    cdef Py_ssize_t p, q, j
    cdef Py_ssize_t row = in_w * ch
    cdef Window wh
    cdef double row_div
    cdef floating zero = 0
    cdef const floating* prev
    cdef floating* even
    cdef floating* odd
    for p in range(max(p0 - 1, 0), p1):
        wh = _avg_window(p, 3, 2, 0, in_h)
        row_div = <double>wh.padded if count_include_pad else <double>(wh.stop - wh.start)
        for q in range(out_w):
            _divide_into(g + (p * out_w + q) * ch, share + (q + 1) * ch, ch,
                         row_div * cdiv[q], float_exact)
        if p < p0:
            _avg_spread_row_k3s2_nhwc(share, h_prev, in_w, out_w, ch)
            continue
        odd = dx + (2 * p + 1) * row
        even = dx + 2 * p * row
        _avg_spread_row_k3s2_nhwc(share, odd, in_w, out_w, ch)
        if p == 0:
            for j in range(row):
                even[j] = odd[j]
        else:
            prev = h_prev if p == p0 else even - row
            for j in range(row):
                even[j] = prev[j] + odd[j]
    if p1 == out_h:
        even = dx + 2 * out_h * row
        prev = even - row
        for j in range(row):
            even[j] = prev[j]
        memset(even + row, 0, (in_h - 2 * out_h - 1) * row * sizeof(floating))


def avg_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,
                             floating[:, :, :, ::1] grad_in,
                             Py_ssize_t k_h, Py_ssize_t k_w,
                             Py_ssize_t stride_h, Py_ssize_t stride_w,
                             Py_ssize_t pad_h, Py_ssize_t pad_w,
                             bint count_include_pad, int n_threads):
    """NHWC average-pooling gradient as a gather: each input pixel sums the
    shares (sensitivity / divisor) of the windows covering it along the
    channels, in the NCHW kernels' order (each output row's shares with the
    column descending, then the rows ascending), so both layouts give the
    same bits; every element is written once.  2x2 and 3x3, stride-2,
    unpadded windows inside the input write rows directly instead
    (``_avg_backward_rows_k2s2_nhwc``, ``_avg_backward_rows_k3s2_nhwc``;
    the same sums).

    Work items are (image, chunk of AVG_CHUNK_ROWS output rows).  An item
    divides its rows' sensitivities into a per-thread buffer, together with
    the few earlier rows that overlapping windows also need (recomputed,
    identically, by the item before), and writes the input rows whose last
    covering window is in its chunk.
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[1]
    cdef Py_ssize_t in_w = grad_in.shape[2], ch = grad_in.shape[3]
    cdef Py_ssize_t out_h = grad_out.shape[1], out_w = grad_out.shape[2]
    if n_img == 0 or in_h * in_w == 0 or ch == 0:
        return
    cdef const double[::1] col_div = _avg_col_divisors(k_w, stride_w, pad_w, in_w, out_w,
                                                       count_include_pad)
    cdef const double* cdiv = &col_div[0]
    cdef bint float_exact = _float_exact_divisors(k_h, k_w)
    cdef Py_ssize_t n_chunks = _ceil_div(out_h, AVG_CHUNK_ROWS)
    # the general gather's tables (below), not needed by the square paths
    cdef Py_ssize_t[::1] p_lo, p_hi, q_lo, q_hi, first_row
    # windows covering one input row: at most ceil(k_h / stride_h) rows
    cdef Py_ssize_t back = _ceil_div(k_h, stride_h) - 1
    cdef Py_ssize_t row_len = out_w * ch
    cdef Py_ssize_t buf_rows = min(AVG_CHUNK_ROWS + back, out_h)
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t item, n, ck, p0, p1, pb, p, q, i, j, c
    cdef Window wh
    cdef double row_div
    cdef floating* buf = NULL
    cdef floating* dst
    cdef const floating* src
    cdef floating zero = 0
    cdef floating total, row_sum
    # 2x2 / stride 2 / no padding, windows inside the input: each input
    # element is in at most one window, so it is written straight away
    cdef bint avx2 = FC_POOL_AVX2 and POOL_FAST_PATHS and ch >= _avx2_lanes(sizeof(floating))
    cdef bint square2 = (POOL_FAST_PATHS and k_h == 2 and k_w == 2 and stride_h == 2
                         and stride_w == 2 and pad_h == 0 and pad_w == 0
                         and 2 * out_h <= in_h and 2 * out_w <= in_w)
    # 3x3 / stride 2 / no padding, windows inside the input: separable rows
    cdef bint square3 = (POOL_FAST_PATHS and k_h == 3 and k_w == 3 and stride_h == 2
                         and stride_w == 2 and pad_h == 0 and pad_w == 0
                         and 2 * out_h + 1 <= in_h and 2 * out_w + 1 <= in_w)
    cdef Py_ssize_t buf_len = buf_rows * row_len
    if square3:
        buf_len = (out_w + 2) * ch + in_w * ch
    if not (square2 or square3):
        # (NumPy calls cost 10-20 us a call; the square paths skip them)
        # covering windows of every input row / column: [lo, hi]
        ii = np.arange(in_h, dtype=np.intp)
        jj = np.arange(in_w, dtype=np.intp)
        p_hi_arr = np.minimum(out_h - 1, (ii + pad_h) // stride_h)
        p_lo = np.maximum(0, -((k_h - 1 - ii - pad_h) // stride_h))
        p_hi = p_hi_arr
        q_lo = np.maximum(0, -((k_w - 1 - jj - pad_w) // stride_w))
        q_hi = np.minimum(out_w - 1, (jj + pad_w) // stride_w)
        # an input row belongs to the chunk of its last covering window
        # (rows no window covers have p_lo > p_hi and are zero-filled by
        # that chunk); p_hi never decreases, so each chunk owns a
        # contiguous run of rows
        first_row = np.searchsorted(
            p_hi_arr, np.arange(n_chunks + 1, dtype=np.intp) * AVG_CHUNK_ROWS).astype(np.intp)
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        buf = <floating*>_workspace(buf_len * sizeof(floating))
        if buf == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for item in prange(n_img * n_chunks, schedule="static"):
            if buf != NULL:
                n = item // n_chunks
                ck = item % n_chunks
                p0 = ck * AVG_CHUNK_ROWS
                p1 = min(out_h, p0 + AVG_CHUNK_ROWS)
                if square3:
                    # (the share row's first and last pixels must be zero)
                    memset(buf, 0, ch * sizeof(floating))
                    memset(buf + (out_w + 1) * ch, 0, ch * sizeof(floating))
                    _avg_backward_rows_k3s2_nhwc(gp + n * out_h * out_w * ch,
                                                 dxp + n * in_h * in_w * ch, buf,
                                                 buf + (out_w + 2) * ch, p0, p1,
                                                 in_h, in_w, out_h, out_w, ch,
                                                 count_include_pad, cdiv, float_exact)
                    continue
                if square2:
                    _avg_backward_rows_k2s2_nhwc(gp + n * out_h * out_w * ch,
                                                 dxp + n * in_h * in_w * ch, buf, p0, p1,
                                                 in_h, in_w, out_h, out_w, ch,
                                                 pad_h, stride_h, count_include_pad,
                                                 cdiv, float_exact)
                    continue
                pb = max(0, p0 - back)          # first share row held in buf
                for p in range(pb, p1):
                    wh = _avg_window(p, k_h, stride_h, pad_h, in_h)
                    row_div = (<double>wh.padded if count_include_pad
                               else <double>(wh.stop - wh.start))
                    for q in range(out_w):
                        _divide_into(gp + ((n * out_h + p) * out_w + q) * ch,
                                     buf + (p - pb) * row_len + q * ch, ch,
                                     row_div * cdiv[q], float_exact)
                for i in range(first_row[ck], first_row[ck + 1]):
                    for j in range(in_w):
                        dst = dxp + ((n * in_h + i) * in_w + j) * ch
                        if p_lo[i] > p_hi[i] or q_lo[j] > q_hi[j]:
                            memset(dst, 0, ch * sizeof(floating))
                            continue
                        if avx2:
                            # the same sums in registers, whole vectors along C
                            if floating is float:
                                fc_avg_gather_px_f32(buf, pb, row_len, ch, p_lo[i], p_hi[i],
                                                     q_lo[j], q_hi[j], dst)
                            else:
                                fc_avg_gather_px_f64(buf, pb, row_len, ch, p_lo[i], p_hi[i],
                                                     q_lo[j], q_hi[j], dst)
                            continue
                        # as fc_avg_gather_px: row sums (q descending) added
                        # for p ascending, the NCHW kernels' order
                        for c in range(ch):
                            total = zero
                            for p in range(p_lo[i], p_hi[i] + 1):
                                row_sum = zero
                                for q in range(q_hi[j], q_lo[j] - 1, -1):
                                    row_sum = row_sum + buf[(p - pb) * row_len + q * ch + c]
                                total = total + row_sum
                            dst[c] = total
        free(buf)
    _raise_for_status(status)
