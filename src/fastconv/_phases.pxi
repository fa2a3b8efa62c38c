# Phase images of dilated convolutions (included by _kernels.pyx).
#
# A correlation with dilation d and stride 1 reads, for the outputs of one
# row phase (rows p, p + d, p + 2d, ...), only the input rows of one phase
# s = (p - pad) mod d: output phase p is an undilated correlation of input
# phase s, and so on for the columns.  functional.py stacks the dh*dw
# phase images along the batch (phase-major: image (p*dw + q)*N + n), runs
# the undilated kernels on them (Winograd for 3x3) and merges the output
# phases back.  The phases of one axis may differ in length and leading
# padding; each phase image is then led by zero rows (columns) up to a
# common padding and ends with zeros at a common length.
#
# An axis map gives, per phase image p, the full array's phase ``src`` it
# holds, its leading zeros ``lead`` and the values ``count`` it takes from
# the full array: phase element ``lead + j`` is full element ``src + j*d``
# for j < count, and every other element of the phase image is 0.  The
# maps functional.py builds make each full element the image of exactly one
# phase element, so a merge writes every element of the full array.
#
# Rows: NCHW phase images have C planes of H' rows of W' values, NHWC H'
# rows of W' pixels of C values; `chans` is the number of planes per image
# (C in NCHW, 1 in NHWC) and `elems` the values per pixel (1 in NCHW, C in
# NHWC).

cdef enum:
    PHASE_SRC = 0       # columns of an axis map (a (d, 3) intp array)
    PHASE_LEAD = 1
    PHASE_COUNT = 2
    MAX_PHASES = 64     # the largest dilation taken (functional._PHASES_MAX_DILATION)


cdef inline void _residues(floating* row, floating** dst, const Py_ssize_t* counts,
                           Py_ssize_t d, Py_ssize_t elems, bint merge) noexcept nogil:
    """Residue s of a full row -- its pixels s, s + d, ... (``counts[s]``
    pixels of ``elems`` values) -- into (or with ``merge`` from) ``dst[s]``,
    in one pass over the row.  Called with ``d`` a constant for the usual
    dilations, whose strided loops the compiler then vectorizes (with d not
    known they ran 4-5x slower at 3 and 4)."""
    # counts[s] = ceil((width - s) / d): the last is the least, by at most 1
    cdef Py_ssize_t most = counts[d - 1], s, j, e
    if elems == 1:
        if merge:
            for j in range(most):
                for s in range(d):
                    row[j * d + s] = dst[s][j]
        else:
            for j in range(most):
                for s in range(d):
                    dst[s][j] = row[j * d + s]
        for s in range(d):
            if counts[s] > most:
                if merge:
                    row[most * d + s] = dst[s][most]
                else:
                    dst[s][most] = row[most * d + s]
        return
    # whole pixels (NHWC)
    for s in range(d):
        for j in range(counts[s]):
            if merge:
                for e in range(elems):
                    row[(j * d + s) * elems + e] = dst[s][j * elems + e]
            else:
                for e in range(elems):
                    dst[s][j * elems + e] = row[(j * d + s) * elems + e]


cdef inline void _full_row(floating* row, floating* phase_row, const Py_ssize_t* offset,
                           const Py_ssize_t* counts, const Py_ssize_t* leads,
                           Py_ssize_t dil_w, Py_ssize_t phase_w, Py_ssize_t elems,
                           bint merge) noexcept nogil:
    """A row of the full array into (split) or from (``merge``) the phase
    rows that hold its residues, column phase 0's starting at
    ``phase_row``; per residue s, ``offset[s]`` places its first value from
    there, and its phase row has ``leads[s]`` zeros before its
    ``counts[s]`` values (a split writes them, and those after)."""
    cdef floating* dst[MAX_PHASES]
    cdef Py_ssize_t s
    for s in range(dil_w):
        dst[s] = phase_row + offset[s]
        if not merge and counts[s] < phase_w:
            memset(dst[s] - leads[s] * elems, 0, leads[s] * elems * sizeof(floating))
            memset(dst[s] + counts[s] * elems, 0,
                   (phase_w - leads[s] - counts[s]) * elems * sizeof(floating))
    if elems == 1 and dil_w == 2:
        _residues(row, dst, counts, 2, 1, merge)
    elif elems == 1 and dil_w == 3:
        _residues(row, dst, counts, 3, 1, merge)
    elif elems == 1 and dil_w == 4:
        _residues(row, dst, counts, 4, 1, merge)
    else:
        _residues(row, dst, counts, dil_w, elems, merge)


