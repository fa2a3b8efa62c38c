# Phase images of dilated convolutions (included by _kernels.pyx).
#
# A correlation with dilation (dh, dw) and stride 1 samples the input only
# at one residue of the row modulo dh and of the column modulo dw per
# output position; when the plane, the leading paddings and the output are
# multiples of the dilation, output phase (p, q) -- rows p::dh, columns
# q::dw -- is the undilated correlation of input phase (p, q) with padding
# pad / dilation.  functional.py splits such a layer into its dh*dw phase
# images, stacked along the batch (phase-major: image (p*dw + q)*N + n),
# runs the undilated kernels on them (Winograd for 3x3) and merges the
# output phases back.  These two copies are that split and merge: one row
# of the full plane at a time, in parallel.
#
# Rows: NCHW has N*C*H rows of W values, NHWC N*H rows of W pixels of C
# values; `chans` is the C that counts planes per image (C in NCHW, 1 in
# NHWC) and `elems` the values per pixel (1 in NCHW, C in NHWC).


cdef inline void _column_phases(floating* row, floating* phase0, Py_ssize_t phase_stride,
                                Py_ssize_t dil_w, Py_ssize_t wp, bint merge) noexcept nogil:
    """``_phase_row`` with one value per pixel (NCHW): called with ``dil_w``
    a constant for the usual dilations, whose strided loops the compiler
    then vectorizes (with dil_w not known they ran 4-5x slower at 3 and 4:
    8 x 64 x 48 x 48 float32, 2 threads, 0.94-0.99 against 0.18-0.25 ms)."""
    cdef Py_ssize_t q, j
    if merge:
        for j in range(wp):
            for q in range(dil_w):
                row[j * dil_w + q] = phase0[q * phase_stride + j]
    else:
        for j in range(wp):
            for q in range(dil_w):
                phase0[q * phase_stride + j] = row[j * dil_w + q]


cdef inline void _phase_row(floating* row, floating* phase0, Py_ssize_t phase_stride,
                            Py_ssize_t dil_w, Py_ssize_t width, Py_ssize_t elems,
                            bint merge) noexcept nogil:
    """Column q::dil_w of the full row ``row`` (``width`` pixels of
    ``elems`` values) to or from (``merge``) the row of phase q, which
    starts at ``phase0 + q*phase_stride``."""
    cdef Py_ssize_t wp = width // dil_w, q, j, e
    cdef floating* ph
    cdef floating* px
    if dil_w == 1:
        if merge:
            memcpy(row, phase0, width * elems * sizeof(floating))
        else:
            memcpy(phase0, row, width * elems * sizeof(floating))
    elif elems == 1:
        if dil_w == 2:
            _column_phases(row, phase0, phase_stride, 2, wp, merge)
        elif dil_w == 3:
            _column_phases(row, phase0, phase_stride, 3, wp, merge)
        elif dil_w == 4:
            _column_phases(row, phase0, phase_stride, 4, wp, merge)
        else:
            _column_phases(row, phase0, phase_stride, dil_w, wp, merge)
    else:
        # whole pixels (NHWC)
        for q in range(dil_w):
            for j in range(wp):
                ph = phase0 + q * phase_stride + j * elems
                px = row + (j * dil_w + q) * elems
                if merge:
                    for e in range(elems):
                        px[e] = ph[e]
                else:
                    for e in range(elems):
                        ph[e] = px[e]


cdef void _phase_copy(floating* full, floating* phases, Py_ssize_t n_img,
                      Py_ssize_t chans, Py_ssize_t height, Py_ssize_t width,
                      Py_ssize_t elems, Py_ssize_t dil_h, Py_ssize_t dil_w, bint merge,
                      int n_threads) noexcept nogil:
    """Every row of the full array to or from (``merge``) its phase rows."""
    cdef Py_ssize_t hp = height // dil_h, wp = width // dil_w
    cdef Py_ssize_t row_len = width * elems, phase_row = wp * elems
    # distance between the images of consecutive column phases q, q + 1
    cdef Py_ssize_t phase_stride = n_img * chans * hp * phase_row
    cdef Py_ssize_t r, i, plane, n, c, p
    for r in prange(n_img * chans * height, schedule="static", num_threads=n_threads):
        plane = r // height             # n*chans + c
        i = r - plane * height
        n = plane // chans
        c = plane - n * chans
        p = i % dil_h
        _phase_row(full + r * row_len,
                   phases + (((p * dil_w * n_img + n) * chans + c) * hp + i // dil_h) * phase_row,
                   phase_stride, dil_w, width, elems, merge)


def phase_split(const floating[:, :, :, ::1] full, floating[:, :, :, ::1] phases,
                Py_ssize_t dil_h, Py_ssize_t dil_w, bint channels_last, int n_threads):
    """The ``dil_h * dil_w`` phase images of ``full`` stacked along the batch.

    ``full`` is (N, C, H, W), or (N, H, W, C) with ``channels_last``, H and
    W multiples of the dilation; ``phases`` has the same layout with
    ``dil_h * dil_w * N`` images of H/dil_h x W/dil_w, image
    ``(p*dil_w + q)*N + n`` being ``full[n, :, p::dil_h, q::dil_w]``.
    """
    cdef Py_ssize_t n_img = full.shape[0]
    cdef Py_ssize_t chans = 1 if channels_last else full.shape[1]
    cdef Py_ssize_t height = full.shape[1] if channels_last else full.shape[2]
    cdef Py_ssize_t width = full.shape[2] if channels_last else full.shape[3]
    cdef Py_ssize_t elems = full.shape[3] if channels_last else 1
    if full.shape[0] * full.shape[1] * full.shape[2] * full.shape[3] == 0:
        return
    with nogil:
        # (full is only read: merge is False)
        _phase_copy(<floating*>&full[0, 0, 0, 0], &phases[0, 0, 0, 0], n_img, chans, height,
                    width, elems, dil_h, dil_w, False, n_threads)


def phase_merge(const floating[:, :, :, ::1] phases, floating[:, :, :, ::1] full,
                Py_ssize_t dil_h, Py_ssize_t dil_w, bint channels_last, int n_threads):
    """The inverse of :func:`phase_split`: ``full`` from its phase images."""
    cdef Py_ssize_t n_img = full.shape[0]
    cdef Py_ssize_t chans = 1 if channels_last else full.shape[1]
    cdef Py_ssize_t height = full.shape[1] if channels_last else full.shape[2]
    cdef Py_ssize_t width = full.shape[2] if channels_last else full.shape[3]
    cdef Py_ssize_t elems = full.shape[3] if channels_last else 1
    if full.shape[0] * full.shape[1] * full.shape[2] * full.shape[3] == 0:
        return
    with nogil:
        # (phases is only read: merge is True)
        _phase_copy(&full[0, 0, 0, 0], <floating*>&phases[0, 0, 0, 0], n_img, chans, height,
                    width, elems, dil_h, dil_w, True, n_threads)