cdef void _phase_copy(floating* full, floating* phases, const Py_ssize_t* row_map,
                      const Py_ssize_t* col_map, Py_ssize_t n_img, Py_ssize_t chans,
                      Py_ssize_t height, Py_ssize_t width, Py_ssize_t elems,
                      Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t phase_h,
                      Py_ssize_t phase_w, bint merge, int n_threads) noexcept nogil:
    """Every row of the full array into (split) or from (``merge``) the
    phase rows that hold its residues, in parallel over the rows: each row
    is read or written once (phase by phase, the strided passes over the
    full array cost 2-3x more).  A split then zeroes the phase rows no full
    row reaches, before and after each phase's rows."""
    cdef Py_ssize_t row_len = width * elems, phase_row = phase_w * elems
    cdef Py_ssize_t plane_len = phase_h * phase_row
    # images of consecutive column phases q, q + 1 lie this far apart
    cdef Py_ssize_t phase_stride = n_img * chans * plane_len
    cdef Py_ssize_t r, i, plane, n, c, p, q, s, lead, count
    # per column residue s: the first value of its phase row from column
    # phase 0's, its values and the zeros before them; per row residue,
    # the row phase that holds it
    cdef Py_ssize_t offset[MAX_PHASES]
    cdef Py_ssize_t counts[MAX_PHASES]
    cdef Py_ssize_t leads[MAX_PHASES]
    cdef Py_ssize_t row_phase[MAX_PHASES]
    for q in range(dil_w):
        s = col_map[3 * q + PHASE_SRC]
        leads[s] = col_map[3 * q + PHASE_LEAD]
        counts[s] = col_map[3 * q + PHASE_COUNT]
        offset[s] = q * phase_stride + leads[s] * elems
    for p in range(dil_h):
        row_phase[row_map[3 * p + PHASE_SRC]] = p
    for r in prange(n_img * chans * height, schedule="static", num_threads=n_threads):
        plane = r // height             # n*chans + c
        i = r - plane * height
        n = plane // chans
        c = plane - n * chans
        p = row_phase[i % dil_h]
        _full_row(full + r * row_len,
                  phases + ((((p * dil_w * n_img + n) * chans + c) * phase_h
                             + row_map[3 * p + PHASE_LEAD] + i // dil_h) * phase_row),
                  offset, counts, leads, dil_w, phase_w, elems, merge)
    if not merge:
        for plane in prange(dil_h * dil_w * n_img * chans, schedule="static",
                            num_threads=n_threads):
            p = plane // (dil_w * n_img * chans)
            lead = row_map[3 * p + PHASE_LEAD]
            count = row_map[3 * p + PHASE_COUNT]
            memset(phases + plane * plane_len, 0, lead * phase_row * sizeof(floating))
            memset(phases + plane * plane_len + (lead + count) * phase_row, 0,
                   (phase_h - lead - count) * phase_row * sizeof(floating))


def phase_split(const floating[:, :, :, ::1] full, floating[:, :, :, ::1] phases,
                const Py_ssize_t[:, ::1] row_map, const Py_ssize_t[:, ::1] col_map,
                bint channels_last, int n_threads):
    """The phase images of ``full`` by the axis maps ``row_map`` and
    ``col_map`` ((dh, 3) and (dw, 3): src, lead, count per phase), stacked
    along the batch of ``phases``: image ``(p*dw + q)*N + n`` holds
    ``full[n, :, src_p::dh, src_q::dw]`` (NCHW; (N, H, W, C) with
    ``channels_last``), led by ``lead`` zeros and padded with zeros to
    ``phases``' planes.
    """
    cdef Py_ssize_t n_img = full.shape[0]
    cdef Py_ssize_t chans = 1 if channels_last else full.shape[1]
    cdef Py_ssize_t height = full.shape[1] if channels_last else full.shape[2]
    cdef Py_ssize_t width = full.shape[2] if channels_last else full.shape[3]
    cdef Py_ssize_t elems = full.shape[3] if channels_last else 1
    cdef Py_ssize_t phase_h = phases.shape[1] if channels_last else phases.shape[2]
    cdef Py_ssize_t phase_w = phases.shape[2] if channels_last else phases.shape[3]
    if phases.shape[0] * phases.shape[1] * phases.shape[2] * phases.shape[3] == 0:
        return
    with nogil:
        # (full is only read: merge is False)
        _phase_copy(<floating*>&full[0, 0, 0, 0], &phases[0, 0, 0, 0], &row_map[0, 0],
                    &col_map[0, 0], n_img, chans, height, width, elems, row_map.shape[0],
                    col_map.shape[0], phase_h, phase_w, False, n_threads)


def phase_merge(const floating[:, :, :, ::1] phases, floating[:, :, :, ::1] full,
                const Py_ssize_t[:, ::1] row_map, const Py_ssize_t[:, ::1] col_map,
                bint channels_last, int n_threads):
    """The inverse of :func:`phase_split`: every element of ``full`` from
    the phase element that holds it (the maps must cover ``full``)."""
    cdef Py_ssize_t n_img = full.shape[0]
    cdef Py_ssize_t chans = 1 if channels_last else full.shape[1]
    cdef Py_ssize_t height = full.shape[1] if channels_last else full.shape[2]
    cdef Py_ssize_t width = full.shape[2] if channels_last else full.shape[3]
    cdef Py_ssize_t elems = full.shape[3] if channels_last else 1
    cdef Py_ssize_t phase_h = phases.shape[1] if channels_last else phases.shape[2]
    cdef Py_ssize_t phase_w = phases.shape[2] if channels_last else phases.shape[3]
    if full.shape[0] * full.shape[1] * full.shape[2] * full.shape[3] == 0:
        return
    with nogil:
        # (phases is only read: merge is True)
        _phase_copy(&full[0, 0, 0, 0], <floating*>&phases[0, 0, 0, 0], &row_map[0, 0],
                    &col_map[0, 0], n_img, chans, height, width, elems, row_map.shape[0],
                    col_map.shape[0], phase_h, phase_w, True, n_threads)
