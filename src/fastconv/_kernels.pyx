"""Cython kernels for conv2d and 2-D pooling (float32/float64; NCHW here,
channels-last NHWC in ``_kernels_nhwc.pxi``, included at the end).

Division of labour (see ``functional.py``): the Python layer validates every
argument, computes output sizes, converts to C-contiguous arrays of one float
dtype and allocates the outputs; the kernels trust their inputs.  Each kernel
is a ``def`` entry point (GIL work: planning, workspace sizing, error
reporting) over a ``nogil`` parallel region.

Convolutions are lowered to GEMM through ``_blas.gemm``.  Work is split into
*items* (image x group x tile of output positions) that are independent of
the thread count, so results are bitwise identical for any number of
threads; each thread packs one tile of patches at a time into a private
workspace, so extra memory is ``threads x tile`` whatever the batch size.

* forward:      Y[g] (Og x P)  = W[g] (Og x K) @ patches(X)[g] (K x P); with
  vertical stride 1 the patches are packed once per column tap and each
  filter row is one GEMM over them shifted down by its row offset
  (``_correlate_row_shift``: kw/kh of im2col's packing)
* grad_weight:  dW[g] (Og x K) = sum_tiles  dY[g] (Og x Pt) @ patches(X)^T
* grad_input:   the textbook's full correlation of the stride-dilated
  sensitivity map with the 180-degree-rotated, in/out-swapped filters, split
  into ``sh x sw`` phases so that no multiply touches an inserted zero: for
  the input rows ``t = q*sh + r`` only the taps ``u`` with
  ``u*dh = r (mod sh)`` meet a non-zero, at dY row ``q - (u*dh - r)/sh``.
  Each phase is a dense correlation: dX_phase (Cg x Pq) = Wrot_phase^T
  (Cg x Og*T) @ patches(dY) (Og*T x Pq); stride 1 is one phase, lowered by
  row shifts as the forward is.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastconv._blas cimport (NO_TRANS, TRANS, Transpose, blas_serial_enter,
                             blas_serial_exit, gemm, own_gemm_takes)
from fastconv._cpu import l3_cache_bytes
from fastconv._openmp cimport fc_omp_barrier

# Status codes a nogil core reports to its entry point.
cdef enum:
    STATUS_OK = 0
    STATUS_NO_MEMORY = 1
    STATUS_BAD_INDEX = 2

# A packed tile of patches aims at this many bytes, with at least MIN_TILE
# output positions: wide tiles amortize the GEMM's re-packing of the weight
# matrix on every call (measured: 256 KiB / 64 columns was up to 10 % slower
# on the big layers and no faster on the small ones).  MIN_TILE also stops
# the MIN_ITEMS split from cutting a one-image layer into thin GEMMs: 1024
# against 256 made the big layer (1x256x100x100, 3x3) faster on the 2-core
# Zen 4 machine, in alternating same-process runs: float64 forward 79 -> 89
# GFLOP/s, input gradient 77 -> 85 (filter gradient 81 -> 76), float32
# forward 166 -> 173; the other suite layers' tiles were already wider.
# Aiming at 512 KiB rather than 4 MiB keeps a small-K layer's tile in L2
# (2 MiB per core on the Intel guest; the patches of the ResNet stem, K =
# 147, had filled 2.4 MB): its forward ran 1.23x faster in float32 (4.03 ->
# 3.28 ms, 2 threads, in-process A/B), 1.18x in float64, 1.13x in NHWC;
# the other zoo and suite layers, whose K makes 1024 columns more than 512
# KiB anyway, within the noise (0.98-1.02x).
cdef Py_ssize_t TILE_BYTES = 512 * 1024
cdef Py_ssize_t MIN_TILE = 1024
cdef Py_ssize_t MAX_TILE = 4096
# The filter gradients' tiles are smaller: OpenBLAS copies each patch
# tile into its panels right after the packing wrote it, and a tile that
# stays near L2 (2 MiB per core on the Intel guest) saves that round trip
# through L3.  Measured there (2 threads, in-process A/B, 17 sets of 7
# rounds), 1 MiB / at least 256 positions against the forward's 4 MiB /
# 1024: the vgg3x3 filter gradient 0.93-1.22x (median 1.09x) in float32,
# 1.04-1.12x (1.08x) in float64; big's within the noise (0.97-1.09x and
# 0.87-1.24x, medians 1.03x); a 512-position minimum was slower on big
# float32 (0.88-1.02x).  The other suite layers have one tile per image
# either way.  (The Zen 4 machine of an earlier session had also run the
# big filter gradient faster with 256-position tiles than with 1024.)  The
# NHWC filter gradient, in-process paired A/B (2 sets of 15 rounds): vgg3x3
# 1.16-1.19x (float32) and 1.19-1.22x (float64), big 1.07x, the others
# within 0.97-1.02x.
cdef Py_ssize_t GW_TILE_BYTES = 1024 * 1024
cdef Py_ssize_t GW_MIN_TILE = 256
# The NCHW filter gradient is cut into column blocks of whole input
# channels whose og x columns slice is at most this many bytes (per dtype;
# 0: one block), so that the block stays in L2 while every image's product
# adds into it, and fewer reduction slots (partial gradients to clear, fill
# and add) are needed to give every thread work.  Measured (2 threads,
# alternating rounds, OpenBLAS + the own GEMM): the res_s2 float64 filter
# gradient 1.14x faster with 512 KiB blocks (1 MiB 1.08-1.10x, 256 KiB
# 1.09x), the other suite layers' gradients within 1 % (their weights fit
# one block); float32 res_s2 0.98x at 512 KiB, 0.90x at 1 MiB, so a float32
# group's gradient stays one block below GW_BLOCK_FROM_BYTES_F32.  Above it
# the blocks pay in float32 too: a 9.4 MB gradient (8 x 512 x 7 x 7, 3x3,
# ResNet-18's last layers) 25.2 -> 6.9 ms, whose one block took 7 slots of
# 9.4 MB each for the 8 products; 2.4 MB (8 x 256 x 14 x 14) 6.9 -> 6.0 ms
# (2 threads, alternating rounds).
cdef Py_ssize_t GW_BLOCK_BYTES_F32 = 512 * 1024
cdef Py_ssize_t GW_BLOCK_FROM_BYTES_F32 = 2 << 20
cdef Py_ssize_t GW_BLOCK_BYTES_F64 = 512 * 1024
# The NHWC filter gradient's row blocks of whole kernel rows, both dtypes
# (0: one block), or of one tap's channels where a kernel row alone is
# larger (see conv2d_grad_weight_nhwc).  512 KiB against one block, 5
# alternating rounds: res_s2 1.21x (float64) and 1.10x (float32) faster
# (3 blocks of one kernel row), 1 MiB the same; the other suite layers'
# gradients fit one block (within 2 %).
cdef Py_ssize_t GW_ROW_BLOCK_BYTES = 512 * 1024
# Hard cap on one thread's patch workspace: for very deep patches (huge
# C_in*kh*kw) the tile shrinks below MIN_TILE rather than grow past this.
cdef Py_ssize_t MAX_WORK_BYTES = 16 * 1024 * 1024
# Aim for at least this many work items so that up to this many threads
# find work.  Depends on the shape only, never on the thread count.
cdef Py_ssize_t MIN_ITEMS = 16
# gemm_split's blocks: at least this many rows (or columns) each, at most
# this many blocks (a function of the shape, never of the thread count)
cdef Py_ssize_t GEMM_SPLIT_MIN = 64
cdef Py_ssize_t GEMM_SPLIT_BLOCKS = 8
# Filter-gradient partial sums: at most this many fixed reduction slots.
cdef Py_ssize_t MAX_SLOTS = 8
# ... each summing at least this many parts (products or tiles): a slot
# of one part only adds a copy of the gradient to clear and add up.  With
# 8 images of one tile each (8 parts: 8 slots before, now 4), 2 threads:
# 8x256x14x14 -> 512 1x1 stride 2, filter gradient 1.12x (float32) /
# 1.13x (float64) faster in NCHW, 1.29x / 1.24x in NHWC; res_s2 1.01-1.04x;
# one image of 64x56x56 1.05x; unchanged: ResNet's 7x7 and 14x14 3x3
# layers (their column blocks already keep the slots few), lenet2, vgg3x3
# and big (many parts).
cdef Py_ssize_t MIN_SLOT_PARTS = 2
cdef Py_ssize_t SLOT_BYTES_BUDGET = 64 * 1024 * 1024
# float32 filter gradients with few output channels per group as
# dW^T = patches x dY^T (see conv2d_grad_weight); tests switch it off to
# check the plain orientation.
cdef bint GW_TRANSPOSE_F32 = True
# The direct (dot product) filter gradient pads this many bytes of images at
# a time (at least one image), so that every block of the sums finds them
# in L2 (see conv2d_grad_weight_direct).
cdef Py_ssize_t DIRECT_GW_CHUNK_BYTES = 1 << 20


# Planes with more elements than this take the element-wise max-pool loop
# (-1: whatever the row-wise kernel's in-lane index can hold exactly).
cdef Py_ssize_t ROWWISE_MAX_PLANE = -1
# Depthwise planes are copied into a zero-padded buffer unless it would
# exceed this many elements (-1: _padded_limit of the input plane).
cdef Py_ssize_t DEPTHWISE_MAX_PADDED = -1


cdef inline Py_ssize_t _padded_limit(Py_ssize_t in_plane) noexcept nogil:
    """The most elements a kernel's zero-padded copy of one input plane may
    take (the depthwise kernels, the direct filter gradient): 4x the plane
    + 4096; larger paddings take loops that skip the padding instead."""
    return 4 * in_plane + 4096
# Pooling with stride 2 and 2- or 3-wide windows takes dedicated loops
# (tests switch them off to check the general loops against them).
cdef bint POOL_FAST_PATHS = True
# Pools ask for the rows they will read (and write) this many output rows
# ahead (0: leave it to the hardware prefetcher).  A pool streams planes
# through the cache; when they come from memory, the row kernels (3x3 ones
# most) compute too long per cache line for the hardware prefetcher to stay
# ahead, so memory waits and compute add up instead of overlapping.  See
# fc_prefetch_rows_ahead and fc_prefetch_grad_rows in _pool_avx2.h.
cdef Py_ssize_t PREFETCH_OUT_ROWS = 8
# NCHW pools (max and average forwards, the average-pool gradient) whose
# output rows are narrower than an AVX2 vector, on planes of at most this
# many elements, stage blocks of planes channels last for the NHWC kernels
# (see _staged_planes; 0: never).
cdef Py_ssize_t SMALL_PLANE_MAX = 4096
# Pool gradients (NCHW) of at least STREAM_MIN_BYTES are built one plane at a
# time in a per-thread scratch plane (planes of at most STREAM_MAX_PLANE
# bytes) and copied to grad_in with streaming stores (fc_stream_copy in
# _pool_avx2.h).  That pays only when the forward + gradient's operands
# (about three times the gradient) no longer stay in the last-level cache:
# plain stores then first read every line of grad_in from memory (read for
# ownership) and evict the operands still to be read; while they stay in
# the cache, streaming stores only push grad_in out to memory.  Hence a
# quarter of the L3 the OS reports (8 MiB when it reports none): 8 MiB for
# the 32 MiB L3 of the Zen 4 machine, where out-of-cache gradients gained
# 5-36 %; 120 MiB for the 480 MiB the Xeon KVM guest reports, where
# streaming did not pay at any size measured (fwd+bwd of 4-16 images of
# 64x56x56 float64: 0.87-1.01x; 32 images: 0.54-0.76x).
# docs/speed-history.md has both.  0 = always, -1 = never.
cdef Py_ssize_t STREAM_MIN_BYTES_UNKNOWN_L3 = 8 << 20


def _default_stream_min_bytes():
    """STREAM_MIN_BYTES for this machine: a quarter of its L3."""
    l3 = l3_cache_bytes()
    return l3 // 4 if l3 > 0 else STREAM_MIN_BYTES_UNKNOWN_L3


cdef Py_ssize_t STREAM_MIN_BYTES = _default_stream_min_bytes()
cdef Py_ssize_t STREAM_MAX_PLANE = 256 << 10
# Whole-plane max pools use the header's AVX-512 rows (AVX2 build, a CPU
# with AVX-512F; fastconv._simd switches them on).
cdef bint MAX_POOL_AVX512 = False

# The forward and the gather input gradient with vertical stride 1 pack a
# tile's patches once per column tap and run one GEMM per filter row over
# row-shifted views of them (_correlate_row_shift), unless batches of whole
# images through the full im2col cost less (_row_shift_pays): -1 = by that
# rule, 1 = always, 0 = never (the full im2col).  Measured (same process,
# 2 threads, OpenBLAS's own kernels): forward 1.13x vgg3x3 / 1.86x lenet2 /
# 1.03x big in float32, input gradient 1.18x vgg3x3.  The filter gradient
# keeps im2col: the same lowering measured 0.91-1.04x there (kh GEMMs over
# the long position axis instead of one).
cdef int ROW_SHIFT = -1
# Images smaller than this many output positions are batched side by side
# into one GEMM by the im2col forward (per dtype; 0 = never), enough of them
# for this many columns.  History: with OpenBLAS's dgemm, which speeds up
# with the column count well past one small image, the res_s2 float64
# forward was 1.05-1.07x faster with 768 (4 images per GEMM).  With the own
# GEMM (AVX-512) that reversed: the res_s2 float64 forward ran 0.99-1.08x
# as fast with 768 as unbatched (1 image is 196 columns; four alternating
# runs, best of 7 rounds), while images of 49 positions (8 x 512
# x 7 x 7, ResNet-18's last layers, which ran on the row shift before) want
# about 192 columns: forward 12.1-12.5 ms (4 images) against 13.2-13.8 (8)
# and 12.8-13.1 (2) in float64, 6.4-6.6 (4) against 7.4-7.6 (2) in float32
# (2 threads, alternating rounds).  The scatter input gradient, which would
# have to copy dY side by side first, measured 0.93-1.0x (res_s2, lenet1,
# lenet2), so it does not batch; nor does the unpacked 1x1 forward
# (copying its input side by side: pw1x1 float64 0.77-0.80x).
cdef Py_ssize_t BATCH_COLUMNS_F32 = 192
cdef Py_ssize_t BATCH_COLUMNS_F64 = 192
# A batch's GEMM is cut into items of at most this many output channels
# (whole micro-kernel panels), so that a layer with few batches still has
# work for every thread; consecutive items of one batch on a thread reuse
# its packed patches.
cdef Py_ssize_t BATCH_ITEM_ROWS = 256
# The scatter input gradient's GEMM in the position-major orientation
# (dY^T @ W: -1 = by shape, 0 = never, 1 = always; see _scatter_position_major),
# with (image, group, channel block) items, at least SCATTER_MIN_ITEMS of them,
# and each block's staged planes at most SCATTER_STAGE_BYTES (blocks cut
# evenly).  256 KiB against 1 MiB: res_s2 float64 1.05-1.10x faster (4
# blocks of 32 channels instead of one of 128: the GEMM's result, its block
# of the filters and the staged planes fit L2 together; 5 rounds, 2 threads,
# and as many again with the items ordered block-major, no better); 128 KiB
# 1.04x, 192 KiB 1.07x; lenet1/lenet2 within 1 % either dtype.
cdef int SCATTER_POSITION_MAJOR = -1
cdef Py_ssize_t SCATTER_MIN_ITEMS = 8
cdef Py_ssize_t SCATTER_STAGE_BYTES = 256 << 10
# Test hook: make every kernel workspace allocation fail (see _workspace).
cdef bint FAIL_ALLOCATIONS = False


cdef inline void* _workspace(size_t nbytes) noexcept nogil:
    """malloc for kernel workspace; NULL (reported as MemoryError by the entry
    point) when it fails -- or always, while the FAIL_ALLOCATIONS hook is set."""
    if FAIL_ALLOCATIONS:
        return NULL
    return malloc(nbytes)


def _tuning(tile_bytes=None, min_tile=None, max_tile=None, min_items=None,
            rowwise_max_plane=None, depthwise_max_padded=None, pool_fast_paths=None,
            fail_allocations=None, prefetch_out_rows=None, max_pool_avx512=None,
            gw_transpose_f32=None, row_shift=None, batch_columns_f32=None,
            batch_columns_f64=None, gw_tile_bytes=None, gw_min_tile=None,
            stream_min_bytes=None, scatter_position_major=None,
            scatter_stage_bytes=None, gw_block_bytes_f32=None, gw_block_bytes_f64=None,
            winograd_shared_sums_bytes=None, gw_row_block_bytes=None,
            gw_block_from_bytes_f32=None, direct_gw_chunk_bytes=None,
            min_slot_parts=None, winograd_min_split=None, small_plane_max=None):
    """Read (and optionally set) the tiling parameters; for benchmarks and
    for tests that force a code path."""
    global TILE_BYTES, MIN_TILE, MAX_TILE, MIN_ITEMS, ROWWISE_MAX_PLANE, DEPTHWISE_MAX_PADDED
    global POOL_FAST_PATHS, FAIL_ALLOCATIONS, PREFETCH_OUT_ROWS, MAX_POOL_AVX512
    global GW_TRANSPOSE_F32, ROW_SHIFT, BATCH_COLUMNS_F32, BATCH_COLUMNS_F64
    global GW_TILE_BYTES, GW_MIN_TILE, STREAM_MIN_BYTES, SCATTER_POSITION_MAJOR
    global SCATTER_STAGE_BYTES, GW_BLOCK_BYTES_F32, GW_BLOCK_BYTES_F64
    global WINOGRAD_SHARED_SUMS_BYTES, GW_ROW_BLOCK_BYTES, GW_BLOCK_FROM_BYTES_F32
    global DIRECT_GW_CHUNK_BYTES, MIN_SLOT_PARTS, WINOGRAD_MIN_SPLIT, SMALL_PLANE_MAX
    if small_plane_max is not None:
        SMALL_PLANE_MAX = max(0, small_plane_max)
    if winograd_min_split is not None:
        WINOGRAD_MIN_SPLIT = winograd_min_split
    if min_slot_parts is not None:
        MIN_SLOT_PARTS = min_slot_parts
    if direct_gw_chunk_bytes is not None:
        DIRECT_GW_CHUNK_BYTES = direct_gw_chunk_bytes
    if gw_block_from_bytes_f32 is not None:
        GW_BLOCK_FROM_BYTES_F32 = gw_block_from_bytes_f32
    if gw_row_block_bytes is not None:
        GW_ROW_BLOCK_BYTES = gw_row_block_bytes
    if winograd_shared_sums_bytes is not None:
        WINOGRAD_SHARED_SUMS_BYTES = winograd_shared_sums_bytes
    if gw_block_bytes_f32 is not None:
        GW_BLOCK_BYTES_F32 = gw_block_bytes_f32
    if gw_block_bytes_f64 is not None:
        GW_BLOCK_BYTES_F64 = gw_block_bytes_f64
    if scatter_position_major is not None:
        SCATTER_POSITION_MAJOR = scatter_position_major
    if scatter_stage_bytes is not None:
        SCATTER_STAGE_BYTES = scatter_stage_bytes
    if stream_min_bytes is not None:
        STREAM_MIN_BYTES = stream_min_bytes
    if gw_tile_bytes is not None:
        GW_TILE_BYTES = gw_tile_bytes
    if gw_min_tile is not None:
        GW_MIN_TILE = gw_min_tile
    if batch_columns_f32 is not None:
        BATCH_COLUMNS_F32 = max(0, batch_columns_f32)
    if batch_columns_f64 is not None:
        BATCH_COLUMNS_F64 = max(0, batch_columns_f64)
    if row_shift is not None:
        ROW_SHIFT = -1 if row_shift < 0 else int(bool(row_shift))
    if gw_transpose_f32 is not None:
        GW_TRANSPOSE_F32 = gw_transpose_f32
    if max_pool_avx512 is not None:
        # (stays off where the build or the CPU cannot run it).  A process-wide
        # switch, set at import by fastconv._simd and by tests between calls:
        # flipping it while another thread pools is harmless, since both row
        # kernels give the same bits.
        MAX_POOL_AVX512 = fc_set_max_avx512(bool(max_pool_avx512))
    if prefetch_out_rows is not None:
        if prefetch_out_rows < 0:
            raise ValueError(f"prefetch_out_rows must be >= 0, got {prefetch_out_rows}")
        PREFETCH_OUT_ROWS = prefetch_out_rows
    if fail_allocations is not None:
        FAIL_ALLOCATIONS = fail_allocations
    if pool_fast_paths is not None:
        POOL_FAST_PATHS = pool_fast_paths
    if depthwise_max_padded is not None:
        DEPTHWISE_MAX_PADDED = depthwise_max_padded
    if rowwise_max_plane is not None:
        ROWWISE_MAX_PLANE = rowwise_max_plane
    if tile_bytes is not None:
        TILE_BYTES = tile_bytes
    if min_tile is not None:
        MIN_TILE = min_tile
    if max_tile is not None:
        MAX_TILE = max_tile
    if min_items is not None:
        MIN_ITEMS = min_items
    return dict(tile_bytes=TILE_BYTES, min_tile=MIN_TILE, max_tile=MAX_TILE,
                min_items=MIN_ITEMS, rowwise_max_plane=ROWWISE_MAX_PLANE,
                depthwise_max_padded=DEPTHWISE_MAX_PADDED,
                pool_fast_paths=POOL_FAST_PATHS, fail_allocations=FAIL_ALLOCATIONS,
                prefetch_out_rows=PREFETCH_OUT_ROWS, max_pool_avx512=MAX_POOL_AVX512,
                gw_transpose_f32=GW_TRANSPOSE_F32, row_shift=ROW_SHIFT,
                batch_columns_f32=BATCH_COLUMNS_F32, batch_columns_f64=BATCH_COLUMNS_F64,
                gw_tile_bytes=GW_TILE_BYTES, gw_min_tile=GW_MIN_TILE,
                stream_min_bytes=STREAM_MIN_BYTES,
                scatter_position_major=SCATTER_POSITION_MAJOR,
                scatter_stage_bytes=SCATTER_STAGE_BYTES,
                gw_block_bytes_f32=GW_BLOCK_BYTES_F32, gw_block_bytes_f64=GW_BLOCK_BYTES_F64,
                winograd_shared_sums_bytes=WINOGRAD_SHARED_SUMS_BYTES,
                gw_row_block_bytes=GW_ROW_BLOCK_BYTES,
                gw_block_from_bytes_f32=GW_BLOCK_FROM_BYTES_F32,
                direct_gw_chunk_bytes=DIRECT_GW_CHUNK_BYTES,
                min_slot_parts=MIN_SLOT_PARTS, winograd_min_split=WINOGRAD_MIN_SPLIT,
                small_plane_max=SMALL_PLANE_MAX)


def _raise_for_status(int status):
    if status == STATUS_NO_MEMORY:
        raise MemoryError("fastconv: could not allocate kernel workspace")
    if status == STATUS_BAD_INDEX:
        raise ValueError("indices: every index must lie in [0, H*W) of its input plane")


cdef Py_ssize_t _tile_size(Py_ssize_t rows, Py_ssize_t positions, Py_ssize_t outer,
                           Py_ssize_t itemsize):
    """Output positions per tile: a ``rows x tile`` patch matrix of about
    TILE_BYTES, rounded to 16, shrunk (not below MIN_TILE) until there are
    MIN_ITEMS items, and never over MAX_WORK_BYTES.  A function of the shape
    only, so the work split never depends on the thread count."""
    return _tile_size_for(rows, positions, outer, itemsize, TILE_BYTES, MIN_TILE)


cdef Py_ssize_t _tile_size_for(Py_ssize_t rows, Py_ssize_t positions, Py_ssize_t outer,
                               Py_ssize_t itemsize, Py_ssize_t tile_bytes,
                               Py_ssize_t min_tile):
    """``_tile_size`` for a given tile size in bytes and minimum width."""
    rows = max(rows, 1)
    cdef Py_ssize_t tile = tile_bytes // (itemsize * rows)
    tile = max(min_tile, min(MAX_TILE, tile)) // 16 * 16
    while tile > min_tile and outer * _ceil_div(positions, tile) < MIN_ITEMS:
        tile = max(min_tile, tile // 2 // 16 * 16)
    tile = min(tile, MAX_WORK_BYTES // (itemsize * rows))
    return max(1, min(tile, positions))


cdef inline Py_ssize_t _grad_weight_tile_size(Py_ssize_t rows, Py_ssize_t positions,
                                              Py_ssize_t outer, Py_ssize_t itemsize):
    """``_tile_size`` with the filter gradients' smaller tiles (GW_TILE_BYTES,
    GW_MIN_TILE; both layouts)."""
    return _tile_size_for(rows, positions, outer, itemsize, GW_TILE_BYTES, GW_MIN_TILE)


cdef Py_ssize_t _image_batch(Py_ssize_t positions, Py_ssize_t n_img,
                             Py_ssize_t rows, Py_ssize_t itemsize):
    """Images per GEMM for layers whose images are too small for a wide
    GEMM on their own (BATCH_COLUMNS_*): enough whole images side by side
    to reach that many columns, spread evenly over the batches (8 images
    that want 4 make 2 batches of 4, not 5 + 3), with a ``rows x columns``
    workspace under MAX_WORK_BYTES.  1 = no batching.  A function of the
    shape only."""
    cdef Py_ssize_t want = BATCH_COLUMNS_F64 if itemsize == 8 else BATCH_COLUMNS_F32
    if want <= positions or n_img < 2 or positions < 1:
        return 1
    cdef Py_ssize_t batch = min(n_img, _ceil_div(want, positions))
    while batch > 1 and max(rows, 1) * batch * positions * itemsize > MAX_WORK_BYTES:
        batch -= 1
    if batch > 1:
        batch = _ceil_div(n_img, _ceil_div(n_img, batch))
    return batch


cdef bint _row_shift_pays(Py_ssize_t m, Py_ssize_t kh, Py_ssize_t shift_cols,
                          Py_ssize_t batch_cols):
    """Whether the row-shift lowering (its GEMMs ``shift_cols`` wide) beats
    the full im2col over ``batch_cols``-wide batches of images, both
    producing ``m`` rows (ROW_SHIFT = -1).

    Per output column, besides its GEMM's ``m*K`` multiply-adds: each
    product packs its ``m x K`` filters again (``m*K / width``) and its
    patches (row shift: ``K / kh``; im2col: ``K``).  Relative to the
    multiply-adds that is ``1/width + 1/(m*kh)`` against ``1/width + 1/m``.
    (Each row item's GEMM also re-packs the batch's patches into its own
    panels, which this does not count.)  The row shift wins wide tiles
    (every suite layer: vgg3x3, lenet2, big), im2col batches narrow ones
    with many output channels: 8 x 512 x 7 x 7 (ResNet-18's last 3x3
    layers), 49-position GEMMs against 196: forward 1.7x faster in
    float32, 1.3-1.4x in float64 (2 threads, alternating rounds).
    The row shift keeps ties and near-ties (within 1.5x)."""
    if ROW_SHIFT >= 0:
        return ROW_SHIFT == 1
    cdef double shift = 1.0 / max(shift_cols, 1) + 1.0 / max(m * kh, 1)
    cdef double batched = 1.0 / max(batch_cols, 1) + 1.0 / max(m, 1)
    return shift <= 1.5 * batched


cdef extern from "_rows_avx2.h" nogil:
    # inline row copies of the packing loops (AVX2 in the AVX2 build)
    void fc_copy_row(void* dst, const void* src, size_t n)
    void fc_gather_even_f32(float* dst, const float* src, Py_ssize_t n)
    void fc_gather_even_f64(double* dst, const double* src, Py_ssize_t n)
    void fc_scatter_add_even_f32(float* dst, const float* src, Py_ssize_t n)
    void fc_scatter_add_even_f64(double* dst, const double* src, Py_ssize_t n)
    void fc_add_row_f32(float* dst, const float* src, Py_ssize_t n)
    void fc_add_row_f64(double* dst, const double* src, Py_ssize_t n)
    void fc_axpy_row_f32(float* dst, const float* src, float a, Py_ssize_t n)
    void fc_axpy_row_f64(double* dst, const double* src, double a, Py_ssize_t n)
    void fc_interleave_f32(float* dst, const float* even, const float* odd, Py_ssize_t n,
                           int extra_even)
    void fc_interleave_f64(double* dst, const double* even, const double* odd, Py_ssize_t n,
                           int extra_even)


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for b > 0 (C division truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return -_floor_div(-a, b)


cdef inline Py_ssize_t _floor_mod(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """``a`` modulo b > 0, in [0, b) also for negative a (a stride phase)."""
    return a - _floor_div(a, b) * b


# --- patch packing (im2col of one tile) ------------------------------------

cdef void _pack_patches(const floating* src, Py_ssize_t n_ch,
                        Py_ssize_t src_h, Py_ssize_t src_w,
                        const Py_ssize_t* row_off, Py_ssize_t n_u,
                        const Py_ssize_t* col_off, Py_ssize_t n_v,
                        Py_ssize_t step_i, Py_ssize_t step_j,
                        Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                        floating* dst, Py_ssize_t ld, floating* phases) noexcept nogil:
    """Pack a (n_ch*n_u*n_v) x count patch matrix, row-major, rows ``ld``
    elements apart.

    Row ``(c*n_u + iu)*n_v + iv``, column ``l`` holds
    ``src[c, qi*step_i + row_off[iu], qj*step_j + col_off[iv]]`` where
    ``(qi, qj) = divmod(p0 + l, grid_w)``, and zero where that falls outside
    the ``src_h x src_w`` plane (the zero padding of the textbook).

    Each tap reads a *phase plane*: the plane itself for stride 1, else the
    plane's rows and columns of one residue mod the stride, split off into
    ``phases`` (``src_h * src_w`` elements of the caller's scratch, needed
    only with a stride).  Within its phase plane a tap is a shift, so when
    the phase plane is as wide as the grid, the tap's whole row of the
    patch matrix is one contiguous copy, its rows and columns outside the
    plane zeroed after -- where a row-by-row stride-2 gather made a call or
    two per output row (for res_s2, 14 positions).
    """
    cdef bint split = step_i > 1 or step_j > 1
    cdef Py_ssize_t plane = src_h * src_w
    cdef Py_ssize_t q_first = p0 // grid_w, q_last = (p0 + count - 1) // grid_w
    # phase-plane rows the tile reads (row_off ascends with the tap)
    cdef Py_ssize_t a_lo = q_first + _floor_div(row_off[0], step_i)
    cdef Py_ssize_t a_hi = q_last + _floor_div(row_off[n_u - 1], step_i) + 1
    cdef Py_ssize_t c, iu, iv, ri, rj, ph_h, ph_w
    cdef const floating* ph
    for c in range(n_ch):
        if split:
            _split_phases(src + c * plane, src_h, src_w, step_i, step_j,
                          row_off, n_u, col_off, n_v, a_lo, a_hi, phases)
        for iu in range(n_u):
            ri = _floor_mod(row_off[iu], step_i)
            ph_h = max(0, _ceil_div(src_h - ri, step_i))
            for iv in range(n_v):
                rj = _floor_mod(col_off[iv], step_j)
                ph_w = max(0, _ceil_div(src_w - rj, step_j))
                if ph_h == 0 or ph_w == 0:
                    ph = NULL           # every element of the row is padding
                elif split:
                    ph = phases + _phase_offset(src_h, src_w, step_i, step_j, ri, rj)
                else:
                    ph = src + c * plane
                _pack_tap(ph, ph_h, ph_w, _floor_div(row_off[iu], step_i),
                          _floor_div(col_off[iv], step_j), grid_w, p0, count,
                          dst + ((c * n_u + iu) * n_v + iv) * ld)


cdef inline Py_ssize_t _phase_offset(Py_ssize_t src_h, Py_ssize_t src_w,
                                     Py_ssize_t step_i, Py_ssize_t step_j,
                                     Py_ssize_t ri, Py_ssize_t rj) noexcept nogil:
    """Where phase plane (ri, rj) starts in ``_split_phases``' layout: the
    row phases one after another, each a block of its rows split into its
    column phases, each plane row-major (``src_h * src_w`` in all)."""
    cdef Py_ssize_t rows_before = 0, cols_before = 0, r
    for r in range(ri):
        rows_before += _ceil_div(src_h - r, step_i)
    for r in range(rj):
        cols_before += _ceil_div(src_w - r, step_j)
    return rows_before * src_w + _ceil_div(src_h - ri, step_i) * cols_before


cdef void _split_phases(const floating* plane, Py_ssize_t src_h, Py_ssize_t src_w,
                        Py_ssize_t step_i, Py_ssize_t step_j,
                        const Py_ssize_t* row_off, Py_ssize_t n_u,
                        const Py_ssize_t* col_off, Py_ssize_t n_v,
                        Py_ssize_t a_lo, Py_ssize_t a_hi, floating* phases) noexcept nogil:
    """Copy rows ``[a_lo, a_hi)`` of the phase planes some tap reads:
    ``P[ri, rj][a, b] = plane[a*step_i + ri, b*step_j + rj]``."""
    cdef Py_ssize_t ri, rj, iu, iv, a, b, ph_h, ph_w, lo, hi
    cdef bint used
    cdef floating* ph
    cdef floating* odd
    cdef const floating* row
    cdef bint both_columns = False     # step_j == 2 and taps of either parity
    if step_j == 2 and src_w >= 2:
        for iv in range(n_v):
            both_columns = both_columns or _floor_mod(col_off[iv], 2) != _floor_mod(col_off[0], 2)
    for ri in range(min(step_i, src_h)):
        used = False
        for iu in range(n_u):
            used = used or _floor_mod(row_off[iu], step_i) == ri
        if not used:
            continue
        ph_h = _ceil_div(src_h - ri, step_i)
        lo = max(a_lo, 0)
        hi = min(a_hi, ph_h)
        if both_columns:
            # each row read once, into its even and odd columns
            ph = phases + _phase_offset(src_h, src_w, step_i, step_j, ri, 0)
            odd = phases + _phase_offset(src_h, src_w, step_i, step_j, ri, 1)
            for a in range(lo, hi):
                _deinterleave(plane + (a * step_i + ri) * src_w, ph + a * ((src_w + 1) // 2),
                              odd + a * (src_w // 2), src_w // 2, src_w % 2 == 1)
            continue
        for rj in range(min(step_j, src_w)):
            used = False
            for iv in range(n_v):
                used = used or _floor_mod(col_off[iv], step_j) == rj
            if not used:
                continue
            ph_w = _ceil_div(src_w - rj, step_j)
            ph = phases + _phase_offset(src_h, src_w, step_i, step_j, ri, rj)
            for a in range(lo, hi):
                row = plane + (a * step_i + ri) * src_w + rj
                if step_j == 1:
                    memcpy(ph + a * ph_w, row, ph_w * sizeof(floating))
                elif step_j == 2:
                    # reads row[2b] for b < ph_w: inside the plane's row
                    if floating is float:
                        fc_gather_even_f32(ph + a * ph_w, row, ph_w)
                    else:
                        fc_gather_even_f64(ph + a * ph_w, row, ph_w)
                else:
                    for b in range(ph_w):
                        ph[a * ph_w + b] = row[b * step_j]


cdef void _pack_tap(const floating* ph, Py_ssize_t ph_h, Py_ssize_t ph_w,
                    Py_ssize_t sr, Py_ssize_t sc, Py_ssize_t grid_w,
                    Py_ssize_t p0, Py_ssize_t count, floating* d) noexcept nogil:
    """One patch-matrix row: ``d[l] = ph[qi + sr, qj + sc]`` for
    ``(qi, qj) = divmod(p0 + l, grid_w)``, zero outside the ``ph_h x ph_w``
    phase plane."""
    cdef Py_ssize_t qi = p0 // grid_w, qj = p0 - qi * grid_w
    cdef Py_ssize_t lo_c = max(0, -sc), hi_c = min(grid_w, ph_w - sc)   # grid columns inside
    cdef Py_ssize_t base, lo, hi, l, seg, a, x0, x1, q, j
    if ph_w == grid_w and ph_h > 0:
        # one shift for the whole tile: phase index p0 + l + base
        base = p0 + sr * ph_w + sc
        lo = min(count, max(0, -base))
        hi = max(lo, min(count, ph_h * ph_w - base))
        if lo > 0:
            memset(d, 0, lo * sizeof(floating))
        if hi > lo:
            memcpy(d + lo, ph + base + lo, (hi - lo) * sizeof(floating))
        if count > hi:
            memset(d + hi, 0, (count - hi) * sizeof(floating))
        if sc != 0:
            # zero the columns the shift wrapped into a neighbouring row
            hi_c = max(hi_c, lo_c)
            for q in range(qi, (p0 + count - 1) // grid_w + 1):
                for j in range(lo_c):
                    l = q * grid_w + j - p0
                    if 0 <= l < count:
                        d[l] = 0
                for j in range(hi_c, grid_w):
                    l = q * grid_w + j - p0
                    if 0 <= l < count:
                        d[l] = 0
        return
    l = 0
    while l < count:
        seg = min(grid_w - qj, count - l)
        a = qi + sr
        if a < 0 or a >= ph_h or hi_c <= lo_c:
            memset(d + l, 0, seg * sizeof(floating))
        else:
            x0 = min(max(lo_c, qj), qj + seg)
            x1 = max(min(hi_c, qj + seg), x0)
            if x0 > qj:
                memset(d + l, 0, (x0 - qj) * sizeof(floating))
            if x1 > x0:
                fc_copy_row(d + l + (x0 - qj), ph + a * ph_w + x0 + sc,
                            (x1 - x0) * sizeof(floating))
            if qj + seg > x1:
                memset(d + l + (x1 - qj), 0, (qj + seg - x1) * sizeof(floating))
        l += seg
        qi += 1
        qj = 0


cdef void _unpack_add_patches(const floating* src, Py_ssize_t n_ch,
                              Py_ssize_t dst_h, Py_ssize_t dst_w,
                              const Py_ssize_t* row_off, Py_ssize_t n_u,
                              const Py_ssize_t* col_off, Py_ssize_t n_v,
                              Py_ssize_t step_i, Py_ssize_t step_j,
                              Py_ssize_t grid_w, Py_ssize_t p0, Py_ssize_t count,
                              floating* dst) noexcept nogil:
    """The adjoint of ``_pack_patches`` (col2im): add the patch matrix back.

    ``dst[c, qi*step_i + row_off[iu], qj*step_j + col_off[iv]] += src[row, l]``
    for every in-plane target, in row-major order of (row, l), so the sums
    always happen in the same order.
    """
    cdef Py_ssize_t c, iu, iv, l, qi, qj, seg, ii, co, lo, hi, a, b, t, base
    cdef Py_ssize_t plane = dst_h * dst_w
    cdef const floating* s
    for c in range(n_ch):
        for iu in range(n_u):
            for iv in range(n_v):
                s = src + ((c * n_u + iu) * n_v + iv) * count
                co = col_off[iv]
                lo = max(0, _ceil_div(-co, step_j))
                hi = _floor_div(dst_w - 1 - co, step_j) + 1
                qi = p0 // grid_w
                qj = p0 - qi * grid_w
                l = 0
                while l < count:
                    seg = min(grid_w - qj, count - l)
                    ii = qi * step_i + row_off[iu]
                    if 0 <= ii < dst_h and hi > lo:
                        a = min(max(lo, qj), qj + seg)
                        b = max(min(hi, qj + seg), a)
                        base = c * plane + ii * dst_w + co   # integer offsets, as above
                        if step_j == 1 and b > a:
                            if floating is float:
                                fc_add_row_f32(dst + base + a, s + l + a - qj, b - a)
                            else:
                                fc_add_row_f64(dst + base + a, s + l + a - qj, b - a)
                        elif step_j == 2 and b > a:
                            if floating is float:
                                fc_scatter_add_even_f32(dst + base + 2 * a, s + l + a - qj, b - a)
                            else:
                                fc_scatter_add_even_f64(dst + base + 2 * a, s + l + a - qj, b - a)
                        else:
                            for t in range(a, b):
                                dst[base + t * step_j] += s[l + t - qj]
                    l += seg
                    qi += 1
                    qj = 0


# --- conv2d forward ----------------------------------------------------------

cdef inline void _add_bias(floating* dst, const floating* bias, Py_ssize_t channels,
                           Py_ssize_t count, Py_ssize_t plane) noexcept nogil:
    """``dst[c * plane + l] += bias[c]`` for c < channels, l < count: a tile
    of output channels' planes gets its bias after the GEMMs."""
    cdef Py_ssize_t c, l
    cdef floating b
    for c in range(channels):
        b = bias[c]
        for l in range(count):
            dst[c * plane + l] += b


def conv2d_forward(const floating[:, :, :, ::1] x,
                   const floating[:, :, :, ::1] weight,
                   const floating[::1] bias,
                   bint has_bias,
                   floating[:, :, :, ::1] out,
                   Py_ssize_t stride_h, Py_ssize_t stride_w,
                   Py_ssize_t pad_top, Py_ssize_t pad_left,
                   Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, int n_threads):
    """Cross-correlation ``out = conv2d(x, weight) + bias`` (inputs trusted).

    ``out`` must be ``(N, C_out, Ho, Wo)`` with the sizes the Python layer
    computed; ``pad_top``/``pad_left`` are the leading paddings (the trailing
    ones are implied by ``Ho``/``Wo``).
    """
    if x.shape[0] == 0 or out.shape[2] * out.shape[3] == 0 or weight.shape[0] == 0:
        return
    cdef Py_ssize_t[::1] row_off = np.arange(weight.shape[2], dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(weight.shape[3], dtype=np.intp) * dil_w - pad_left
    _correlate(x, weight, False, bias, has_bias, out, row_off, col_off,
               stride_h, stride_w, groups, n_threads)


cdef int _correlate(const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] weight, bint swapped,
                    const floating[::1] bias, bint has_bias,
                    floating[:, :, :, ::1] out,
                    const Py_ssize_t[::1] row_off, const Py_ssize_t[::1] col_off,
                    Py_ssize_t stride_h, Py_ssize_t stride_w,
                    Py_ssize_t groups, int n_threads) except -1:
    """``out[n, g*og + o, p, q] = sum over c, iu, iv of w[o, c, iu, iv] *
    x[n, g*cg + c, p*stride_h + row_off[iu], q*stride_w + col_off[iv]]``
    (zero outside ``x``) ``+ bias``: the forward (``w = weight``), or with
    ``swapped`` the stride-1 input gradient's correlation of dY with the
    in/out-swapped filters (``w[c, o] = weight[o, c]`` per group; the
    rotation lies in its offsets).  Takes the row-shift lowering or the
    full im2col, whichever ``_row_shift_pays``.
    """
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t c_out = out.shape[1]
    cdef Py_ssize_t og = c_out // groups, cg = x.shape[1] // groups
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t positions = out_h * out_w, k_dim = cg * kh * kw
    cdef Py_ssize_t in_plane = in_h * in_w
    # 1x1, stride 1, no offset: the input planes already are the patch matrix
    cdef bint direct = (kh == 1 and kw == 1 and stride_h == 1 and stride_w == 1
                        and row_off[0] == 0 and col_off[0] == 0
                        and in_h == out_h and in_w == out_w)
    cdef Py_ssize_t tile = _tile_size(k_dim, positions, n_img * groups, sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    # small whole images: `batch` of them side by side in one GEMM, whose
    # og x (batch*positions) result waits in the workspace to be copied out
    cdef Py_ssize_t batch = 1
    if not direct and n_tiles == 1:
        batch = _image_batch(positions, n_img, k_dim + og, sizeof(floating))
    cdef Py_ssize_t tile_rows, iu, top = row_off[0], bottom = row_off[0]
    if ROW_SHIFT != 0 and stride_h == 1 and kh > 1:
        for iu in range(kh):        # the halo: the offsets' spread
            top = min(top, row_off[iu])
            bottom = max(bottom, row_off[iu])
        tile_rows = _row_shift_tile_rows(cg * kw, out_h, out_w, bottom - top,
                                         n_img * groups, sizeof(floating))
        if tile_rows > 0 and _row_shift_pays(og, kh, min(tile_rows * out_w, positions),
                                             batch * min(tile, positions)):
            _correlate_row_shift(x, _filter_rows(weight, groups, swapped, n_threads),
                                 bias, has_bias, out, row_off, col_off, stride_w, groups,
                                 tile_rows, n_threads)
            return 0
    # the filters as og x k_dim matrices, one per group
    cdef const floating[:, :, :, ::1] w_mat = (
        _swapped_filters(weight, groups, n_threads) if swapped else weight)
    cdef Py_ssize_t n_batches = _ceil_div(n_img, batch)
    # a batch's rows in items of BATCH_ITEM_ROWS (rounded to whole panels)
    cdef Py_ssize_t item_rows = og
    if batch > 1:
        item_rows = _ceil_div(og, _ceil_div(og, BATCH_ITEM_ROWS))
        item_rows = min(og, _ceil_div(item_rows, 8) * 8)
    cdef Py_ssize_t n_row_items = _ceil_div(og, item_rows)
    cdef Py_ssize_t n_items = n_batches * groups * n_tiles * n_row_items
    cdef Py_ssize_t work_size = (k_dim + og) * batch * positions if batch > 1 else k_dim * tile
    # strided: one plane of scratch for _pack_patches' phase planes, after the rest
    cdef Py_ssize_t phases_at = work_size
    if stride_h > 1 or stride_w > 1:
        work_size += in_plane
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &w_mat[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, t, p0, count, m, i, o, o0, rows, cols, key
    cdef const floating* src
    cdef floating* dst
    cdef floating* res
    cdef floating* work = NULL
    cdef Py_ssize_t* packed_key = NULL      # (batch, group) of the thread's patches
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = NULL
            packed_key = NULL
            if not direct:
                work = <floating*>_workspace(work_size * sizeof(floating))
                packed_key = <Py_ssize_t*>_workspace(sizeof(Py_ssize_t))
                if work == NULL or packed_key == NULL:
                    free(work)
                    work = NULL
                    status_p[0] = STATUS_NO_MEMORY
                else:
                    packed_key[0] = -1
            for item in prange(n_items, schedule="static"):
                if batch > 1 and work != NULL:
                    key = item // n_row_items          # batch * groups + group
                    n = key // groups * batch
                    g = key % groups
                    o0 = item % n_row_items * item_rows
                    rows = min(item_rows, og - o0)
                    m = min(batch, n_img - n)
                    cols = m * positions
                    res = work + k_dim * cols
                    if packed_key[0] != key:         # not packed by the item before
                        for i in range(m):
                            _pack_patches(xp + ((n + i) * groups + g) * cg * in_plane, cg,
                                          in_h, in_w, &row_off[0], kh, &col_off[0], kw,
                                          stride_h, stride_w, out_w, 0, positions,
                                          work + i * positions, cols, work + phases_at)
                        packed_key[0] = key
                    gemm(NO_TRANS, NO_TRANS, rows, cols, k_dim,
                         <floating>1, wp + (g * og + o0) * k_dim, k_dim,
                         work, cols, <floating>0, res + o0 * cols, cols)
                    for i in range(m):
                        dst = yp + ((n + i) * c_out + g * og + o0) * positions
                        for o in range(rows):
                            memcpy(dst + o * positions, res + (o0 + o) * cols + i * positions,
                                   positions * sizeof(floating))
                        if has_bias:
                            _add_bias(dst, bp + g * og + o0, rows, positions, positions)
                elif direct or work != NULL:
                    n = item // (groups * n_tiles)
                    g = (item // n_tiles) % groups
                    t = item % n_tiles
                    p0 = t * tile
                    count = min(tile, positions - p0)
                    src = xp + (n * groups + g) * cg * in_plane
                    dst = yp + (n * c_out + g * og) * positions + p0
                    if direct:
                        gemm(NO_TRANS, NO_TRANS, og, count, k_dim,
                             <floating>1, wp + g * og * k_dim, k_dim,
                             src + p0, positions, <floating>0, dst, positions)
                    else:
                        _pack_patches(src, cg, in_h, in_w, &row_off[0], kh, &col_off[0], kw,
                                      stride_h, stride_w, out_w, p0, count, work, count,
                                      work + phases_at)
                        gemm(NO_TRANS, NO_TRANS, og, count, k_dim,
                             <floating>1, wp + g * og * k_dim, k_dim,
                             work, count, <floating>0, dst, positions)
                    if has_bias:
                        _add_bias(dst, bp + g * og, og, count, positions)
            free(work)
            free(packed_key)
    finally:
        blas_serial_exit()
    _raise_for_status(status)
    return 0


def _swapped_filters(const floating[:, :, :, ::1] weight, Py_ssize_t groups, int n_threads):
    """``out[g*cg + c, o] = weight[g*og + o, c]`` (each ``kh x kw`` block as
    it is): the input gradient's in/out-swapped filters, a ``(C_in, og, kh,
    kw)`` array, one row per input channel, copied in parallel."""
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, taps = kh * kw
    swapped = np.empty((cg * groups, og, kh, kw),
                       dtype=np.float32 if floating is float else np.float64)
    if swapped.size == 0:
        return swapped
    cdef floating[:, :, :, ::1] view = swapped
    cdef floating* dst = &view[0, 0, 0, 0]
    cdef const floating* src = &weight[0, 0, 0, 0]
    cdef const floating* run
    cdef Py_ssize_t d, o, t
    with nogil:
        # a destination row at a time: its runs lie cg*taps apart in the
        # source, where the next row's runs follow on the same cache lines;
        # runs of a few elements copied inline (memcpy calls cost 2x)
        for d in prange(cg * groups, schedule="static", num_threads=n_threads):
            for o in range(og):
                run = src + (((d // cg) * og + o) * cg + d % cg) * taps
                for t in range(taps):
                    dst[(d * og + o) * taps + t] = run[t]
    return swapped


cdef Py_ssize_t _row_shift_tile_rows(Py_ssize_t k_row, Py_ssize_t out_h, Py_ssize_t out_w,
                                     Py_ssize_t halo, Py_ssize_t outer, Py_ssize_t itemsize):
    """Output rows per tile of ``_correlate_row_shift`` (the tile's packed rows
    are its output rows plus ``halo`` more), sized as ``_tile_size`` sizes an
    im2col tile with ``k_row`` packed rows; 0 when the halo would more than
    double the packed rows (tall dilated filters on short tiles), where
    the full im2col packs less."""
    if out_h <= 0 or out_w <= 0:
        return 0
    cdef Py_ssize_t tile = _tile_size(k_row, out_h * out_w, outer, itemsize)
    cdef Py_ssize_t rows = max(1, min(out_h, tile // out_w))
    if halo > rows or (rows + halo) * out_w * k_row * itemsize > MAX_WORK_BYTES:
        return 0
    return rows


def _filter_rows(const floating[:, :, :, ::1] weight, Py_ssize_t groups, bint swapped,
                 int n_threads):
    """The filters as ``_correlate_row_shift``'s left operands, one matrix
    per filter row ``iu``: ``rows[iu, o, c*kw + iv] = w[o, c, iu, iv]``
    (the forward), or in/out-swapped per group (the input gradient)
    ``rows[iu, g*cg + c, o*kw + iv] = w[g*og + o, c, iu, iv]``.

    Loops, by destination row, reading each filter's kh x kw block once:
    0.6-0.9 ms for the big layer's 256 x 256 x 3 x 3 filters, where NumPy's
    copy of the equivalent transpose (a call per 3-element inner run) took
    2 ms (forward) and 3-9 ms (input gradient).
    """
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, c_in = cg * groups
    cdef Py_ssize_t n_dst = c_in if swapped else c_out      # rows per filter row
    cdef Py_ssize_t n_src = og if swapped else cg           # kw-runs per row
    rows = np.empty((kh, n_dst, n_src * kw), dtype=np.float32 if floating is float
                    else np.float64)
    if rows.size == 0:
        return rows
    cdef floating[:, :, ::1] rows_view = rows
    cdef floating* dst = &rows_view[0, 0, 0]
    cdef const floating* src = &weight[0, 0, 0, 0]
    cdef Py_ssize_t iu, d, s, iv, row_len = n_src * kw, taps = kh * kw
    cdef Py_ssize_t first, step     # src offset of run s = 0, and between runs
    cdef const floating* block
    with nogil:
        # by destination row d over all filter rows at once: each filter's
        # kh x kw block is read whole, once
        for d in prange(n_dst, schedule="static", num_threads=n_threads):
            if swapped:    # d = g*cg + c; run s = o within group g
                first = ((d // cg) * og * cg + d % cg) * taps
                step = cg * taps
            else:          # d = o; run s = c
                first = d * cg * taps
                step = taps
            for s in range(n_src):
                block = src + first + s * step
                for iu in range(kh):
                    for iv in range(kw):
                        dst[(iu * n_dst + d) * row_len + s * kw + iv] = block[iu * kw + iv]
    return rows


def _correlate_row_shift(const floating[:, :, :, ::1] src,
                         const floating[:, :, ::1] w_rows,
                         const floating[::1] bias, bint has_bias,
                         floating[:, :, :, ::1] out,
                         const Py_ssize_t[::1] row_off, const Py_ssize_t[::1] col_off,
                         Py_ssize_t stride_w, Py_ssize_t groups, Py_ssize_t tile_rows,
                         int n_threads):
    """A correlation with vertical stride 1, with less packing than im2col:
    the forward, and the stride-1 input gradient (dY correlated with the
    rotated, swapped filters).

    ``out[n, g*cd + d, p, q] = sum over c, iu, iv of w_rows[iu, g*cd + d,
    c*kw + iv] * src[n, g*cs + c, p + row_off[iu], q*stride_w + col_off[iv]]``
    (zero outside ``src``), ``+ bias[g*cd + d]``.

    With stride 1 down the columns, the patch rows of filter row iu are
    those of the topmost filter row moved down by row_off[iu] - min(row_off)
    rows.  So a tile of output rows [p0, p0 + rows) packs its patches once
    per (channel, column tap) over rows + halo output rows, a ``cs*kw x L``
    matrix (kw / kh of im2col's bytes, plus the halo), and adds up kh GEMMs

        out[g][:, tile] (+)= W_iu[g] (cd x cs*kw) @ patches[:, shift_iu * out_w :]

    straight into ``out`` (beta = 1 after the first), so nothing is
    unpacked.  Items and their order depend only on the shape, as in the
    im2col path, so the result does not depend on the thread count.
    """
    cdef Py_ssize_t n_img = src.shape[0], src_h = src.shape[2], src_w = src.shape[3]
    cdef Py_ssize_t kh = row_off.shape[0], kw = col_off.shape[0]
    cdef Py_ssize_t c_dst = w_rows.shape[1], k_row = w_rows.shape[2]
    cdef Py_ssize_t cs = k_row // kw, cd = c_dst // groups
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t positions = out_h * out_w, src_plane = src_h * src_w
    cdef Py_ssize_t top = min(row_off), halo = max(row_off) - top
    cdef Py_ssize_t n_tiles = _ceil_div(out_h, tile_rows)
    cdef Py_ssize_t n_items = n_img * groups * n_tiles
    cdef Py_ssize_t work_len = (tile_rows + halo) * out_w
    # [packed patches (k_row x work_len)] [phase planes, column stride > 1]
    cdef Py_ssize_t work_size = k_row * work_len + (src_plane if stride_w > 1 else 0)
    cdef const floating* sp = &src[0, 0, 0, 0]
    cdef const floating* wp = &w_rows[0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef const Py_ssize_t* rop = &row_off[0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, t, iu, p0, rows, packed
    cdef floating* dst
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = <floating*>_workspace(work_size * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work != NULL:
                    n = item // (groups * n_tiles)
                    g = (item // n_tiles) % groups
                    t = item % n_tiles
                    p0 = t * tile_rows
                    rows = min(tile_rows, out_h - p0)
                    packed = (rows + halo) * out_w
                    # the topmost filter row's patches over output rows
                    # [p0, p0 + rows + halo)
                    _pack_patches(sp + (n * groups + g) * cs * src_plane, cs, src_h, src_w,
                                  &top, 1, &col_off[0], kw, 1, stride_w, out_w,
                                  p0 * out_w, packed, work, packed, work + k_row * work_len)
                    dst = yp + (n * c_dst + g * cd) * positions + p0 * out_w
                    for iu in range(kh):
                        gemm(NO_TRANS, NO_TRANS, cd, rows * out_w, k_row,
                             <floating>1, wp + (iu * c_dst + g * cd) * k_row, k_row,
                             work + (rop[iu] - top) * out_w, packed,
                             <floating>(0 if iu == 0 else 1), dst, positions)
                    if has_bias:
                        _add_bias(dst, bp + g * cd, cd, rows * out_w, positions)
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


def gemm_split(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
               bint trans_a, bint trans_b, int n_threads):
    """``c = op(a) @ op(b)`` (``op(a) = a.T`` with ``trans_a``, likewise
    ``b``) the way the kernels run their GEMMs: the longer side of ``c`` cut
    into blocks of at least GEMM_SPLIT_MIN rows (or columns), at most
    GEMM_SPLIT_BLOCKS of them, one single-threaded ``gemm`` each, over up to
    ``n_threads`` threads in one OpenMP region.  The blocks depend on the
    shape only, so the result is the same bit for bit for any thread count
    (the shape of a product decides which GEMM sums it).  Shapes trusted:
    ``op(a)`` m x k, ``op(b)`` k x n, ``c`` m x n.

    The Linear layer's products: fastconv's threads keep the cores (a
    multithreaded BLAS call between two kernels leaves its workers spinning
    against them, see ``layers._matmul``).  And the speed reference of
    ``python -m fastconv bench`` for a BLAS that NumPy's matmul does not
    run on (a oneMKL that ``FASTCONV_BLAS=mkl`` loaded single-threaded).
    """
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    # row-major operands: the leading dimension is the stored row length
    cdef Py_ssize_t lda = a.shape[1], ldb = b.shape[1]
    cdef bint by_rows = m >= n
    cdef Py_ssize_t side = m if by_rows else n
    cdef Py_ssize_t blocks = max(1, min(GEMM_SPLIT_BLOCKS, side // GEMM_SPLIT_MIN))
    cdef Py_ssize_t part, r0, r1, i
    cdef Transpose op_a = TRANS if trans_a else NO_TRANS
    cdef Transpose op_b = TRANS if trans_b else NO_TRANS
    if m == 0 or n == 0:
        return
    cdef floating* cp = &c[0, 0]
    if k == 0:
        for i in range(m * n):
            cp[i] = 0
        return
    cdef const floating* ap = &a[0, 0]
    cdef const floating* bp = &b[0, 0]
    blas_serial_enter()
    try:
        with nogil:
            for part in prange(blocks, schedule="static",
                               num_threads=max(1, min(n_threads, blocks))):
                r0 = part * side // blocks
                r1 = (part + 1) * side // blocks
                if by_rows:     # rows r0:r1 of op(a): of a, or its columns
                    gemm(op_a, op_b, r1 - r0, n, k, <floating>1,
                         ap + (r0 if trans_a else r0 * lda), lda, bp, ldb,
                         <floating>0, cp + r0 * n, n)
                else:           # columns r0:r1 of op(b): of b, or its rows
                    gemm(op_a, op_b, m, r1 - r0, k, <floating>1, ap, lda,
                         bp + (r0 * ldb if trans_b else r0), ldb,
                         <floating>0, cp + r0, n)
    finally:
        blas_serial_exit()


# --- conv2d filter gradient --------------------------------------------------

cdef Py_ssize_t _reduction_slots(Py_ssize_t n_parts, Py_ssize_t w_size,
                                 Py_ssize_t itemsize, Py_ssize_t n_blocks=1) noexcept nogil:
    """Partial-sum buffers of a filter gradient cut into ``n_blocks``
    independent blocks: enough for blocks x slots to reach MIN_ITEMS (with
    the default of one block: MAX_SLOTS), at most MAX_SLOTS, at least
    MIN_SLOT_PARTS parts to sum in each (but one slot always), within
    SLOT_BYTES_BUDGET.  A function of the
    shape only, so the summation order never depends on the threads."""
    cdef Py_ssize_t n_slots = min(MAX_SLOTS, n_parts // max(1, MIN_SLOT_PARTS))
    if n_blocks > 1:
        n_slots = min(n_slots, _ceil_div(MIN_ITEMS, n_blocks))
    # (an empty gradient, which the Python layer never passes: no division by 0)
    return max(1, min(n_slots, SLOT_BYTES_BUDGET // max(1, w_size * itemsize)))


cdef Py_ssize_t _grad_weight_block(Py_ssize_t n_units, Py_ssize_t unit_bytes,
                                   Py_ssize_t limit):
    """Units per block of a group's filter gradient cut into blocks of
    whole units (NCHW: input channels, a column block each ``og x k_row``;
    NHWC: kernel rows, a row block each ``kw*cg x og``): the fewest blocks
    of at most ``limit`` bytes each (all units at once for a limit <= 0),
    cut evenly.  A function of the shape only."""
    if limit <= 0 or n_units <= 1:
        return max(n_units, 1)
    cdef Py_ssize_t n_blocks = min(n_units, _ceil_div(n_units * unit_bytes, limit))
    return _ceil_div(n_units, max(n_blocks, 1))


cdef void _add_slots_transposed(floating* partial, Py_ssize_t n_slots,
                                Py_ssize_t groups, Py_ssize_t og, Py_ssize_t k_dim,
                                floating* out, int n_threads) noexcept nogil:
    """As _add_slots, for slots that hold each group's ``dW^T`` (k_dim x
    og): ``out[g, o, k] = partial[0, g, k, o] + partial[1, g, k, o] + ...``.
    The slots are first added into slot 0 where they lie (contiguous,
    vectorized; the same order, so the same bits), then slot 0 is
    transposed once: adding along the strided transpose read each slot
    with a stride of og elements (5.8 % of pw1x1's float32 fwd+bwd, perf)."""
    cdef Py_ssize_t row, g, o, k
    cdef Py_ssize_t w_size = groups * og * k_dim
    cdef const floating* src
    _add_slots(partial, n_slots, w_size, partial, n_threads)
    for row in prange(groups * og, schedule="static", num_threads=n_threads):
        g = row // og
        o = row % og
        src = partial + g * og * k_dim + o
        for k in range(k_dim):
            out[row * k_dim + k] = src[k * og]


cdef enum:
    SLOT_CHUNK = 2048   # elements per work item of _add_slots


cdef void _add_slots(const floating* partial, Py_ssize_t n_slots, Py_ssize_t size,
                     floating* out, int n_threads) noexcept nogil:
    """``out[i] = partial[0, i] + partial[1, i] + ...``, slots in order.

    By chunks, slot by slot, so that the inner loop runs along contiguous
    memory (vectorized).  ``out`` may be ``partial`` itself (slot 0)."""
    cdef Py_ssize_t chunk, i, i0, i1, s
    cdef floating* dst
    for chunk in prange(_ceil_div(size, SLOT_CHUNK), schedule="static",
                        num_threads=n_threads):
        i0 = chunk * SLOT_CHUNK
        i1 = min(size, i0 + SLOT_CHUNK)
        dst = out
        if out != partial:
            memcpy(out + i0, partial + i0, (i1 - i0) * sizeof(floating))
        for s in range(1, n_slots):
            for i in range(i0, i1):
                dst[i] = dst[i] + partial[s * size + i]


def conv2d_grad_weight(const floating[:, :, :, ::1] x,
                       const floating[:, :, :, ::1] grad_out,
                       floating[:, :, :, ::1] grad_weight,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left,
                       Py_ssize_t dil_h, Py_ssize_t dil_w,
                       Py_ssize_t groups, int n_threads):
    """``grad_weight = sum over images and positions of dY x patches(X)^T``.

    Each group's ``og x k_dim`` gradient may be cut into column blocks of
    whole input channels (``_grad_weight_block``: a block stays in
    L2 while the products over all images add into it).  The (image, tile)
    products of a block are split into a fixed number of reduction slots
    (with several blocks, few enough that blocks x slots just reaches
    MIN_ITEMS work items); each slot is summed in order into its own buffer
    and the slots are added in order.  Blocks and slots depend on the shape
    only, so the result is the same bit for bit for any thread count.

    float32 layers with at most 64 output channels per group, fewer than
    the patch rows (``og <= 64``, ``og < k_dim``), compute
    ``dW^T = patches x dY^T`` instead, the long side as the GEMM's M.
    Measured on the suite: OpenBLAS's AVX-512 sgemm runs that 1.37x faster
    for the vgg3x3 layer (og 64, k_dim 576), 1.15x for lenet2, 1.11x for
    pw1x1, but 0.70x and 0.93x with og = 256 (res_s2, big); its AVX2
    sgemm ran the small-og layers alike either way; the dgemms preferred
    the plain orientation.  The slots then hold each group's transpose,
    undone as they are added.  The products the own GEMM takes
    (``own_gemm_takes``, AVX-512) keep the plain orientation: it ran them
    faster (filter gradient, 2 threads: lenet2 1.12x, pw1x1 1.11x, the
    ResNet stem 1.10x, 16x32x32x32 -> 64 5x5 1.05x).
    """
    cdef Py_ssize_t n_img = x.shape[0], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = grad_weight.shape[0], cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t positions = out_h * out_w, k_row = kh * kw, k_dim = cg * k_row
    cdef Py_ssize_t in_plane = in_h * in_w, w_size = c_out * k_dim
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    cdef Py_ssize_t i
    if n_img == 0 or positions == 0 or w_size == 0:
        for i in range(w_size):
            dwp[i] = 0
        return
    cdef bint direct = (kh == 1 and kw == 1 and stride_h == 1 and stride_w == 1
                        and pad_top == 0 and pad_left == 0)
    cdef bint strided = stride_h > 1 or stride_w > 1
    # column blocks of `cb` input channels (the last one may have fewer)
    cdef Py_ssize_t cb = _grad_weight_block(
        cg, og * k_row * sizeof(floating),
        GW_BLOCK_BYTES_F64 if floating is double
        else (GW_BLOCK_BYTES_F32 if og * k_dim * <Py_ssize_t>sizeof(floating)
              >= GW_BLOCK_FROM_BYTES_F32 else 0))
    cdef Py_ssize_t n_cb = _ceil_div(cg, cb)
    cdef Py_ssize_t tile = _grad_weight_tile_size(cb * k_row, positions, n_img,
                                                  sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t n_red = n_img * n_tiles          # products summed per block
    cdef Py_ssize_t n_slots = _reduction_slots(n_red, w_size, sizeof(floating),
                                               groups * n_cb if n_cb > 1 else 1)
    cdef Py_ssize_t n_units = groups * n_cb * n_slots
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    # (not when the slots' byte budget already held them to one: the
    # transpose needs a slot buffer of its own; not for the own GEMM)
    cdef bint transposed = (floating is float and GW_TRANSPOSE_F32 and og <= 64 and og < k_dim
                            and not own_gemm_takes(og, cb * k_row, min(tile, positions),
                                                   sizeof(floating))
                            and w_size * <Py_ssize_t>sizeof(floating) <= SLOT_BYTES_BUDGET)
    cdef bint own_slots = n_slots > 1 or transposed
    cdef floating* partial = dwp
    if own_slots:
        partial = <floating*>_workspace(n_slots * w_size * sizeof(floating))
        if partial == NULL:
            raise MemoryError("fastconv: could not allocate filter-gradient partial sums")
    cdef Py_ssize_t unit, g, blk, c0, nc, cols, s, r, r0, r1, n, t, p0, count, ld_patches
    cdef floating beta
    cdef floating* acc
    cdef const floating* patches
    cdef const floating* src
    cdef const floating* dy
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = NULL
            if not direct:
                # [patch tile (cb*k_row x tile)] [phase planes, strided layers]
                work = <floating*>_workspace((cb * k_row * tile + (in_plane if strided else 0))
                                             * sizeof(floating))
                if work == NULL:
                    status_p[0] = STATUS_NO_MEMORY
            for unit in prange(n_units, schedule="static"):
                if direct or work != NULL:
                    g = unit // (n_cb * n_slots)
                    blk = unit // n_slots % n_cb
                    s = unit % n_slots
                    c0 = blk * cb
                    nc = min(cb, cg - c0)
                    cols = nc * k_row
                    # block column c0*k_row of the group's og x k_dim gradient
                    # (of its k_dim x og transpose: block row c0*k_row)
                    acc = (partial + s * w_size + g * og * k_dim + c0 * k_row * og if transposed
                           else partial + s * w_size + g * og * k_dim + c0 * k_row)
                    r0 = s * n_red // n_slots
                    r1 = (s + 1) * n_red // n_slots
                    for r in range(r0, r1):
                        n = r // n_tiles
                        t = r % n_tiles
                        p0 = t * tile
                        count = min(tile, positions - p0)
                        src = xp + ((n * groups + g) * cg + c0) * in_plane
                        dy = gp + (n * c_out + g * og) * positions + p0
                        if not direct:
                            _pack_patches(src, nc, in_h, in_w, &row_off[0], kh, &col_off[0], kw,
                                          stride_h, stride_w, out_w, p0, count, work, count,
                                          work + cb * k_row * tile)
                        # patches: the input rows themselves for 1x1 layers
                        patches = src + p0 if direct else work
                        ld_patches = positions if direct else count
                        # the slot's first product overwrites (no clearing pass)
                        beta = <floating>(0 if r == r0 else 1)
                        if transposed:
                            gemm(NO_TRANS, TRANS, cols, og, count, <floating>1,
                                 patches, ld_patches, dy, positions, beta, acc, og)
                        else:
                            gemm(NO_TRANS, TRANS, og, cols, count, <floating>1,
                                 dy, positions, patches, ld_patches, beta, acc, k_dim)
            free(work)
        if own_slots and status == STATUS_OK:
            with nogil:
                if transposed:
                    _add_slots_transposed(partial, n_slots, groups, og, k_dim, dwp, n_threads)
                else:
                    _add_slots(partial, n_slots, w_size, dwp, n_threads)
    finally:
        blas_serial_exit()
        if own_slots:
            free(partial)
    _raise_for_status(status)


cdef extern from "_gradw_avx512.h" nogil:
    int FC_GRADW_MR, FC_GRADW_NR
    int fc_gradw_avx512_cpu()
    void fc_gradw_block_s(const float* g, Py_ssize_t g_row, Py_ssize_t g_img,
                          const float* x0, const float* x1, const float* x2, const float* x3,
                          Py_ssize_t x_img, Py_ssize_t n_img, Py_ssize_t k_len,
                          int mr, int nr, float* out, Py_ssize_t ld_out, int accumulate)
    void fc_gradw_block_d(const double* g, Py_ssize_t g_row, Py_ssize_t g_img,
                          const double* x0, const double* x1, const double* x2,
                          const double* x3, Py_ssize_t x_img, Py_ssize_t n_img,
                          Py_ssize_t k_len, int mr, int nr, double* out, Py_ssize_t ld_out,
                          int accumulate)

cdef bint DIRECT_GW_CPU = fc_gradw_avx512_cpu()


cdef inline const floating* _tap_row(const floating* planes, Py_ssize_t j, Py_ssize_t j_dim,
                                     Py_ssize_t c0, Py_ssize_t taps, Py_ssize_t kw,
                                     Py_ssize_t plane, Py_ssize_t row_step,
                                     Py_ssize_t col_step) noexcept nogil:
    """Where row j = (channel, tap) of the direct filter gradient starts:
    the channel's padded plane (channels from c0 on) shifted by the tap;
    rows past the last (j >= j_dim) repeat the last."""
    cdef Py_ssize_t r
    j = min(j, j_dim - 1)
    r = j % taps
    return planes + (c0 + j // taps) * plane + r // kw * row_step + r % kw * col_step


def direct_grad_weight_available():
    """Whether ``conv2d_grad_weight_direct`` can run here (AVX-512)."""
    return bool(DIRECT_GW_CPU)


def conv2d_grad_weight_direct(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] grad_out,
                              floating[:, :, :, ::1] grad_weight,
                              Py_ssize_t pad_top, Py_ssize_t pad_left,
                              Py_ssize_t dil_h, Py_ssize_t dil_w,
                              Py_ssize_t groups, int n_threads):
    """Stride-1 filter gradient as dot products of shifted planes, without
    im2col.  Returns False, having written ``grad_weight`` partly or not at
    all, where it cannot run: a CPU without AVX-512, a plane too large to
    pad, or an input value that is not finite (the caller then takes
    ``conv2d_grad_weight``).

    With the sensitivity map ``dY`` copied into rows of pitch ``P = Wo +
    (kw-1)*dw`` (zeros beyond column Wo) and each input plane zero-padded
    to that pitch, ``dW[o, c, u, v]`` is the dot product of plane ``dY_o``
    with plane ``X_c`` shifted by ``u*dh*P + v*dw`` (``_gradw_avx512.h``:
    blocks of 4 filters x 4 (channel, tap) rows, both read in place).  The
    zero columns of dY meet input values, so this holds for finite inputs
    only (0 * inf is NaN); the padding copy checks them.

    Images are padded a chunk at a time (``DIRECT_GW_CHUNK_BYTES``, in
    parallel), then the blocks are shared out among the threads; each block
    sums its chunk's images in order and adds the chunk's sums to dW in
    chunk order.  Chunks and blocks depend on the shape only, so the result
    is the same bit for bit for any thread count.
    """
    if not DIRECT_GW_CPU:
        return False
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = grad_weight.shape[0], cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t og = c_out // groups, taps = kh * kw, j_dim = cg * taps
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    cdef Py_ssize_t lanes = 64 // sizeof(floating)
    # the padded planes' sizes, in Python integers (a huge padding or
    # dilation would wrap a C product), within _padded_limit
    n_pitch = int(out_w) + (int(kw) - 1) * int(dil_w)
    n_rows = int(out_h) + (int(kh) - 1) * int(dil_h)
    if n_rows * n_pitch > _padded_limit(in_plane):
        return False
    cdef Py_ssize_t pitch = n_pitch, rows = n_rows
    if n_img == 0 or out_h * out_w == 0 or c_out * j_dim == 0:
        grad_weight[:, :, :, :] = 0      # (the API never calls it so)
        return True
    # dY planes: k_len elements (whole vectors); input planes: zeros after
    # their rows up to the end of the last tap's k_len elements (each plane
    # to itself: the plane after it, or dY, must not be read)
    cdef Py_ssize_t k_len = _ceil_div(out_h * pitch, lanes) * lanes
    cdef Py_ssize_t x_plane = _ceil_div((kh - 1) * dil_h * pitch + (kw - 1) * dil_w + k_len,
                                        lanes) * lanes
    cdef Py_ssize_t g_plane = k_len
    cdef Py_ssize_t image_elems = c_in * x_plane + c_out * g_plane
    cdef Py_ssize_t chunk = max(1, min(n_img, DIRECT_GW_CHUNK_BYTES
                                        // (image_elems * <Py_ssize_t>sizeof(floating))))
    cdef Py_ssize_t n_chunks = _ceil_div(n_img, chunk)
    cdef Py_ssize_t n_ob = _ceil_div(og, FC_GRADW_MR), n_jb = _ceil_div(j_dim, FC_GRADW_NR)
    cdef Py_ssize_t n_blocks = groups * n_ob * n_jb
    cdef void* raw = _workspace(chunk * image_elems * sizeof(floating) + 64)
    if raw == NULL:
        raise MemoryError("fastconv: could not allocate the filter gradient's padded planes")
    cdef floating* xbuf = <floating*>_align64(raw)
    cdef floating* gbuf = xbuf + chunk * c_in * x_plane
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    cdef Py_ssize_t ch, n0, nc, item, i, c, blk, g, o0, j0
    cdef int mr, nr
    cdef int bad = 0
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    with nogil:
        # zero borders and tails, once: every chunk has the same geometry
        memset(xbuf, 0, chunk * image_elems * sizeof(floating))
        for ch in range(n_chunks):
            n0 = ch * chunk
            nc = min(chunk, n_img - n0)
            for item in prange(nc * (c_in + c_out), schedule="static", num_threads=n_threads):
                if item < nc * c_in:
                    i = item // c_in
                    c = item % c_in
                    _phase_plane(xp + ((n0 + i) * c_in + c) * in_plane, in_h, in_w, 1, 1,
                                 pad_top, pad_left, xbuf + item * x_plane, rows, pitch)
                    if not _all_finite(xbuf + item * x_plane, rows * pitch):
                        bad += 1
                else:
                    i = (item - nc * c_in) // c_out
                    c = (item - nc * c_in) % c_out
                    _phase_plane(gp + ((n0 + i) * c_out + c) * out_plane, out_h, out_w, 1, 1,
                                 0, 0, gbuf + (item - nc * c_in) * g_plane, out_h, pitch)
            if bad:
                break
            for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
                g = blk // (n_ob * n_jb)
                o0 = g * og + blk // n_jb % n_ob * FC_GRADW_MR
                j0 = blk % n_jb * FC_GRADW_NR
                mr = <int>min(<Py_ssize_t>FC_GRADW_MR, g * og + og - o0)
                nr = <int>min(<Py_ssize_t>FC_GRADW_NR, j_dim - j0)
                # the block's (channel, tap) rows, the last one repeated
                x0 = _tap_row(xbuf, j0, j_dim, g * cg, taps, kw, x_plane, dil_h * pitch, dil_w)
                x1 = _tap_row(xbuf, j0 + 1, j_dim, g * cg, taps, kw, x_plane, dil_h * pitch,
                              dil_w)
                x2 = _tap_row(xbuf, j0 + 2, j_dim, g * cg, taps, kw, x_plane, dil_h * pitch,
                              dil_w)
                x3 = _tap_row(xbuf, j0 + 3, j_dim, g * cg, taps, kw, x_plane, dil_h * pitch,
                              dil_w)
                if floating is float:
                    fc_gradw_block_s(gbuf + o0 * g_plane, g_plane, c_out * g_plane,
                                     x0, x1, x2, x3, c_in * x_plane, nc, k_len, mr, nr,
                                     dwp + o0 * j_dim + j0, j_dim, ch > 0)
                else:
                    fc_gradw_block_d(gbuf + o0 * g_plane, g_plane, c_out * g_plane,
                                     x0, x1, x2, x3, c_in * x_plane, nc, k_len, mr, nr,
                                     dwp + o0 * j_dim + j0, j_dim, ch > 0)
    free(raw)
    return bad == 0


# --- conv2d bias gradient ----------------------------------------------------

cdef enum:
    BIAS_LANES = 16     # float64 partial sums of the bias gradient


cdef inline double _sum_planes(const floating* first, Py_ssize_t n_planes,
                               Py_ssize_t plane_step, Py_ssize_t positions) noexcept nogil:
    """Sum of ``positions`` elements in each of ``n_planes`` planes, the
    planes ``plane_step`` elements apart: float64 lanes that each take every
    BIAS_LANES-th element, in a fixed order.  The literal inner loop
    vectorizes (float32 elements widened to float64 as they load); the
    former four scalar accumulators ran at about one element per cycle."""
    cdef double lanes[BIAS_LANES]
    cdef Py_ssize_t n, l, j, head = positions - positions % BIAS_LANES
    cdef const floating* row
    cdef double total = 0
    for j in range(BIAS_LANES):
        lanes[j] = 0
    for n in range(n_planes):
        row = first + n * plane_step
        for l in range(0, head, 16):    # 16 == BIAS_LANES (a literal step: Cython needs its sign)
            for j in range(BIAS_LANES):
                lanes[j] = lanes[j] + row[l + j]
        for l in range(head, positions):
            lanes[l - head] = lanes[l - head] + row[l]
    for j in range(BIAS_LANES):
        total = total + lanes[j]
    return total


def conv2d_grad_bias(const floating[:, :, :, ::1] grad_out,
                     floating[::1] grad_bias, int n_threads):
    """``grad_bias[o] = sum_{n, p, q} grad_out[n, o, p, q]``, summed in
    float64 lanes in a fixed order (``_sum_planes``), one channel per item."""
    cdef Py_ssize_t n_img = grad_out.shape[0], c_out = grad_out.shape[1]
    cdef Py_ssize_t positions = grad_out.shape[2] * grad_out.shape[3]
    cdef Py_ssize_t o
    if c_out == 0:
        return
    if n_img == 0 or positions == 0:
        for o in range(c_out):
            grad_bias[o] = 0
        return
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    with nogil:
        for o in prange(c_out, schedule="static", num_threads=n_threads):
            grad_bias[o] = <floating>_sum_planes(gp + o * positions, n_img,
                                                 c_out * positions, positions)


# --- conv2d input gradient ---------------------------------------------------

def _phases_1d(Py_ssize_t size, Py_ssize_t pad, Py_ssize_t k, Py_ssize_t stride,
               Py_ssize_t dil):
    """Split one spatial axis of the input gradient into stride phases.

    Padded input row ``t = q*stride + r`` receives tap ``u`` of the rotated
    filter only if ``u*dil = r (mod stride)``; it then reads row
    ``q - (u*dil - r)//stride`` of the sensitivity map.  Returns, for every
    residue that has taps and rows, ``(taps, dy_offsets, x_start, count)``:
    the filter taps, the dY row of tap ``taps[i]`` for local row 0 (local
    row ``j`` reads ``dy_offsets[i] + j``), the first input row and how many
    input rows (spaced by ``stride``) the phase covers.
    """
    phases = []
    by_residue = {}
    for u in range(k):
        by_residue.setdefault((u * dil) % stride, []).append(u)
    # residues without taps get no gradient: only visit those with taps
    # (the stride itself may be astronomically large)
    for r in sorted(by_residue):
        taps = by_residue[r]
        q0 = -((r - pad) // stride)                  # ceil((pad - r) / stride)
        q1 = (pad + size - 1 - r) // stride
        if q1 < q0:
            continue
        offsets = [q0 - (u * dil - r) // stride for u in taps]
        phases.append((taps, offsets, q0 * stride + r - pad, q1 - q0 + 1))
    return phases


cdef enum:
    FILTER_BLOCK = 16           # (c, o) block of _pack_phase_filters' transposes
    PARALLEL_PACK = 1 << 15     # fewer packed elements than this: one thread


def _pack_phase_filters(const floating[:, :, :, ::1] w, const Py_ssize_t[::1] taps_u,
                        const Py_ssize_t[::1] taps_v, Py_ssize_t groups, bint nhwc,
                        floating[::1] out, int n_threads=1):
    """One phase's in/out-swapped filters, packed at the start of ``out``:
    ``out[g, c, (o, iu, iv)]`` (NCHW weights ``w[o, c, u, v]``) or
    ``out[g, (iu, iv, o), c]`` (NHWC weights ``w[u, v, c, o]``), both
    ``= w at (g*og + o, c, taps_u[iu], taps_v[iv])``.

    Both are transposes of the (o, c) axes, done in FILTER_BLOCK square
    blocks: a whole column of 256 filters lies 9-18 KiB apart, a stride
    that maps every read onto the same few L1 sets.  (NumPy's fancy
    indexing and transposed copy took 9-22 ms for 256 x 256 x 3 x 3
    filters.)  Work items are (group, tap for NHWC, block of c), which
    write disjoint parts of ``out``."""
    cdef Py_ssize_t c_out, cg, kh, kw
    if nhwc:
        kh, kw, cg, c_out = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    else:
        c_out, cg, kh, kw = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    cdef Py_ssize_t og = c_out // groups, n_u = taps_u.shape[0], n_v = taps_v.shape[0]
    cdef Py_ssize_t n_taps = n_u * n_v
    if c_out * cg * n_taps == 0:
        return
    tap_offsets = np.empty(n_taps, dtype=np.intp)
    cdef Py_ssize_t[::1] toff = tap_offsets
    cdef Py_ssize_t g, c, o, ob, c0, o0, t, t2, iu, iv, unit
    for iu in range(n_u):
        for iv in range(n_v):
            toff[iu * n_v + iv] = (taps_u[iu] * kw + taps_v[iv]) * (cg * c_out if nhwc else 1)
    cdef const floating* wp = &w[0, 0, 0, 0]
    cdef floating* dst = &out[0]
    cdef const floating* src
    cdef floating* d
    cdef Py_ssize_t n_cb = _ceil_div(cg, FILTER_BLOCK), n_ob = _ceil_div(og, FILTER_BLOCK)
    cdef Py_ssize_t per_group = (n_taps if nhwc else 1) * n_cb
    if c_out * cg * n_taps < PARALLEL_PACK:
        n_threads = 1
    with nogil:
        for unit in prange(groups * per_group, schedule="static", num_threads=n_threads):
            g = unit // per_group
            t = unit % per_group // n_cb
            c0 = unit % n_cb * FILTER_BLOCK
            for ob in range(n_ob):
                o0 = ob * FILTER_BLOCK
                if nhwc:    # w[u, v, c, g*og + o] -> out[g, t, o, c]
                    src = wp + toff[t] + g * og
                    d = dst + (g * n_taps + t) * og * cg
                    for o in range(o0, min(o0 + FILTER_BLOCK, og)):
                        for c in range(c0, min(c0 + FILTER_BLOCK, cg)):
                            d[o * cg + c] = src[c * c_out + o]
                else:       # w[g*og + o, c, u, v] -> out[g, c, o, t]
                    for c in range(c0, min(c0 + FILTER_BLOCK, cg)):
                        for o in range(o0, min(o0 + FILTER_BLOCK, og)):
                            src = wp + ((g * og + o) * cg + c) * kh * kw
                            d = dst + ((g * cg + c) * og + o) * n_taps
                            for t2 in range(n_taps):
                                d[t2] = src[toff[t2]]


def _grad_input_plan(w, bint nhwc, Py_ssize_t groups, Py_ssize_t n_img,
                     Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t pad_top, Py_ssize_t pad_left,
                     Py_ssize_t stride_h, Py_ssize_t stride_w,
                     Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t itemsize,
                     int n_threads=1):
    """Work plan of the gather-order input gradient, shared by both layouts.

    Splits the dilated correlation into stride phases (``_phases_1d``), packs
    each phase's in/out-swapped filters as one GEMM operand per group, and
    cuts the phases' positions into tiles.  Returns None when no filter tap
    reaches the input, else ``(meta, tiles, r_off, c_off, packed, max_k,
    tile)``: per phase ``meta`` holds (first row offset, row taps, first
    column offset, column taps, first input row, rows, first input column,
    columns, packed-weight offset, GEMM inner size); ``tiles`` holds (phase,
    first position, count) items; ``r_off``/``c_off`` the dY offsets of each
    tap (the 180-degree rotation lives there: they run backwards as the tap
    index grows).  The packed filters of group g in a phase are
    ``Wp[g, c, (o, iu, iv)]`` for NCHW (a ``cg x k`` left operand) and
    ``Wp[g, (iu, iv, o), c]`` for NHWC (a ``k x cg`` right operand), both
    ``= w[o, c, taps_u[iu], taps_v[iv]]`` in PyTorch's weight indexing.
    """
    if nhwc:
        kh, kw, cg, c_out = w.shape
    else:
        c_out, cg, kh, kw = w.shape
    og = c_out // groups
    rows = _phases_1d(in_h, pad_top, kh, stride_h, dil_h)
    cols = _phases_1d(in_w, pad_left, kw, stride_w, dil_w)
    if not rows or not cols:
        return None
    n_phases = len(rows) * len(cols)
    meta = np.zeros((n_phases, 10), dtype=np.intp)
    row_offsets, col_offsets = [], []
    # every phase packs each filter tap once: kh*kw taps in all
    packed = np.empty(c_out * cg * kh * kw, dtype=w.dtype)
    max_k = 0
    pos_total = 0
    packed_size = 0
    i = 0
    for taps_u, offs_u, x_i0, count_i in rows:
        for taps_v, offs_v, x_j0, count_j in cols:
            _pack_phase_filters(w, np.array(taps_u, dtype=np.intp),
                                np.array(taps_v, dtype=np.intp), groups, nhwc,
                                packed[packed_size:], n_threads)
            k_phase = og * len(taps_u) * len(taps_v)
            meta[i] = (len(row_offsets), len(taps_u), len(col_offsets), len(taps_v),
                       x_i0, count_i, x_j0, count_j, packed_size, k_phase)
            packed_size += c_out * cg * len(taps_u) * len(taps_v)
            row_offsets.extend(offs_u)
            col_offsets.extend(offs_v)
            max_k = max(max_k, k_phase)
            pos_total += count_i * count_j
            i += 1
    # stride > 1: the GEMM result (cg x tile) waits in the workspace for the
    # strided write-back, so it counts towards the tile's size
    strided = stride_h != 1 or stride_w != 1
    tile = _tile_size(max_k + (cg if strided else 0), pos_total, n_img * groups, itemsize)
    items = []
    for i in range(n_phases):
        n_pos = meta[i, 5] * meta[i, 7]
        for start in range(0, n_pos, tile):
            items.append((i, start, min(tile, n_pos - start)))
    return (meta, np.array(items, dtype=np.intp).reshape(-1, 3),
            np.array(row_offsets, dtype=np.intp), np.array(col_offsets, dtype=np.intp),
            packed[:packed_size], max_k, tile)


def conv2d_grad_input(const floating[:, :, :, ::1] grad_out,
                      const floating[:, :, :, ::1] weight,
                      floating[:, :, :, ::1] grad_in,
                      Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_top, Py_ssize_t pad_left,
                      Py_ssize_t dil_h, Py_ssize_t dil_w,
                      Py_ssize_t groups, int n_threads):
    """Input gradient by rotated filters over the dilated sensitivity map.

    ``grad_in`` must be zero-filled on entry where input positions lie in
    a stride phase without filter taps (e.g. a 1x1 filter with stride 2):
    those are left untouched.  Every other position is written by exactly
    one work item; with stride 1 (one phase spans each axis), or a filter
    whose taps meet every residue mod the stride, that is every position,
    and the caller may pass uninitialized memory.
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, c_in = cg * groups
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t out_plane = out_h * out_w, in_plane = in_h * in_w
    if n_img == 0 or out_plane == 0 or c_out == 0 or cg == 0:
        return
    cdef Py_ssize_t[::1] row_taps, col_taps
    cdef const floating[::1] no_bias

    if ROW_SHIFT != 0 and stride_h == 1 and stride_w == 1 and kh > 1:
        # one phase over the whole plane, every tap in order (its dY offsets
        # run backwards: the rotation): a stride-1 correlation of dY with
        # the in/out-swapped filters, lowered as the forward is.  Needs only
        # the offsets, not the plan's per-phase packed filters.
        row_phases = _phases_1d(in_h, pad_top, kh, 1, dil_h)
        col_phases = _phases_1d(in_w, pad_left, kw, 1, dil_w)
        if row_phases and col_phases:
            row_taps = np.array(row_phases[0][1], dtype=np.intp)
            col_taps = np.array(col_phases[0][1], dtype=np.intp)
            no_bias = np.empty(0, dtype=np.float32 if floating is float else np.float64)
            _correlate(grad_out, weight, True, no_bias, False, grad_in,
                       row_taps, col_taps, 1, 1, groups, n_threads)
        return

    # ---- plan (GIL): phases, swapped filters per phase, work items
    plan = _grad_input_plan(np.asarray(weight), False, groups, n_img, in_h, in_w,
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
    # stride 1: one phase that covers the whole plane in order -> GEMM
    # straight into grad_in; otherwise GEMM into a workspace and write back.
    cdef bint direct = (kh == 1 and kw == 1 and not strided
                        and pad_top == 0 and pad_left == 0)
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef const floating* wpp = &wpack[0]
    cdef const Py_ssize_t* rop = &r_off[0]
    cdef const Py_ssize_t* cop = &c_off[0]
    cdef Py_ssize_t item, n, g, ti, ph, p0, count, kp, grid_w, c, l, li, lj, base
    cdef floating* work = NULL
    cdef floating* res
    cdef floating* dst
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    # workspace: [packed dY patches (max_k x tile)] [GEMM result (cg x tile)]
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
                        dst = dxp + (n * c_in + g * cg) * in_plane + p0
                    if direct:
                        gemm(NO_TRANS, NO_TRANS, cg, count, kp, <floating>1,
                             wpp + meta[ph, 8] + g * cg * kp, kp,
                             gp + (n * c_out + g * og) * out_plane + p0, out_plane,
                             <floating>0, dst, in_plane)
                    else:
                        _pack_patches(gp + (n * c_out + g * og) * out_plane, og, out_h, out_w,
                                      rop + meta[ph, 0], meta[ph, 1],
                                      cop + meta[ph, 2], meta[ph, 3],
                                      1, 1, grid_w, p0, count, work, count, NULL)   # stride 1
                        gemm(NO_TRANS, NO_TRANS, cg, count, kp, <floating>1,
                             wpp + meta[ph, 8] + g * cg * kp, kp,
                             work, count, <floating>0,
                             dst, count if strided else in_plane)
                    if strided:
                        base = (n * c_in + g * cg) * in_plane
                        for c in range(cg):
                            for l in range(count):
                                li = (p0 + l) // grid_w
                                lj = (p0 + l) - li * grid_w
                                dxp[base + c * in_plane
                                    + (meta[ph, 4] + li * stride_h) * in_w
                                    + meta[ph, 6] + lj * stride_w] = res[c * count + l]
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


def conv2d_grad_input_scatter(const floating[:, :, :, ::1] grad_out,
                              const floating[:, :, :, ::1] weight,
                              floating[:, :, :, ::1] grad_in,
                              Py_ssize_t stride_h, Py_ssize_t stride_w,
                              Py_ssize_t pad_top, Py_ssize_t pad_left,
                              Py_ssize_t dil_h, Py_ssize_t dil_w,
                              Py_ssize_t groups, int n_threads):
    """The same input gradient, visiting the non-zeros of the dilated map.

    The full correlation of the stride-dilated, padded sensitivity map with
    the rotated filters, evaluated from the other side: every sensitivity
    ``dY[o, p, q]`` (a non-zero of the dilated map) adds ``dY * w[o, c]``
    into the window it came from -- ``dCols = W^T @ dY`` followed by col2im.
    Neither the inserted zeros nor the zero border of the full correlation
    cost a multiply, which makes this the cheaper order when the image is
    small next to the kernel or ``C_in/groups`` is too small for an
    efficient GEMM (the caller picks; see ``functional._grad_input_method``).

    Work items are (image, group, block of input channels): each clears its
    own slice of ``grad_in`` and adds into it in a fixed order, so the
    result does not depend on the thread count.  ``grad_in`` may hold
    anything on entry: every element is written (clearing the slice just
    before its sums also keeps it in cache, where a zero-filled allocation
    costs a serial pass over the whole array).
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, c_in = cg * groups, taps = kh * kw
    cdef Py_ssize_t k_dim = cg * taps
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t positions = out_h * out_w, in_plane = in_h * in_w
    if n_img == 0 or positions == 0 or c_out == 0 or cg == 0:
        np.asarray(grad_in)[...] = 0
        return
    if _scatter_position_major(cg, kw, in_plane, og, sizeof(floating)):
        _grad_input_scatter_position_major(grad_out, weight, grad_in, stride_h, stride_w,
                                           pad_top, pad_left, dil_h, dil_w, groups, n_threads)
        return
    # channel blocks: enough items for MIN_ITEMS threads, by shape only
    cdef Py_ssize_t n_blocks = max(1, min(cg, _ceil_div(MIN_ITEMS, n_img * groups)))
    cdef Py_ssize_t block = _ceil_div(cg, n_blocks)
    n_blocks = _ceil_div(cg, block)
    cdef Py_ssize_t tile = _tile_size(block * taps, positions, 1, sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t n_items = n_img * groups * n_blocks
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, blk, c0, nc, t, p0, count
    cdef floating* work = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            work = <floating*>_workspace(block * taps * tile * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work != NULL:
                    n = item // (groups * n_blocks)
                    g = (item // n_blocks) % groups
                    blk = item % n_blocks
                    c0 = blk * block
                    nc = min(block, cg - c0)
                    memset(dxp + (n * c_in + g * cg + c0) * in_plane, 0,
                           nc * in_plane * sizeof(floating))
                    for t in range(n_tiles):
                        p0 = t * tile
                        count = min(tile, positions - p0)
                        # dCols (nc*taps x count) = W[g][:, c0:c0+nc]^T @ dY[n, g]
                        gemm(TRANS, NO_TRANS, nc * taps, count, og, <floating>1,
                             wp + g * og * k_dim + c0 * taps, k_dim,
                             gp + (n * c_out + g * og) * positions + p0, positions,
                             <floating>0, work, count)
                        _unpack_add_patches(work, nc, in_h, in_w,
                                            &row_off[0], kh, &col_off[0], kw,
                                            stride_h, stride_w, out_w, p0, count,
                                            dxp + (n * c_in + g * cg + c0) * in_plane)
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


cdef inline bint _scatter_position_major(Py_ssize_t cg, Py_ssize_t kw, Py_ssize_t in_plane,
                                         Py_ssize_t og, size_t itemsize) noexcept nogil:
    """Whether the scatter input gradient runs position-major (see
    ``_grad_input_scatter_position_major``); a function of the shape only.

    Its channels-last col2im adds runs of C_in/groups channels where the
    planar one adds runs of an output row, so it pays where output rows are
    short and channels many -- but not with few channels per kernel row
    (``_narrow_patches``), nor with planes of 1024 pixels or more, whose
    staged block spills from L2.  Its GEMM, ``dY^T @ W``, is the faster
    orientation of OpenBLAS's dgemm there, not of its sgemm once C_out/groups
    passes 128.  Measured (input gradient alone, 2 threads, in-process A/B):
    float64 res_s2 1.11-1.14x, 16x256x14x14 -> 512 1.45-1.57x, lenet2
    1.27-1.28x; float32 lenet2 1.18-1.23x, 32x32x16x16 -> 64 1.26-1.34x; losses
    left to the planar order: float64 8x64x56x56 0.90-0.93x, float32
    res_s2 0.92-0.95x, 3-channel 7x7 0.56-0.72x.
    """
    if SCATTER_POSITION_MAJOR >= 0:
        return SCATTER_POSITION_MAJOR == 1
    return (not _narrow_patches(cg, kw) and in_plane < 1024
            and (itemsize == 8 or og <= 128))


def _pack_filters_position_major(const floating[:, :, :, ::1] weight, Py_ssize_t groups,
                                 Py_ssize_t block, int n_threads):
    """The filters as the position-major scatter's right operands: per group
    and block of ``block`` input channels, an ``og x (taps * nc)`` matrix
    ``Wp[o, (t, c)] = w[g*og + o, c0 + c, t]`` (tap-major, so each tap's
    channel run is contiguous), the blocks of a group one after another."""
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t taps = weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, k_dim = cg * taps
    packed = np.empty(c_out * k_dim, dtype=np.float32 if floating is float else np.float64)
    if packed.size == 0:
        return packed
    cdef floating[::1] packed_view = packed
    cdef floating* dst = &packed_view[0]
    cdef const floating* src = &weight[0, 0, 0, 0]
    cdef Py_ssize_t r, g, o, c0, nc, t, c
    cdef floating* d
    cdef const floating* w_row
    with nogil:
        for r in prange(c_out, schedule="static", num_threads=n_threads):
            g = r // og
            o = r - g * og
            w_row = src + r * k_dim
            c0 = 0
            while c0 < cg:
                nc = min(block, cg - c0)
                d = dst + g * og * k_dim + og * taps * c0 + o * taps * nc
                for t in range(taps):
                    for c in range(nc):
                        d[t * nc + c] = w_row[(c0 + c) * taps + t]
                c0 = c0 + nc
    return packed


cdef void _stage_to_planes(const floating* stage, Py_ssize_t plane, Py_ssize_t n_ch,
                           floating* dst) noexcept nogil:
    """Transpose a channels-last ``plane x n_ch`` staging block into ``n_ch``
    planes, 64 pixels at a time (their staged rows stay in L1 while every
    channel's run is written)."""
    cdef Py_ssize_t p0 = 0, p1, p, c
    cdef const floating* s
    cdef floating* d
    while p0 < plane:
        p1 = min(p0 + 64, plane)
        for c in range(n_ch):
            s = stage + c
            d = dst + c * plane
            for p in range(p0, p1):
                d[p] = s[p * n_ch]
        p0 = p1


def _grad_input_scatter_position_major(const floating[:, :, :, ::1] grad_out,
                                       const floating[:, :, :, ::1] weight,
                                       floating[:, :, :, ::1] grad_in,
                                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                                       Py_ssize_t pad_top, Py_ssize_t pad_left,
                                       Py_ssize_t dil_h, Py_ssize_t dil_w,
                                       Py_ssize_t groups, int n_threads):
    """``conv2d_grad_input_scatter`` with its GEMM the other way round.

    ``dCols^T = dY^T @ W`` (one row per output position; the faster
    orientation of OpenBLAS's float64 GEMM at res_s2's shapes), added
    channels-last into a per-thread staging block of the image's planes
    (contiguous channel runs, as the NHWC col2im does), which is then
    transposed into ``grad_in``.  Work items are (image, group, block of
    input channels), the block's staged planes at most SCATTER_STAGE_BYTES;
    each item writes its slice of ``grad_in`` whole, in a fixed order.
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], cg = weight.shape[1]
    cdef Py_ssize_t kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups, c_in = cg * groups, taps = kh * kw
    cdef Py_ssize_t k_dim = cg * taps
    cdef Py_ssize_t out_w = grad_out.shape[3]
    cdef Py_ssize_t positions = grad_out.shape[2] * out_w, in_plane = in_h * in_w
    cdef Py_ssize_t n_blocks = max(1, min(cg, _ceil_div(SCATTER_MIN_ITEMS, n_img * groups)))
    cdef Py_ssize_t block = _ceil_div(cg, n_blocks)
    block = max(1, min(block, SCATTER_STAGE_BYTES // (in_plane * sizeof(floating))))
    n_blocks = _ceil_div(cg, block)
    block = _ceil_div(cg, n_blocks)     # as even as the channels allow
    cdef Py_ssize_t n_items = n_img * groups * n_blocks
    # (the blocks make the items: a tile only bounds the GEMM's result, and
    # a narrower one ran its GEMM slower -- res_s2 0.67-0.91x at 512 KiB)
    cdef Py_ssize_t tile = _tile_size(block * taps, positions, n_items, sizeof(floating))
    cdef Py_ssize_t n_tiles = _ceil_div(positions, tile)
    cdef Py_ssize_t[::1] row_off = np.arange(kh, dtype=np.intp) * dil_h - pad_top
    cdef Py_ssize_t[::1] col_off = np.arange(kw, dtype=np.intp) * dil_w - pad_left
    cdef const floating[::1] packed = _pack_filters_position_major(weight, groups, block,
                                                                    n_threads)
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* wpp = &packed[0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t item, n, g, blk, c0, nc, t, p0, count
    cdef floating* work = NULL
    cdef floating* stage
    cdef int status = STATUS_OK
    cdef int* status_p = &status

    blas_serial_enter()
    try:
        with nogil, parallel(num_threads=n_threads):
            # [dCols^T tile (tile x taps*block)] [staged planes (in_plane x block)]
            work = <floating*>_workspace((tile * taps + in_plane) * block * sizeof(floating))
            if work == NULL:
                status_p[0] = STATUS_NO_MEMORY
            for item in prange(n_items, schedule="static"):
                if work != NULL:
                    n = item // (groups * n_blocks)
                    g = (item // n_blocks) % groups
                    blk = item % n_blocks
                    c0 = blk * block
                    nc = min(block, cg - c0)
                    stage = work + tile * taps * block
                    memset(stage, 0, in_plane * nc * sizeof(floating))
                    for t in range(n_tiles):
                        p0 = t * tile
                        count = min(tile, positions - p0)
                        # dCols^T (count x taps*nc) = dY[n, g, :, tile]^T @ Wp[g, block]
                        gemm(TRANS, NO_TRANS, count, taps * nc, og, <floating>1,
                             gp + (n * c_out + g * og) * positions + p0, positions,
                             wpp + g * og * k_dim + og * taps * c0, taps * nc,
                             <floating>0, work, taps * nc)
                        _unpack_add_patches_nhwc(work, in_h, in_w, nc, 0, nc,
                                                 &row_off[0], kh, &col_off[0], kw,
                                                 stride_h, stride_w, out_w, p0, count, stage)
                    _stage_to_planes(stage, in_plane, nc,
                                     dxp + (n * c_in + g * cg + c0) * in_plane)
            free(work)
    finally:
        blas_serial_exit()
    _raise_for_status(status)


# --- depthwise convolution (C_in/groups == 1): direct loops -----------------
#
# With one input channel per group the GEMMs degenerate to single rows, so
# these kernels work on whole planes instead: for each tap, an axpy of a
# shifted input row into an output row (contiguous, hence vectorized, when
# the stride is 1).  Output channel o reads input channel o // (C_out/groups).

cdef extern from "_depthwise_avx2.h" nogil:
    # the 3x3, column-stride-1 depthwise plane in AVX2 registers; FC_DW_AVX2
    # is 0 in the baseline build, whose Cython loop then does the work
    bint FC_DW_AVX2
    void fc_dw3x3_plane_f32(const float* padded, Py_ssize_t cols, Py_ssize_t stride_h,
                            Py_ssize_t dil_h, Py_ssize_t dil_w, const float* w, float b0,
                            float* out, Py_ssize_t out_h, Py_ssize_t out_w)
    void fc_dw3x3_plane_f64(const double* padded, Py_ssize_t cols, Py_ssize_t stride_h,
                            Py_ssize_t dil_h, Py_ssize_t dil_w, const double* w, double b0,
                            double* out, Py_ssize_t out_h, Py_ssize_t out_w)
    # the NHWC depthwise pixel (_dw_pixel) in AVX2 registers, ch >= the lanes
    void fc_dw_pixel_f32(float* dst, const float** src, const float** wts,
                         Py_ssize_t n_taps, Py_ssize_t ch)
    void fc_dw_pixel_f64(double* dst, const double** src, const double** wts,
                         Py_ssize_t n_taps, Py_ssize_t ch)


cdef struct Span:
    Py_ssize_t lo
    Py_ssize_t hi


cdef inline Span _tap_range(Py_ssize_t co, Py_ssize_t step, Py_ssize_t size,
                            Py_ssize_t grid) noexcept nogil:
    """Grid columns q in [lo, hi) with 0 <= q*step + co < size.  Returned by
    value so that callers inside prange keep it thread-private."""
    cdef Span span
    if step == 1:       # no divisions on the common path (this runs per tap and row)
        span.lo = min(grid, max(0, -co))
        span.hi = max(span.lo, min(grid, size - co))
    else:
        span.lo = min(grid, max(0, _ceil_div(-co, step)))
        span.hi = max(span.lo, min(grid, _floor_div(size - 1 - co, step) + 1))
    return span


cdef inline Span _useful_taps(Py_ssize_t k, Py_ssize_t pad, Py_ssize_t stride,
                              Py_ssize_t size, Py_ssize_t grid) noexcept nogil:
    """Window columns v in [lo, hi) that reach the input (v - pad + q*stride
    in [0, size)) for at least one output column q in [0, grid): loops over
    taps stay bounded by the input even for astronomically wide kernels."""
    cdef Span span
    span.lo = max(0, pad - (grid - 1) * stride)
    span.hi = max(span.lo, min(k, size + pad))
    return span


cdef enum:
    LANES = 16      # independent partial sums: enough to hide FP add latency


cdef inline double _dot(const floating* a, const floating* b, Py_ssize_t b_step,
                        Py_ssize_t n) noexcept nogil:
    """``sum(a[i] * b[i*b_step])`` with LANES interleaved partial sums (a
    fixed order that the compiler vectorizes), finished in float64."""
    cdef floating lanes[LANES]
    cdef Py_ssize_t i, j, head = n - n % LANES
    cdef double total = 0
    for j in range(LANES):
        lanes[j] = 0
    if b_step == 1:
        for i in range(0, head, 16):    # 16 == LANES (a literal step: Cython needs its sign)
            for j in range(LANES):
                lanes[j] = lanes[j] + a[i + j] * b[i + j]
    else:
        for i in range(0, head, 16):    # 16 == LANES (a literal step: Cython needs its sign)
            for j in range(LANES):
                lanes[j] = lanes[j] + a[i + j] * b[(i + j) * b_step]
    for i in range(head, n):
        lanes[0] = lanes[0] + a[i] * b[i * b_step]
    for j in range(LANES):
        total = total + lanes[j]
    return total


def _padded_extent(out, stride, k, dil):
    """Rows (or columns) of input some tap reaches: (out-1)*stride +
    (k-1)*dil + 1, as a Python integer (cannot wrap)."""
    return (int(out) - 1) * int(stride) + (int(k) - 1) * int(dil) + 1


cdef inline void _phase_plane(const floating* src, Py_ssize_t in_h, Py_ssize_t in_w,
                              Py_ssize_t step_h, Py_ssize_t step_w,
                              Py_ssize_t top, Py_ssize_t left,
                              floating* dst, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """``dst[i, j] = src[i*step_h - top, j*step_w - left]`` (rows x cols)
    where that lies inside src.  With steps of 1 this is src zero-padded by
    (top, left) (negative values crop); with a stride it is one phase of
    the padded plane.  Only those elements are written: the caller zeroes
    dst once, and since every plane of a call has the same geometry, the
    rest stays zero from plane to plane."""
    cdef Py_ssize_t i, j, i0, i1, j0, j1
    cdef const floating* row
    cdef floating* out
    i0 = min(rows, max(0, _ceil_div(top, step_h)))             # first row inside src
    i1 = max(i0, min(rows, _floor_div(in_h - 1 + top, step_h) + 1))
    j0 = min(cols, max(0, _ceil_div(left, step_w)))
    j1 = max(j0, min(cols, _floor_div(in_w - 1 + left, step_w) + 1))
    if j1 == j0:
        return
    for i in range(i0, i1):
        row = src + (i * step_h - top) * in_w + (j0 * step_w - left)
        out = dst + i * cols + j0
        if step_w == 1:
            fc_copy_row(out, row, (j1 - j0) * sizeof(floating))
        elif step_w == 2:
            if floating is float:
                fc_gather_even_f32(out, row, j1 - j0)
            else:
                fc_gather_even_f64(out, row, j1 - j0)
        else:
            for j in range(j1 - j0):
                out[j] = row[j * step_w]


def depthwise_forward(const floating[:, :, :, ::1] x,
                      const floating[:, :, :, ::1] weight,
                      const floating[::1] bias,
                      bint has_bias,
                      floating[:, :, :, ::1] out,
                      Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_top, Py_ssize_t pad_left,
                      Py_ssize_t dil_h, Py_ssize_t dil_w,
                      Py_ssize_t groups, int n_threads):
    """``conv2d_forward`` for C_in/groups == 1 (any channel multiplier).

    One work item per output plane.  Its input plane is first copied into a
    zero-padded per-thread buffer, so the tap loops need no border tests:
    each output row is ``bias + sum_{u, v} w[u, v] * row_u[q*sw + v*dw]``
    in row-major tap order (3x3 kernels with column stride 1: all nine taps
    in one vectorizable expression).  In float32 with a column stride of 2
    the padded plane is also split into its even and odd columns, where
    every tap reads a unit-stride run: the same sums in the same order, 8 x
    64 x 56 x 56 with 3x3 filters 0.62-0.63 -> 0.53-0.56 ms (2 threads);
    float64 ran 0.83-0.93 ms that way against 0.75-0.76, so it keeps the
    strided loads.  Paddings too large to materialize take the
    bounds-checked loop instead.
    """
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    if n_img == 0 or out_plane == 0 or c_out == 0:
        return
    # the padded plane covers exactly the rows/columns some tap reaches; its
    # size is checked in Python integers (hyper-parameters near 2**62 would
    # wrap a C product)
    limit = _padded_limit(in_plane) if DEPTHWISE_MAX_PADDED < 0 else DEPTHWISE_MAX_PADDED
    n_rows = _padded_extent(out_h, stride_h, kh, dil_h)
    n_cols = _padded_extent(out_w, stride_w, kw, dil_w)
    if n_rows * n_cols > limit:
        _depthwise_forward_bounded(x, weight, bias, has_bias, out, stride_h, stride_w,
                                   pad_top, pad_left, dil_h, dil_w, groups, n_threads)
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, n, o, c, p, u, v, q
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* r2
    cdef const floating* row
    cdef const floating* w
    cdef floating* drow
    cdef floating* padded = NULL
    cdef floating wv, b0, acc
    cdef Py_ssize_t rows = n_rows
    cdef Py_ssize_t cols = n_cols
    cdef Py_ssize_t d1 = dil_w, d2 = 2 * dil_w
    cdef Py_ssize_t dw_lanes = 8 if floating is float else 4     # one AVX2 vector
    # float32, column stride 2: the padded plane's even columns (rows x
    # c_even), then its odd ones (rows x c_odd), after it in the workspace
    cdef bint split = stride_w == 2 and floating is float
    cdef Py_ssize_t c_even = (cols + 1) // 2, c_odd = cols // 2, r, tap
    cdef floating* even
    cdef floating* odd
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        padded = <floating*>_workspace((2 if split else 1) * rows * cols * sizeof(floating))
        if padded == NULL:
            status_p[0] = STATUS_NO_MEMORY
        else:
            memset(padded, 0, rows * cols * sizeof(floating))   # the border, once
        for item in prange(n_img * c_out, schedule="static"):
            if padded != NULL:
                n = item // c_out
                o = item % c_out
                c = n * c_in + o // og
                _phase_plane(xp + c * in_plane, in_h, in_w, 1, 1, pad_top, pad_left,
                             padded, rows, cols)
                b0 = bp[o] if has_bias else 0
                if split:
                    even = padded + rows * cols
                    odd = even + rows * c_even
                    for r in range(rows):
                        _deinterleave(padded + r * cols, even + r * c_even, odd + r * c_odd,
                                      c_odd, cols % 2 == 1)
                    w = wp + o * kh * kw
                    for p in range(out_h):
                        drow = yp + item * out_plane + p * out_w
                        for q in range(out_w):
                            drow[q] = b0
                        for u in range(kh):
                            r = p * stride_h + u * dil_h
                            for v in range(kw):
                                # column 2q + v*dw: phase (v*dw) % 2, index q + (v*dw) // 2
                                tap = v * dil_w
                                if tap % 2 == 0:
                                    row = even + r * c_even + tap // 2
                                else:
                                    row = odd + r * c_odd + tap // 2
                                if floating is float:
                                    fc_axpy_row_f32(drow, row, w[u * kw + v], out_w)
                                else:
                                    fc_axpy_row_f64(drow, row, w[u * kw + v], out_w)
                    continue
                w = wp + o * kh * kw
                if FC_DW_AVX2 and kh == 3 and kw == 3 and stride_w == 1 and out_w >= dw_lanes:
                    # the same expression in AVX2 registers (_depthwise_avx2.h)
                    if floating is float:
                        fc_dw3x3_plane_f32(padded, cols, stride_h, dil_h, dil_w, w, b0,
                                           yp + item * out_plane, out_h, out_w)
                    else:
                        fc_dw3x3_plane_f64(padded, cols, stride_h, dil_h, dil_w, w, b0,
                                           yp + item * out_plane, out_h, out_w)
                    continue
                for p in range(out_h):
                    drow = yp + item * out_plane + p * out_w
                    if kh == 3 and kw == 3 and stride_w == 1:
                        r0 = padded + (p * stride_h) * cols
                        r1 = r0 + dil_h * cols
                        r2 = r1 + dil_h * cols
                        for q in range(out_w):
                            acc = b0 + w[0] * r0[q]
                            acc = acc + w[1] * r0[q + d1]
                            acc = acc + w[2] * r0[q + d2]
                            acc = acc + w[3] * r1[q]
                            acc = acc + w[4] * r1[q + d1]
                            acc = acc + w[5] * r1[q + d2]
                            acc = acc + w[6] * r2[q]
                            acc = acc + w[7] * r2[q + d1]
                            acc = acc + w[8] * r2[q + d2]
                            drow[q] = acc
                        continue
                    for q in range(out_w):
                        drow[q] = b0
                    for u in range(kh):
                        row = padded + (p * stride_h + u * dil_h) * cols
                        for v in range(kw):
                            wv = w[u * kw + v]
                            if stride_w == 1:
                                for q in range(out_w):
                                    drow[q] += wv * row[q + v * dil_w]
                            else:
                                for q in range(out_w):
                                    drow[q] += wv * row[q * stride_w + v * dil_w]
        free(padded)
    _raise_for_status(status)


def _depthwise_forward_bounded(const floating[:, :, :, ::1] x,
                      const floating[:, :, :, ::1] weight,
                      const floating[::1] bias,
                      bint has_bias,
                      floating[:, :, :, ::1] out,
                      Py_ssize_t stride_h, Py_ssize_t stride_w,
                      Py_ssize_t pad_top, Py_ssize_t pad_left,
                      Py_ssize_t dil_h, Py_ssize_t dil_w,
                      Py_ssize_t groups, int n_threads):
    """``depthwise_forward`` without a padded copy: every tap checks the
    borders.  For paddings too large to materialize."""
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    if n_img == 0 or out_plane == 0 or c_out == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, n, o, p, u, v, q, ii, co
    cdef Span cols
    cdef const floating* src
    cdef const floating* srow
    cdef floating* drow
    cdef floating wv, b0
    with nogil:
        for item in prange(n_img * c_out, schedule="static", num_threads=n_threads):
            n = item // c_out
            o = item % c_out
            src = xp + (n * c_in + o // og) * in_plane
            b0 = bp[o] if has_bias else 0
            for p in range(out_h):
                drow = yp + item * out_plane + p * out_w
                for q in range(out_w):
                    drow[q] = b0
                for u in range(kh):
                    ii = p * stride_h + u * dil_h - pad_top
                    if ii < 0 or ii >= in_h:
                        continue
                    srow = src + ii * in_w
                    for v in range(kw):
                        wv = wp[(o * kh + u) * kw + v]
                        co = v * dil_w - pad_left
                        cols = _tap_range(co, stride_w, in_w, out_w)
                        if stride_w == 1:
                            for q in range(cols.lo, cols.hi):
                                drow[q] += wv * srow[q + co]
                        else:
                            for q in range(cols.lo, cols.hi):
                                drow[q] += wv * srow[q * stride_w + co]


def depthwise_grad_input(const floating[:, :, :, ::1] grad_out,
                         const floating[:, :, :, ::1] weight,
                         floating[:, :, :, ::1] grad_in,
                         Py_ssize_t stride_h, Py_ssize_t stride_w,
                         Py_ssize_t pad_top, Py_ssize_t pad_left,
                         Py_ssize_t dil_h, Py_ssize_t dil_w,
                         Py_ssize_t groups, int n_threads):
    """Input gradient for C_in/groups == 1: each sensitivity times the
    rotated filter, added into its window (the scatter evaluation of the
    textbook correlation).  One item per input plane, summed in a fixed
    order; ``grad_in`` must be zero-filled on entry unless the column
    stride is 2 (then every element is written).

    With a column stride of 2 the sums go into the plane's even and odd
    columns kept apart (a per-thread scratch plane), where each tap adds a
    unit-stride run, and are interleaved into the plane at the end: the
    same sums in the same order as adding into every other element, which
    does not vectorize.  A MobileNet-style 3x3 stride-2 layer (8 x 64 x 56
    x 56, 2 threads): 1.31 -> 0.54 ms in float32, 1.60 -> 0.77 in float64,
    with the zero fill of dX it no longer needs.
    """
    cdef Py_ssize_t n_img = grad_in.shape[0], c_in = grad_in.shape[1]
    cdef Py_ssize_t in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t c_out = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    if n_img == 0 or out_plane == 0 or c_out == 0:
        return
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    # stride 2: the even columns' plane (in_h x w_even), then the odd ones'
    cdef bint split = stride_w == 2
    cdef Py_ssize_t w_even = (in_w + 1) // 2, w_odd = in_w // 2
    cdef Py_ssize_t item, n, c, j, o, p, u, v, q, ii, co, rj, lo, hi
    cdef Span cols
    # per column tap v: its grid columns [lo, hi), and (split) where column
    # lo lands: the odd plane or not, and the index there (lo + shift)
    taps_v = np.zeros((4, kw), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] tap_cols = taps_v
    for v in range(kw):
        co = v * dil_w - pad_left
        cols = _tap_range(co, stride_w, in_w, out_w)
        tap_cols[0, v] = cols.lo
        tap_cols[1, v] = cols.hi
        if split and cols.hi > cols.lo:
            rj = _floor_mod(co, 2)
            tap_cols[2, v] = rj
            tap_cols[3, v] = cols.lo + (co - rj) // 2
    cdef const floating* grow
    cdef floating* drow
    cdef floating* phases = NULL
    cdef floating wv
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        phases = NULL
        if split:
            phases = <floating*>_workspace(in_plane * sizeof(floating))
            if phases == NULL:
                status_p[0] = STATUS_NO_MEMORY
        for item in prange(n_img * c_in, schedule="static"):
            if split and phases == NULL:
                continue
            n = item // c_in
            c = item % c_in
            if split:
                memset(phases, 0, in_plane * sizeof(floating))
            for j in range(og):
                o = c * og + j
                for p in range(out_h):
                    grow = gp + (n * c_out + o) * out_plane + p * out_w
                    for u in range(kh):
                        ii = p * stride_h + u * dil_h - pad_top
                        if ii < 0 or ii >= in_h:
                            continue
                        drow = dxp + item * in_plane + ii * in_w
                        for v in range(kw):
                            wv = wp[(o * kh + u) * kw + v]
                            co = v * dil_w - pad_left
                            lo = tap_cols[0, v]
                            hi = tap_cols[1, v]
                            if stride_w == 1:
                                for q in range(lo, hi):
                                    drow[q + co] += wv * grow[q]
                            elif split:
                                # column 2q + co: even or odd plane, index q + shift
                                if tap_cols[2, v] == 0:
                                    drow = phases + ii * w_even + tap_cols[3, v]
                                else:
                                    drow = phases + in_h * w_even + ii * w_odd + tap_cols[3, v]
                                if floating is float:
                                    fc_axpy_row_f32(drow, grow + lo, wv, hi - lo)
                                else:
                                    fc_axpy_row_f64(drow, grow + lo, wv, hi - lo)
                            else:
                                for q in range(lo, hi):
                                    drow[q * stride_w + co] += wv * grow[q]
            if split:       # every element of the plane written
                for ii in range(in_h):
                    if floating is float:
                        fc_interleave_f32(dxp + item * in_plane + ii * in_w,
                                          phases + ii * w_even,
                                          phases + in_h * w_even + ii * w_odd,
                                          w_odd, in_w % 2)
                    else:
                        fc_interleave_f64(dxp + item * in_plane + ii * in_w,
                                          phases + ii * w_even,
                                          phases + in_h * w_even + ii * w_odd,
                                          w_odd, in_w % 2)
        free(phases)
    _raise_for_status(status)


def depthwise_grad_weight(const floating[:, :, :, ::1] x,
                          const floating[:, :, :, ::1] grad_out,
                          floating[:, :, :, ::1] grad_weight,
                          Py_ssize_t stride_h, Py_ssize_t stride_w,
                          Py_ssize_t pad_top, Py_ssize_t pad_left,
                          Py_ssize_t dil_h, Py_ssize_t dil_w,
                          Py_ssize_t groups, int n_threads):
    """Filter gradient for C_in/groups == 1: one item per output channel.

    Rows are short (often 28 or 56), so a dot product per (tap, row) is
    mostly loop overhead.  Instead each input plane is copied into the
    phase planes of its zero-padded self, ``P[a, b][i, j] = x_pad[i*sh + a,
    j*sw + b]`` for the residues (a, b) that the taps' offsets ``(u*dh,
    v*dw)`` leave modulo the stride (one plane, the padded input itself,
    for stride 1), all of row pitch ``P = Wo + max_v (v*dw) // sw``, and
    ``dY`` into a buffer of the same pitch with zero tails.  Tap (u, v)
    reads ``P[u*dh % sh, v*dw % sw]`` shifted by ``(u*dh // sh, v*dw //
    sw)``, so its gradient is ONE dot product over the whole plane, the
    tails contributing exact zeros.  That holds only for finite inputs
    (0 * inf is NaN), so a plane holding an inf or NaN is summed row by row
    instead, over real columns only.  Each tap's per-image dots are added
    in float64 in image order.  Against a dot per tap and row (on
    even/odd-column split planes), 8 x 64 x 56 x 56 with stride 2, 2
    threads: 3x3 0.89-0.91 -> 0.38-0.41 ms (float32), 0.86-0.87 -> 0.63-0.65
    (float64); 5x5 2.2-2.3 -> 0.60-0.62, 2.0 -> 1.02-1.07.

    The phase planes multiply every zero of the padding as the textbook
    does, so a non-finite dY gives the textbook's NaNs; so does the
    row-by-row loop used for paddings too large to copy, with a multiply
    by zero for each term whose tap lies in the padding.
    """
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = grad_weight.shape[0], kh = grad_weight.shape[2]
    cdef Py_ssize_t kw = grad_weight.shape[3], taps = kh * kw
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    # the phase planes' sizes (the number of phases at most min(stride, k)
    # per axis), in Python integers: hyper-parameters near 2**62 would wrap
    # a C product
    n_rows = int(out_h) + (int(kh) - 1) * int(dil_h) // int(stride_h)
    n_pitch = int(out_w) + (int(kw) - 1) * int(dil_w) // int(stride_w)
    most_phases = min(int(stride_h), int(kh)) * min(int(stride_w), int(kw))
    limit = _padded_limit(in_plane) if DEPTHWISE_MAX_PADDED < 0 else DEPTHWISE_MAX_PADDED
    if most_phases * n_rows * n_pitch > limit:
        _depthwise_grad_weight_rows(x, grad_out, grad_weight, stride_h, stride_w,
                                    pad_top, pad_left, dil_h, dil_w, groups, n_threads)
        return
    cdef Py_ssize_t rows = n_rows
    cdef Py_ssize_t pitch = n_pitch
    cdef Py_ssize_t plane = rows * pitch
    # per axis: each tap's phase plane and shift in it, and the residues
    cdef Py_ssize_t* tables = <Py_ssize_t*>malloc(3 * (kh + kw) * sizeof(Py_ssize_t))
    if tables == NULL:
        raise MemoryError("fastconv: could not allocate the depthwise tap tables")
    cdef Py_ssize_t* row_phase = tables
    cdef Py_ssize_t* row_shift = row_phase + kh
    cdef Py_ssize_t* row_res = row_shift + kh
    cdef Py_ssize_t* col_phase = row_res + kh
    cdef Py_ssize_t* col_shift = col_phase + kw
    cdef Py_ssize_t* col_res = col_shift + kw
    cdef Py_ssize_t n_row_ph = _tap_phases(kh, dil_h, stride_h, row_phase, row_shift, row_res)
    cdef Py_ssize_t n_col_ph = _tap_phases(kw, dil_w, stride_w, col_phase, col_shift, col_res)
    cdef Py_ssize_t n_planes = n_row_ph * n_col_ph
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef Py_ssize_t o, n, p, t, u, v, f, length = (out_h - 1) * pitch + out_w
    cdef double* work = NULL
    cdef floating* phases
    cdef floating* gpad
    cdef double* acc
    cdef const floating* xt
    cdef const floating* src
    cdef bint finite
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with nogil, parallel(num_threads=n_threads):
        # per thread: float64 tap sums | phase planes | padded dY plane
        # (the doubles first, where malloc's alignment holds)
        work = <double*>_workspace(taps * sizeof(double)
                               + (n_planes * plane + out_h * pitch) * sizeof(floating))
        if work == NULL:
            status_p[0] = STATUS_NO_MEMORY
        else:       # the planes' zero borders and dY's zero tails, once
            memset(work + taps, 0, (n_planes * plane + out_h * pitch) * sizeof(floating))
        for o in prange(c_out, schedule="static"):
            if work != NULL:
                acc = work
                phases = <floating*>(work + taps)
                gpad = phases + n_planes * plane
                for t in range(taps):
                    acc[t] = 0
                for n in range(n_img):
                    src = xp + (n * c_in + o // og) * in_plane
                    for f in range(n_planes):
                        _phase_plane(src, in_h, in_w, stride_h, stride_w,
                                     pad_top - row_res[f // n_col_ph],
                                     pad_left - col_res[f % n_col_ph],
                                     phases + f * plane, rows, pitch)
                    _phase_plane(gp + (n * c_out + o) * out_plane, out_h, out_w, 1, 1, 0, 0,
                                 gpad, out_h, pitch)
                    finite = _all_finite(phases, n_planes * plane)
                    for u in range(kh):
                        for v in range(kw):
                            t = u * kw + v
                            xt = (phases + (row_phase[u] * n_col_ph + col_phase[v]) * plane
                                  + row_shift[u] * pitch + col_shift[v])
                            if finite:
                                acc[t] += _dot(gpad, xt, 1, length)
                            else:
                                for p in range(out_h):
                                    acc[t] += _dot(gpad + p * pitch, xt + p * pitch, 1, out_w)
                for t in range(taps):
                    dwp[o * taps + t] = <floating>acc[t]
        free(work)
    free(tables)
    _raise_for_status(status)


cdef Py_ssize_t _tap_phases(Py_ssize_t k, Py_ssize_t dil, Py_ssize_t stride,
                            Py_ssize_t* phase, Py_ssize_t* shift,
                            Py_ssize_t* residues) noexcept nogil:
    """Split the taps' offsets ``u*dil`` (u < k) by ``stride``: ``shift[u] =
    u*dil // stride``; the distinct residues ``u*dil % stride`` go to
    ``residues`` in ascending order, and ``phase[u]`` is the index of u's
    there.  Returns the number of distinct residues.  Stepped from tap to
    tap, so no product ``u*dil`` is formed (it could wrap)."""
    cdef Py_ssize_t u, i, j, n = 0, r = 0, q = 0
    cdef Py_ssize_t step_r = dil % stride, step_q = dil // stride
    for u in range(k):
        if u > 0:
            r += step_r
            q += step_q
            if r >= stride:
                r -= stride
                q += 1
        shift[u] = q
        phase[u] = r                # (the residue, for now)
        i = 0
        while i < n and residues[i] < r:
            i += 1
        if i == n or residues[i] != r:
            for j in range(n, i, -1):
                residues[j] = residues[j - 1]
            residues[i] = r
            n += 1
    for u in range(k):
        i = 0
        while residues[i] != phase[u]:
            i += 1
        phase[u] = i
    return n


cdef inline bint _all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    """True if no element is inf or NaN: x - x is 0 for finite x and NaN
    otherwise, summed in LANES partial sums (vectorized, no branches)."""
    cdef floating lanes[LANES]
    cdef Py_ssize_t i, j, head = n - n % LANES
    cdef floating total = 0
    for j in range(LANES):
        lanes[j] = 0
    for i in range(0, head, 16):    # 16 == LANES (a literal step: Cython needs its sign)
        for j in range(LANES):
            lanes[j] = lanes[j] + (a[i + j] - a[i + j])
    for i in range(head, n):
        total = total + (a[i] - a[i])
    for j in range(LANES):
        total = total + lanes[j]
    return total == 0


cdef enum:
    FINITE_CHUNK = 1 << 16      # elements per work item of all_finite


def all_finite(const floating[::1] a, int n_threads):
    """True if no element of ``a`` is inf or NaN: ``_all_finite`` over
    chunks in parallel, with no temporary array.  The input gradient asks
    it of every weight array (a non-finite weight takes the textbook's
    gather order); ``np.isfinite(w).all()`` took 0.44 ms of the 9 ms input
    gradient of 512 x 512 x 3 x 3 float32 filters, this 0.16 ms (2 threads)."""
    cdef Py_ssize_t n = a.shape[0], ch
    cdef Py_ssize_t n_chunks = (n + FINITE_CHUNK - 1) // FINITE_CHUNK
    cdef int bad = 0
    if n == 0:
        return True
    cdef const floating* ap = &a[0]
    with nogil:
        for ch in prange(n_chunks, schedule="static", num_threads=n_threads):
            if not _all_finite(ap + ch * FINITE_CHUNK, min(<Py_ssize_t>FINITE_CHUNK,
                                                           n - ch * FINITE_CHUNK)):
                bad += 1
    return bad == 0


cdef inline double _times_padding(const floating* g, Py_ssize_t q0,
                                  Py_ssize_t q1) noexcept nogil:
    """``sum(g[q] * 0)`` over [q0, q1): the textbook's terms of sensitivities
    whose tap lies in the zero padding -- 0 for finite ones, NaN for an inf
    or NaN (so no scan of dY for those is needed beforehand)."""
    cdef double total = 0
    cdef Py_ssize_t q
    for q in range(q0, q1):
        total = total + g[q] * <floating>0
    return total


def _depthwise_grad_weight_rows(const floating[:, :, :, ::1] x,
                          const floating[:, :, :, ::1] grad_out,
                          floating[:, :, :, ::1] grad_weight,
                          Py_ssize_t stride_h, Py_ssize_t stride_w,
                          Py_ssize_t pad_top, Py_ssize_t pad_left,
                          Py_ssize_t dil_h, Py_ssize_t dil_w,
                          Py_ssize_t groups, int n_threads):
    """``depthwise_grad_weight`` one row at a time: one item per output
    channel, each tap a float64 sum of per-row dot products over images and
    rows in order.  For paddings and dilations too large to copy.  Taps
    in the zero padding add ``dY * 0`` (``_times_padding``), as the textbook
    does, so an inf or NaN sensitivity gives its NaNs here too."""
    cdef Py_ssize_t n_img = x.shape[0], c_in = x.shape[1], in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t c_out = grad_weight.shape[0], kh = grad_weight.shape[2]
    cdef Py_ssize_t kw = grad_weight.shape[3], taps = kh * kw
    cdef Py_ssize_t og = c_out // groups
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t in_plane = in_h * in_w, out_plane = out_h * out_w
    cdef floating* dwp = &grad_weight[0, 0, 0, 0]
    cdef Py_ssize_t o, n, p, u, v, ii, co
    cdef Span cols
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const floating* grow
    cdef const floating* srow
    cdef double acc
    with nogil:
        for o in prange(c_out, schedule="static", num_threads=n_threads):
            for u in range(kh):
                for v in range(kw):
                    co = v * dil_w - pad_left
                    cols = _tap_range(co, stride_w, in_w, out_w)
                    acc = 0
                    for n in range(n_img):
                        for p in range(out_h):
                            ii = p * stride_h + u * dil_h - pad_top
                            grow = gp + (n * c_out + o) * out_plane + p * out_w
                            if ii < 0 or ii >= in_h:
                                acc = acc + _times_padding(grow, 0, out_w)
                                continue
                            srow = xp + (n * c_in + o // og) * in_plane + ii * in_w
                            if cols.hi > cols.lo:
                                acc = acc + _dot(grow + cols.lo, srow + cols.lo * stride_w + co,
                                                 stride_w, cols.hi - cols.lo)
                            acc = acc + (_times_padding(grow, 0, cols.lo)
                                         + _times_padding(grow, cols.hi, out_w))
                    dwp[o * taps + u * kw + v] = <floating>acc


cdef inline Span _inner_columns(Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad,
                                Py_ssize_t size, Py_ssize_t grid) noexcept nogil:
    """Grid columns q in [lo, hi) whose whole window [q*stride - pad, +k)
    lies inside [0, size)."""
    cdef Span span
    span.lo = min(grid, _ceil_div(pad, stride))
    span.hi = max(span.lo, min(grid, _floor_div(size - k + pad, stride) + 1))
    return span


cdef inline bint _whole_windows(Py_ssize_t k_h, Py_ssize_t stride_h, Py_ssize_t pad_h,
                                Py_ssize_t pad_w, Py_ssize_t in_h, Py_ssize_t out_h,
                                Span inner, Py_ssize_t out_w) noexcept nogil:
    """No padding, and every pooling window (rows and columns) lies inside
    the input: the planes the header's whole-plane kernels take."""
    return (pad_h == 0 and pad_w == 0 and (out_h - 1) * stride_h + k_h <= in_h
            and inner.lo == 0 and inner.hi == out_w)


cdef enum:
    # Stride-2 fast paths run their vector loops over a row length rounded up
    # to this many lanes (a whole number of AVX2 vectors of either type), so
    # no scalar remainder loop runs; the extra lanes are scratch.
    ROW_LANES = 8


cdef inline Py_ssize_t _round_up_lanes(Py_ssize_t n) noexcept nogil:
    return (n + ROW_LANES - 1) // ROW_LANES * ROW_LANES


cdef inline void* _align64(void* p) noexcept nogil:
    return <void*>((<uintptr_t>p + 63) & ~(<uintptr_t>63))


cdef extern from "_pool_avx2.h" nogil:
    # AVX2 row kernels for k x k (k = 2, 3), stride-2 windows; FC_POOL_AVX2
    # is 0 in the baseline build, whose Cython loops then do all the work
    bint FC_POOL_AVX2
    int fc_set_max_avx512(int on)
    void fc_stream_copy(void* dst, const void* src, Py_ssize_t nbytes)
    void fc_stream_fence()
    void fc_prefetch_grad_rows(const void* g, const int64_t* idx, Py_ssize_t elem,
                               Py_ssize_t g_left, Py_ssize_t out_w, void* dx,
                               Py_ssize_t dx_left, Py_ssize_t in_w, Py_ssize_t p,
                               Py_ssize_t ahead)
    void fc_prefetch_rows_ahead(const void* src, Py_ssize_t elem, Py_ssize_t left,
                                Py_ssize_t p, Py_ssize_t ahead, Py_ssize_t k,
                                Py_ssize_t stride_h, Py_ssize_t pad_h, Py_ssize_t in_w)
    Py_ssize_t FC_F32_LANES
    Py_ssize_t FC_F64_LANES
    void fc_max_s2_f32(const float* r0, Py_ssize_t in_w, Py_ssize_t k, float* out,
                       int64_t* out_idx, Py_ssize_t n, int32_t base)
    void fc_max_s2_f64(const double* r0, Py_ssize_t in_w, Py_ssize_t k, double* out,
                       int64_t* out_idx, Py_ssize_t n, int64_t base)
    void fc_avg_s2_f32(const float* r0, Py_ssize_t in_w, Py_ssize_t k, float* out,
                       Py_ssize_t n, float div)
    void fc_avg_s2_f64(const double* r0, Py_ssize_t in_w, Py_ssize_t k, double* out,
                       Py_ssize_t n, double div)
    void fc_max_plane_s2_f32(const float* src, Py_ssize_t in_w, Py_ssize_t k,
                             Py_ssize_t stride_h, float* out, int64_t* out_idx,
                             Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t ahead,
                             Py_ssize_t left)
    void fc_max_plane_s2_f64(const double* src, Py_ssize_t in_w, Py_ssize_t k,
                             Py_ssize_t stride_h, double* out, int64_t* out_idx,
                             Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t ahead,
                             Py_ssize_t left)
    void fc_avg_plane_s2_f32(const float* src, Py_ssize_t in_w, Py_ssize_t k,
                             Py_ssize_t stride_h, float* out, Py_ssize_t out_h,
                             Py_ssize_t out_w, Py_ssize_t ahead, Py_ssize_t left)
    void fc_avg_plane_s2_f64(const double* src, Py_ssize_t in_w, Py_ssize_t k,
                             Py_ssize_t stride_h, double* out, Py_ssize_t out_h,
                             Py_ssize_t out_w, Py_ssize_t ahead, Py_ssize_t left)
    void fc_avg_grad_k2s2_f32(const float* g, float* d0, float* d1, Py_ssize_t n,
                              float div)
    void fc_avg_grad_k2s2_f64(const double* g, double* d0, double* d1, Py_ssize_t n,
                              double div)
    void fc_avg_spread_s2_f32(const float* sp, float* h, Py_ssize_t n, Py_ssize_t k)
    void fc_avg_spread_s2_f64(const double* sp, double* h, Py_ssize_t n, Py_ssize_t k)
    void fc_avg_grad_k3s2_f32(const float* prev, const float* cur, float* d_even,
                              float* d_odd, Py_ssize_t in_w)
    void fc_avg_grad_k3s2_f64(const double* prev, const double* cur, double* d_even,
                              double* d_odd, Py_ssize_t in_w)
    void fc_avg_grad_plane_k3s2_f32(const float* g, float* dx, float* shares, Py_ssize_t in_h,
                                    Py_ssize_t in_w, Py_ssize_t out_h, Py_ssize_t out_w,
                                    Py_ssize_t ahead, Py_ssize_t g_left, Py_ssize_t dx_left)
    void fc_avg_grad_plane_k3s2_f64(const double* g, double* dx, double* shares,
                                    Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t out_h,
                                    Py_ssize_t out_w, Py_ssize_t ahead, Py_ssize_t g_left,
                                    Py_ssize_t dx_left)
    bint fc_max_grad_px_f32(const float* g, const int64_t* idx, float* d00, Py_ssize_t ch,
                            int64_t f00, Py_ssize_t in_w)
    bint fc_max_grad_px_f64(const double* g, const int64_t* idx, double* d00, Py_ssize_t ch,
                            int64_t f00, Py_ssize_t in_w)
    void fc_max_px_f32(const float* x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0,
                       Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, float* out,
                       int64_t* out_idx)
    void fc_max_px_f64(const double* x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0,
                       Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, double* out,
                       int64_t* out_idx)
    void fc_avg_px_f32(const float* x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0,
                       Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, float* out, float div)
    void fc_avg_px_f64(const double* x, Py_ssize_t in_w, Py_ssize_t ch, Py_ssize_t h0,
                       Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1, double* out, double div)
    void fc_avg_gather_px_f32(const float* rows, Py_ssize_t p_base, Py_ssize_t row_len,
                              Py_ssize_t ch, Py_ssize_t p_lo, Py_ssize_t p_hi,
                              Py_ssize_t q_lo, Py_ssize_t q_hi, float* dst)
    void fc_avg_gather_px_f64(const double* rows, Py_ssize_t p_base, Py_ssize_t row_len,
                              Py_ssize_t ch, Py_ssize_t p_lo, Py_ssize_t p_hi,
                              Py_ssize_t q_lo, Py_ssize_t q_hi, double* dst)
    void fc_avg_grad_px_k2_f32(const float* g, float* d00, Py_ssize_t ch, Py_ssize_t in_w,
                               float div)
    void fc_avg_grad_px_k2_f64(const double* g, double* d00, Py_ssize_t ch, Py_ssize_t in_w,
                               double div)
    bint fc_max_grad_k2s2_f32(const float* g, const int64_t* idx, float* d0,
                              Py_ssize_t in_w, Py_ssize_t n, int64_t base)
    bint fc_max_grad_k2s2_f64(const double* g, const int64_t* idx, double* d0,
                              Py_ssize_t in_w, Py_ssize_t n, int64_t base)


cdef inline Py_ssize_t _avx2_lanes(size_t itemsize) noexcept nogil:
    """Windows per AVX2 block: the fewest a row needs for the row kernels."""
    return FC_F32_LANES if itemsize == sizeof(float) else FC_F64_LANES


cdef inline void _deinterleave(const floating* src, floating* even, floating* odd,
                               Py_ssize_t n, bint extra_even) noexcept nogil:
    """``even[t] = src[2t]``, ``odd[t] = src[2t + 1]`` for t < n (and
    ``even[n]`` too when ``extra_even``): one pass that turns a stride-2
    tap pattern into unit-stride loads."""
    cdef Py_ssize_t t
    for t in range(n):
        even[t] = src[2 * t]
        odd[t] = src[2 * t + 1]
    if extra_even:
        even[n] = src[2 * n]


cdef inline void _max_taps_stride2(const floating* even, const floating* odd,
                                   floating* best, floating* best_idx,
                                   Py_ssize_t n, floating base, Py_ssize_t k) noexcept nogil:
    """One input row's taps (k = 2 or 3, stride 2), deinterleaved, folded
    into the running maxima of n columns, tap by tap in window order (taps
    0, 1, 2 of column t are even[t], odd[t], even[t + 1]); the winner's
    index is kept as its tap's row base (see max_pool2d_forward)."""
    cdef Py_ssize_t t
    cdef floating cur, cur_idx, val
    cdef bint take
    cdef floating base1 = base + 1
    cdef floating base2 = base + 2
    if k == 2:
        for t in range(n):
            cur = best[t]
            cur_idx = best_idx[t]
            val = even[t]
            take = (val > cur) | (val != val)
            cur = val if take else cur
            cur_idx = base if take else cur_idx
            val = odd[t]
            take = (val > cur) | (val != val)
            best[t] = val if take else cur
            best_idx[t] = base1 if take else cur_idx
    else:
        for t in range(n):
            cur = best[t]
            cur_idx = best_idx[t]
            val = even[t]
            take = (val > cur) | (val != val)
            cur = val if take else cur
            cur_idx = base if take else cur_idx
            val = odd[t]
            take = (val > cur) | (val != val)
            cur = val if take else cur
            cur_idx = base1 if take else cur_idx
            val = even[t + 1]
            take = (val > cur) | (val != val)
            best[t] = val if take else cur
            best_idx[t] = base2 if take else cur_idx


cdef inline void _store_max_row(const floating* run, const floating* run_idx,
                                floating* out, int64_t* out_idx, Py_ssize_t n,
                                Py_ssize_t first_col) noexcept nogil:
    """Copy n running maxima to the output row and turn their tap row bases
    into flat indices (``base + 2*q`` for column q = first_col/2 + t)."""
    cdef Py_ssize_t t
    for t in range(n):
        out[t] = run[t]
    for t in range(n):
        out_idx[t] = <int64_t>(<int32_t>run_idx[t] + <int32_t>(first_col + 2 * t))


cdef inline void _max_window(const floating* src, Py_ssize_t in_w,
                             Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t ws, Py_ssize_t k_w,
                             floating* out, int64_t* out_idx) noexcept nogil:
    """Maximum and flat index of one window: rows [h0, h1), columns
    [ws, ws + k_w) clipped to the row, scanned in window order."""
    cdef Py_ssize_t i, j, idx
    cdef Py_ssize_t w0 = max(ws, 0)
    cdef Py_ssize_t w1 = min(ws + k_w, in_w)
    cdef floating best = -INFINITY
    cdef floating v
    cdef bint take
    idx = h0 * in_w + w0
    for i in range(h0, h1):
        for j in range(w0, w1):
            v = src[i * in_w + j]
            take = (v > best) | (v != v)
            best = v if take else best
            idx = i * in_w + j if take else idx
    out[0] = best
    out_idx[0] = idx


cdef inline void _max_edge_columns(const floating* src, Py_ssize_t in_w, Py_ssize_t h0,
                                   Py_ssize_t h1, Py_ssize_t pad_w, Py_ssize_t k_w,
                                   Span inner, Py_ssize_t out_w, floating* out,
                                   int64_t* out_idx) noexcept nogil:
    """The stride-2 row paths' edge columns (outside ``inner``), each
    window scanned on its own (clipped to the row)."""
    cdef Py_ssize_t q
    for q in range(inner.lo):
        _max_window(src, in_w, h0, h1, 2 * q - pad_w, k_w, out + q, out_idx + q)
    for q in range(inner.hi, out_w):
        _max_window(src, in_w, h0, h1, 2 * q - pad_w, k_w, out + q, out_idx + q)


# --- max pooling -------------------------------------------------------------

cdef inline void _planes_to_channels_last(const floating* planes, Py_ssize_t block,
                                         Py_ssize_t plane, floating* image) noexcept nogil:
    """``image[e*block + j] = planes[j*plane + e]``: ``block`` consecutive
    planes of ``plane`` elements as the channels of one channels-last image
    (fc_transpose_* of _winograd.h, 8 x 8 AVX blocks in the AVX2 build)."""
    if floating is float:
        fc_transpose_f32(planes, plane, block, plane, image, block, 0)
    else:
        fc_transpose_f64(planes, plane, block, plane, image, block, 0)


cdef inline void _channels_last_to_planes(const floating* image, Py_ssize_t block,
                                         Py_ssize_t plane, floating* planes) noexcept nogil:
    """The inverse of _planes_to_channels_last (a copy: int64 values can go
    through it as doubles, bit for bit)."""
    if floating is float:
        fc_transpose_f32(image, block, plane, block, planes, plane, 1)
    else:
        fc_transpose_f64(image, block, plane, block, planes, plane, 1)


cdef enum:
    # planes staged together: one AVX-512 vector of them as the channels
    SMALL_BLOCK_BYTES = 64


cdef inline Py_ssize_t _staged_planes(Py_ssize_t planes, Py_ssize_t out_w, Py_ssize_t plane,
                                      size_t itemsize) noexcept nogil:
    """How many leading planes of an NCHW pool go channels last, in whole
    blocks of SMALL_BLOCK_BYTES // itemsize: those of output rows narrower
    than an AVX2 vector, on planes of at most SMALL_PLANE_MAX elements (the
    rest run row by row); 0 where the row loops take them all."""
    cdef Py_ssize_t block = SMALL_BLOCK_BYTES // itemsize
    if (not (FC_POOL_AVX2 and POOL_FAST_PATHS) or out_w >= _avx2_lanes(itemsize)
            or plane > SMALL_PLANE_MAX):
        return 0
    return planes // block * block


cdef int _max_pool_small_planes(const floating* xp, floating* yp, int64_t* ip,
                                Py_ssize_t n_blocks, Py_ssize_t block,
                                Py_ssize_t in_h, Py_ssize_t in_w,
                                Py_ssize_t out_h, Py_ssize_t out_w,
                                Py_ssize_t k_h, Py_ssize_t k_w,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w,
                                int n_threads) noexcept nogil:
    """The first ``n_blocks * block`` planes of an NCHW max pool whose
    output rows are narrower than a vector: the row kernels' per-row work
    and scratch round trips (stores read straight back) made such planes
    5-20x slower per element than large ones (8x8 and 4x4 planes, float32:
    2.6 and 5.6 ns an element against 0.3 on 28x28).  Each block of
    ``block`` planes (one AVX-512 vector) is staged channels last in a
    per-thread scratch, every output pixel takes the NHWC pixel kernel
    across the block (the same winner rules and tree, so the same bits), and
    values and indices are copied back plane by plane.  Returns a status."""
    cdef Py_ssize_t plane = in_h * in_w, out_plane = out_h * out_w
    cdef Py_ssize_t b, o, p, q, h0, h1, w0, w1
    cdef floating* sx = NULL
    cdef floating* sy
    cdef int64_t* si
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with parallel(num_threads=n_threads):
        # [block planes channels last] [their maxima] [their indices]
        sx = <floating*>_workspace((plane + out_plane) * block * sizeof(floating)
                                   + out_plane * block * sizeof(int64_t))
        if sx == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for b in prange(n_blocks, schedule="static"):
            if sx != NULL:
                sy = sx + plane * block
                si = <int64_t*>(sy + out_plane * block)
                _planes_to_channels_last(xp + b * block * plane, block, plane, sx)
                for p in range(out_h):
                    h0 = max(p * stride_h - pad_h, 0)
                    h1 = min(p * stride_h - pad_h + k_h, in_h)
                    for q in range(out_w):
                        w0 = max(q * stride_w - pad_w, 0)
                        w1 = min(q * stride_w - pad_w + k_w, in_w)
                        o = (p * out_w + q) * block
                        if floating is float:
                            fc_max_px_f32(sx, in_w, block, h0, h1, w0, w1, sy + o, si + o)
                        else:
                            fc_max_px_f64(sx, in_w, block, h0, h1, w0, w1, sy + o, si + o)
                _channels_last_to_planes(sy, block, out_plane, yp + b * block * out_plane)
                _channels_last_to_planes(<double*>si, block, out_plane,
                                         <double*>(ip + b * block * out_plane))
        free(sx)
    return status


def max_pool2d_forward(const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] out,
                       int64_t[:, :, :, ::1] indices,
                       Py_ssize_t k_h, Py_ssize_t k_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_h, Py_ssize_t pad_w, int n_threads):
    """Window maxima and the flat index ``h*W + w`` of each.

    Padding acts as -inf.  The first maximum in row-major window order
    wins; a NaN wins over any number (and a later NaN over an earlier one),
    exactly as PyTorch's CPU kernel decides.

    A whole output row is updated per window tap (vectorizable, branch-free
    selects).  The winner is remembered as its tap's row base
    ``i*W + v - pad_w`` (the same for every column, so the select blends a
    constant) held in the value's own type so that value and tap blend in
    the same lanes; the flat index is that base plus ``q*stride_w``.  The
    base is exact while the plane has fewer than 2**24 (float32) / 2**31
    (float64) elements; larger planes take the element-by-element loop.
    """
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    if planes == 0 or out_h * out_w == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef int64_t* ip = &indices[0, 0, 0, 0]
    # (through int32: SIMD converts float to int32, not to int64)
    cdef Py_ssize_t exact = (1 << 24) if floating is float else (1 << 31) - 1
    cdef Py_ssize_t pl, p, q, i, v, co, hs, h0, h1, ws
    cdef Span cols
    cdef bint take
    cdef floating val, base, cur, cur_idx
    cdef const floating* src
    cdef const floating* srow
    cdef floating* best
    cdef floating* best_idx = NULL
    cdef int64_t* irow
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    cdef Span taps = _useful_taps(k_w, pad_w, stride_w, in_w, out_w)
    cdef bint pairs = POOL_FAST_PATHS and stride_w == 2 and (k_w == 2 or k_w == 3)
    cdef Span inner = _inner_columns(k_w, 2, pad_w, in_w, out_w)
    # k x k windows with enough inner columns for whole AVX2 vectors
    cdef bint square = (FC_POOL_AVX2 and pairs and k_h == k_w
                        and inner.hi - inner.lo >= _avx2_lanes(sizeof(floating)))
    cdef bint whole = square and _whole_windows(k_h, stride_h, pad_h, pad_w, in_h, out_h,
                                                inner, out_w)
    cdef Py_ssize_t padded = _round_up_lanes(inner.hi - inner.lo) if pairs else 0
    # scratch rows start on cache lines (split vector loads/stores are slow)
    cdef Py_ssize_t span = (padded + 16) // 16 * 16
    cdef floating* even
    cdef floating* odd
    cdef floating* run
    cdef floating* run_idx
    if ROWWISE_MAX_PLANE >= 0:
        exact = min(exact, ROWWISE_MAX_PLANE)
    if in_h * in_w + k_w > exact:
        _max_pool_elementwise(xp, yp, ip, planes, in_h, in_w, out_h, out_w,
                              k_h, k_w, stride_h, stride_w, pad_h, pad_w, n_threads)
        return
    # output rows narrower than a vector: whole blocks of planes staged
    # channels last, the rest row by row
    cdef Py_ssize_t block = SMALL_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t first = _staged_planes(planes, out_w, in_h * in_w, sizeof(floating))
    if first:
        with nogil:
            status = _max_pool_small_planes(xp, yp, ip, first // block, block, in_h, in_w,
                                            out_h, out_w, k_h, k_w, stride_h, stride_w,
                                            pad_h, pad_w, n_threads)
        _raise_for_status(status)
        if first == planes:
            return
    with nogil, parallel(num_threads=n_threads):
        # per thread: the row's index bases, and for the stride-2 path the
        # deinterleaved taps and running maxima over the padded width
        best_idx = NULL
        if not whole:
            best_idx = <floating*>_workspace((out_w + 4 * span + 16) * sizeof(floating))
            if best_idx == NULL:
                status_p[0] = STATUS_NO_MEMORY
            else:
                memset(best_idx, 0, (out_w + 4 * span + 16) * sizeof(floating))
        for pl in prange(first, planes, schedule="static"):
            if whole:
                # every window of the plane whole: all rows in the header
                if floating is float:
                    fc_max_plane_s2_f32(xp + pl * in_h * in_w, in_w, k_w, stride_h,
                                        yp + pl * out_h * out_w, ip + pl * out_h * out_w,
                                        out_h, out_w, PREFETCH_OUT_ROWS,
                                        (planes - pl) * in_h * in_w)
                else:
                    fc_max_plane_s2_f64(xp + pl * in_h * in_w, in_w, k_w, stride_h,
                                        yp + pl * out_h * out_w, ip + pl * out_h * out_w,
                                        out_h, out_w, PREFETCH_OUT_ROWS,
                                        (planes - pl) * in_h * in_w)
            elif best_idx != NULL:
                src = xp + pl * in_h * in_w
                for p in range(out_h):
                    fc_prefetch_rows_ahead(src, sizeof(floating), (planes - pl) * in_h * in_w,
                                           p, PREFETCH_OUT_ROWS, k_h, stride_h, pad_h, in_w)
                    hs = p * stride_h - pad_h
                    h0 = max(hs, 0)
                    h1 = min(hs + k_h, in_h)
                    best = yp + (pl * out_h + p) * out_w
                    irow = ip + (pl * out_h + p) * out_w
                    if square and h1 - h0 == k_h:
                        # whole k x k windows: AVX2 row kernel (_pool_avx2.h)
                        if floating is float:
                            fc_max_s2_f32(src + h0 * in_w + 2 * inner.lo - pad_w, in_w, k_w,
                                          best + inner.lo, irow + inner.lo,
                                          inner.hi - inner.lo,
                                          <int32_t>(h0 * in_w + 2 * inner.lo - pad_w))
                        else:
                            fc_max_s2_f64(src + h0 * in_w + 2 * inner.lo - pad_w, in_w, k_w,
                                          best + inner.lo, irow + inner.lo,
                                          inner.hi - inner.lo,
                                          h0 * in_w + 2 * inner.lo - pad_w)
                        _max_edge_columns(src, in_w, h0, h1, pad_w, k_w, inner, out_w,
                                          best, irow)
                        continue
                    if pairs:
                        # stride 2, 2 or 3 taps: columns whose window lies
                        # inside the row take every tap from deinterleaved
                        # copies of the row (unit-stride vector loads) over
                        # a whole number of vectors; the few edge columns
                        # scan their clipped window
                        even = <floating*>_align64(best_idx + out_w)
                        odd = even + span
                        run = odd + span
                        run_idx = run + span
                        for q in range(padded):
                            run[q] = -INFINITY
                            run_idx[q] = <floating>(h0 * in_w - pad_w)
                        for i in range(h0, h1):
                            if inner.hi == inner.lo:
                                break       # (no tap to deinterleave)
                            _deinterleave(src + i * in_w + 2 * inner.lo - pad_w, even, odd,
                                          inner.hi - inner.lo, k_w == 3)
                            _max_taps_stride2(even, odd, run, run_idx, padded,
                                              <floating>(i * in_w - pad_w), k_w)
                        _store_max_row(run, run_idx, best + inner.lo, irow + inner.lo,
                                       inner.hi - inner.lo, 2 * inner.lo)
                        _max_edge_columns(src, in_w, h0, h1, pad_w, k_w, inner, out_w,
                                          best, irow)
                        continue
                    for q in range(out_w):
                        # PyTorch starts from -inf at the first in-plane element
                        ws = q * stride_w - pad_w
                        best[q] = -INFINITY
                        best_idx[q] = <floating>(h0 * in_w + max(ws, 0) - q * stride_w)
                    for i in range(h0, h1):
                        srow = src + i * in_w
                        for v in range(taps.lo, taps.hi):
                            co = v - pad_w
                            cols = _tap_range(co, stride_w, in_w, out_w)
                            base = <floating>(i * in_w + co)
                            # branch-free select (operands loaded first so
                            # the compiler if-converts and vectorizes it): an
                            # "if" mispredicts on random data every other time
                            if stride_w == 1:
                                for q in range(cols.lo, cols.hi):
                                    val = srow[q + co]
                                    cur = best[q]
                                    cur_idx = best_idx[q]
                                    take = (val > cur) | (val != val)
                                    best[q] = val if take else cur
                                    best_idx[q] = base if take else cur_idx
                            else:
                                for q in range(cols.lo, cols.hi):
                                    val = srow[q * stride_w + co]
                                    cur = best[q]
                                    cur_idx = best_idx[q]
                                    take = (val > cur) | (val != val)
                                    best[q] = val if take else cur
                                    best_idx[q] = base if take else cur_idx
                    for q in range(out_w):
                        irow[q] = <int64_t><int32_t>best_idx[q] + q * stride_w
        free(best_idx)
    _raise_for_status(status)


cdef void _max_pool_elementwise(const floating* xp, floating* yp, int64_t* ip,
                                Py_ssize_t planes, Py_ssize_t in_h, Py_ssize_t in_w,
                                Py_ssize_t out_h, Py_ssize_t out_w,
                                Py_ssize_t k_h, Py_ssize_t k_w,
                                Py_ssize_t stride_h, Py_ssize_t stride_w,
                                Py_ssize_t pad_h, Py_ssize_t pad_w, int n_threads) noexcept:
    """Max pooling one window at a time, with a 64-bit index: for planes too
    large for the row-wise kernel's in-lane index."""
    cdef Py_ssize_t pl, p, q, h0, h1
    cdef const floating* src
    with nogil:
        for pl in prange(planes, schedule="static", num_threads=n_threads):
            src = xp + pl * in_h * in_w
            for p in range(out_h):
                h0 = p * stride_h - pad_h
                h1 = min(h0 + k_h, in_h)
                h0 = max(h0, 0)
                for q in range(out_w):
                    _max_window(src, in_w, h0, h1, q * stride_w - pad_w, k_w,
                                yp + (pl * out_h + p) * out_w + q,
                                ip + (pl * out_h + p) * out_w + q)


cdef inline void _zero_block_row_tails(floating* row0, Py_ssize_t in_w, Py_ssize_t out_w,
                                       Py_ssize_t ch) noexcept nogil:
    """Zero the pixels [2*out_w, in_w) of input rows row0 and row0 + in_w
    (ch values per pixel): the columns no 2x2, stride-2 window covers."""
    cdef Py_ssize_t a
    if in_w == 2 * out_w:
        return      # (the usual even width: nothing to zero, no call)
    for a in range(2):
        memset(row0 + (a * in_w + 2 * out_w) * ch, 0,
               (in_w - 2 * out_w) * ch * sizeof(floating))


cdef inline bint _streams(Py_ssize_t planes, Py_ssize_t in_size,
                          Py_ssize_t itemsize) noexcept nogil:
    """Whether a pool gradient of planes x in_size elements streams its
    planes out (see STREAM_MIN_BYTES)."""
    return (STREAM_MIN_BYTES >= 0 and in_size * itemsize <= STREAM_MAX_PLANE
            and planes * in_size * itemsize >= STREAM_MIN_BYTES)


cdef bint _max_backward_plane_k2s2(const floating* g, const int64_t* idx, floating* dx,
                                   Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t out_h,
                                   Py_ssize_t out_w, Py_ssize_t g_left,
                                   Py_ssize_t dx_left) noexcept nogil:
    """One plane of the max-pool gradient written once, when every index
    lies in its own 2x2 block (rows 2p, 2p+1, columns 2q, 2q+1), whatever
    the pooling that made it: such blocks are disjoint, so each element
    takes at most one contribution and the AVX2 row kernel writes
    ``+0.0 + g`` or ``+0.0``, as the scatter would.  Returns False (the
    plane partly written) at the first index outside its block."""
    cdef Py_ssize_t p
    cdef floating* d0
    for p in range(out_h):
        fc_prefetch_grad_rows(g, idx, sizeof(floating), g_left, out_w, dx, dx_left, in_w, p,
                              PREFETCH_OUT_ROWS)
        d0 = dx + 2 * p * in_w
        if floating is float:
            if not fc_max_grad_k2s2_f32(g + p * out_w, idx + p * out_w, d0, in_w, out_w,
                                        2 * p * in_w):
                return False
        else:
            if not fc_max_grad_k2s2_f64(g + p * out_w, idx + p * out_w, d0, in_w, out_w,
                                        2 * p * in_w):
                return False
        _zero_block_row_tails(d0, in_w, out_w, 1)
    memset(dx + 2 * out_h * in_w, 0, (in_h - 2 * out_h) * in_w * sizeof(floating))
    return True


def max_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                        const int64_t[:, :, :, ::1] indices,
                        floating[:, :, :, ::1] grad_in, int n_threads):
    """Route each ``grad_out`` element to ``indices`` in its input plane.

    Each plane of ``grad_in`` is one work item: zero-filled here (by the
    thread that then sums into it, while it is in that core's cache), then
    summed in a fixed order; an index outside ``[0, H*W)`` is never written
    and makes the call raise ``ValueError``.  A plane whose indices all lie
    in their own 2x2 blocks (2x2, stride-2 pooling) is written once instead
    (``_max_backward_plane_k2s2``; the same values).  A large gradient is
    built plane by plane in a per-thread scratch plane and streamed out
    (``STREAM_MIN_BYTES``; the same values).
    """
    cdef Py_ssize_t planes = grad_out.shape[0] * grad_out.shape[1]
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t out_size = out_h * out_w
    cdef Py_ssize_t in_size = in_h * in_w
    if planes == 0 or out_size == 0:
        return
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef const int64_t* ip = &indices[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef bint blocks = (FC_POOL_AVX2 and POOL_FAST_PATHS and 2 * out_h <= in_h
                        and 2 * out_w <= in_w and out_w >= _avx2_lanes(sizeof(floating)))
    cdef bint stream = _streams(planes, in_size, sizeof(floating))
    cdef Py_ssize_t pl, l
    cdef int64_t idx
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    cdef void* scratch_mem = NULL
    cdef floating* scratch = NULL
    cdef floating* dst
    with nogil, parallel(num_threads=n_threads):
        # a thread's scratch plane when the gradient streams; if that
        # allocation fails, its planes are written in place (same values)
        scratch_mem = _workspace(in_size * sizeof(floating) + 64) if stream else NULL
        scratch = <floating*>_align64(scratch_mem) if scratch_mem != NULL else NULL
        for pl in prange(planes, schedule="static"):
            # the plane is built in place, or in the scratch plane and then
            # streamed out
            dst = scratch if scratch != NULL else dxp + pl * in_size
            if not (blocks and _max_backward_plane_k2s2(
                    gp + pl * out_size, ip + pl * out_size, dst, in_h, in_w, out_h, out_w,
                    (planes - pl) * out_size,
                    in_size if scratch != NULL else (planes - pl) * in_size)):
                memset(dst, 0, in_size * sizeof(floating))
                for l in range(out_size):
                    idx = ip[pl * out_size + l]
                    if idx < 0 or idx >= in_size:
                        status_p[0] = STATUS_BAD_INDEX
                    else:
                        dst[idx] += gp[pl * out_size + l]
            if scratch != NULL:
                fc_stream_copy(dxp + pl * in_size, scratch, in_size * sizeof(floating))
        if scratch != NULL:
            fc_stream_fence()
        free(scratch_mem)
    _raise_for_status(status)


# --- average pooling ---------------------------------------------------------

cdef struct Window:
    Py_ssize_t start    # first input row/column inside the input
    Py_ssize_t stop     # one past the last
    Py_ssize_t padded   # extent within the padded input (PyTorch's pool_size)


cdef inline Window _avg_window(Py_ssize_t o, Py_ssize_t k, Py_ssize_t stride,
                               Py_ssize_t pad, Py_ssize_t size) noexcept nogil:
    """Window ``o`` of one axis, clipped to the input.  Returned by value so
    that callers inside prange keep it thread-private."""
    cdef Window win
    cdef Py_ssize_t s = o * stride - pad
    cdef Py_ssize_t e = min(s + k, size + pad)
    win.padded = e - s
    win.start = max(s, 0)
    win.stop = min(e, size)
    return win


cdef inline bint _float_exact_divisors(Py_ssize_t k_h, Py_ssize_t k_w) noexcept nogil:
    """Every divisor (at most k_h * k_w) is an integer exact in float32."""
    return k_h <= (1 << 24) and k_w <= (1 << 24) and k_h * k_w <= (1 << 24)


def _avg_col_divisors(Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                      Py_ssize_t grid, bint count_include_pad):
    """Column factor of each output column's divisor (float64; see Window)."""
    out = np.empty(grid, dtype=np.float64)
    cdef double[::1] f = out
    cdef Py_ssize_t q
    cdef Window w
    for q in range(grid):
        w = _avg_window(q, k, stride, pad, size)
        f[q] = <double>w.padded if count_include_pad else <double>(w.stop - w.start)
    return out


cdef inline void _divide_row(const floating* num, floating* out, Py_ssize_t n,
                             double row_div, const double* cdiv,
                             bint float_exact) noexcept nogil:
    """``out[q] = num[q] / (row_div * cdiv[q])``, rounded once to the
    output type.  For float32 with a divisor exact in float32 (at most 2**24)
    the division runs in float32: a quotient rounded to double and then to
    float equals the one rounded straight to float (53 >= 2*24 + 2), so
    the bits are the same and the vector division is twice as wide."""
    cdef Py_ssize_t q
    if floating is float:
        if float_exact:
            for q in range(n):
                out[q] = num[q] / <float>(row_div * cdiv[q])
            return
    for q in range(n):
        out[q] = <floating>(num[q] / (row_div * cdiv[q]))


cdef inline void _sum_taps_stride2(const floating* srow, Py_ssize_t pad, floating* acc,
                                   Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t k) noexcept nogil:
    """Add one input row's taps (k = 2 or 3, stride 2), in window order, to
    the running sums of inner columns [lo, hi)."""
    cdef Py_ssize_t q
    if k == 2:
        for q in range(lo, hi):
            acc[q] = (acc[q] + srow[2 * q - pad]) + srow[2 * q - pad + 1]
    else:
        for q in range(lo, hi):
            acc[q] = ((acc[q] + srow[2 * q - pad]) + srow[2 * q - pad + 1]) + srow[2 * q - pad + 2]


cdef inline floating _window_sum(const floating* src, Py_ssize_t in_w, Py_ssize_t h0,
                                 Py_ssize_t h1, Py_ssize_t ws, Py_ssize_t k_w) noexcept nogil:
    """Sum of one window (rows [h0, h1), columns [ws, ws + k_w) clipped to
    the row) in window order."""
    cdef Py_ssize_t i, j
    cdef floating acc = 0
    for i in range(h0, h1):
        for j in range(max(ws, 0), min(ws + k_w, in_w)):
            acc = acc + src[i * in_w + j]
    return acc


cdef inline void _sum_edge_columns(const floating* src, Py_ssize_t in_w, Py_ssize_t h0,
                                   Py_ssize_t h1, Py_ssize_t pad_w, Py_ssize_t k_w,
                                   Span inner, Py_ssize_t out_w, floating* acc) noexcept nogil:
    """The stride-2 row paths' edge columns (outside ``inner``): each
    window's clipped sum."""
    cdef Py_ssize_t q
    for q in range(inner.lo):
        acc[q] = _window_sum(src, in_w, h0, h1, 2 * q - pad_w, k_w)
    for q in range(inner.hi, out_w):
        acc[q] = _window_sum(src, in_w, h0, h1, 2 * q - pad_w, k_w)


cdef inline void _spread_pairs_stride2(floating* drow, Py_ssize_t pad, const floating* share,
                                       Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Add ``share[q]`` to taps 0 and 1 (stride 2) of columns [lo, hi) of one
    input row; those never overlap, so the loop vectorizes."""
    cdef Py_ssize_t q
    for q in range(lo, hi):
        drow[2 * q - pad] += share[q]
        drow[2 * q - pad + 1] += share[q]


cdef inline void _spread_third_tap_stride2(floating* drow, Py_ssize_t pad,
                                           const floating* share,
                                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Add ``share[q]`` to tap 2 (stride 2) of columns [lo, hi): the element
    that is also tap 0 of column q+1."""
    cdef Py_ssize_t q
    for q in range(lo, hi):
        drow[2 * q - pad + 2] += share[q]


cdef inline void _window_spread(floating* drow, Py_ssize_t in_w, Py_ssize_t ws,
                                Py_ssize_t k_w, floating share) noexcept nogil:
    """Add ``share`` to columns [ws, ws + k_w) of one row, clipped to it."""
    cdef Py_ssize_t j
    for j in range(max(ws, 0), min(ws + k_w, in_w)):
        drow[j] += share


cdef int _avg_pool_small_planes(const floating* xp, floating* yp,
                                Py_ssize_t n_blocks, Py_ssize_t block,
                                Py_ssize_t in_h, Py_ssize_t in_w,
                                Py_ssize_t out_h, Py_ssize_t out_w,
                                Py_ssize_t k_h, Py_ssize_t stride_h, Py_ssize_t pad_h,
                                Py_ssize_t k_w, Py_ssize_t stride_w, Py_ssize_t pad_w,
                                bint count_include_pad, const double* cdiv,
                                int n_threads) noexcept nogil:
    """The first ``n_blocks * block`` planes of an NCHW average pool whose
    output rows are narrower than a vector, as _max_pool_small_planes does
    them: staged channels last, each output pixel's window summed by the
    NHWC pixel kernel (the same sums and divisions, so the same bits).
    Returns a status."""
    cdef Py_ssize_t plane = in_h * in_w, out_plane = out_h * out_w
    cdef Py_ssize_t b, o, p, q
    cdef Window wh, ww
    cdef double row_div
    cdef floating* sx = NULL
    cdef floating* sy
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    with parallel(num_threads=n_threads):
        # [block planes channels last] [their means]
        sx = <floating*>_workspace((plane + out_plane) * block * sizeof(floating))
        if sx == NULL:
            status_p[0] = STATUS_NO_MEMORY
        for b in prange(n_blocks, schedule="static"):
            if sx != NULL:
                sy = sx + plane * block
                _planes_to_channels_last(xp + b * block * plane, block, plane, sx)
                for p in range(out_h):
                    wh = _avg_window(p, k_h, stride_h, pad_h, in_h)
                    row_div = (<double>wh.padded if count_include_pad
                               else <double>(wh.stop - wh.start))
                    for q in range(out_w):
                        ww = _avg_window(q, k_w, stride_w, pad_w, in_w)
                        o = (p * out_w + q) * block
                        if floating is float:
                            fc_avg_px_f32(sx, in_w, block, wh.start, wh.stop, ww.start,
                                          ww.stop, sy + o, <float>(row_div * cdiv[q]))
                        else:
                            fc_avg_px_f64(sx, in_w, block, wh.start, wh.stop, ww.start,
                                          ww.stop, sy + o, row_div * cdiv[q])
                _channels_last_to_planes(sy, block, out_plane, yp + b * block * out_plane)
        free(sx)
    return status


def avg_pool2d_forward(const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] out,
                       Py_ssize_t k_h, Py_ssize_t k_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_h, Py_ssize_t pad_w,
                       bint count_include_pad, int n_threads):
    """Window means; the divisor follows PyTorch (see ``Window``).

    Each output row is accumulated tap by tap (a vectorizable loop over the
    row); every output still sums its window in row-major order.  Divisors
    are products of a row and a column factor, in float64 (the padded area
    of a huge window overflows int64).
    """
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    if planes == 0 or out_h * out_w == 0:
        return
    cdef const double[::1] col_div = _avg_col_divisors(k_w, stride_w, pad_w, in_w, out_w,
                                                       count_include_pad)
    cdef const double* cdiv = &col_div[0]
    cdef Span taps = _useful_taps(k_w, pad_w, stride_w, in_w, out_w)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    cdef bint float_exact = _float_exact_divisors(k_h, k_w)
    cdef bint pairs = POOL_FAST_PATHS and stride_w == 2 and (k_w == 2 or k_w == 3)
    cdef Span inner = _inner_columns(k_w, 2, pad_w, in_w, out_w)
    # k x k windows with enough inner columns for whole AVX2 vectors
    cdef bint square = (FC_POOL_AVX2 and pairs and k_h == k_w
                        and inner.hi - inner.lo >= _avx2_lanes(sizeof(floating)))
    cdef bint whole = square and _whole_windows(k_h, stride_h, pad_h, pad_w, in_h, out_h,
                                                inner, out_w)
    cdef Py_ssize_t pl, p, q, i, v, co
    cdef double row_div
    cdef Window wh
    cdef Span cols
    cdef const floating* srow
    cdef floating* acc
    # output rows narrower than a vector: whole blocks of planes staged
    # channels last (as in max_pool2d_forward; the pixel kernel divides in
    # float32 only where that is exact, as the rows do), the rest row by row
    cdef Py_ssize_t block = SMALL_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t first = (_staged_planes(planes, out_w, in_h * in_w, sizeof(floating))
                             if float_exact or floating is double else 0)
    cdef int status
    if first:
        with nogil:
            status = _avg_pool_small_planes(xp, yp, first // block, block, in_h, in_w,
                                            out_h, out_w, k_h, stride_h, pad_h, k_w, stride_w,
                                            pad_w, count_include_pad, cdiv, n_threads)
        _raise_for_status(status)
        if first == planes:
            return
    with nogil:
        for pl in prange(first, planes, schedule="static", num_threads=n_threads):
            if whole:
                # every window of the plane whole: all rows in the header
                if floating is float:
                    fc_avg_plane_s2_f32(xp + pl * in_h * in_w, in_w, k_w, stride_h,
                                        yp + pl * out_h * out_w, out_h, out_w,
                                        PREFETCH_OUT_ROWS, (planes - pl) * in_h * in_w)
                else:
                    fc_avg_plane_s2_f64(xp + pl * in_h * in_w, in_w, k_w, stride_h,
                                        yp + pl * out_h * out_w, out_h, out_w,
                                        PREFETCH_OUT_ROWS, (planes - pl) * in_h * in_w)
                continue
            for p in range(out_h):
                fc_prefetch_rows_ahead(xp + pl * in_h * in_w, sizeof(floating),
                                       (planes - pl) * in_h * in_w, p, PREFETCH_OUT_ROWS,
                                       k_h, stride_h, pad_h, in_w)
                wh = _avg_window(p, k_h, stride_h, pad_h, in_h)
                row_div = <double>wh.padded if count_include_pad else <double>(wh.stop - wh.start)
                acc = yp + (pl * out_h + p) * out_w
                if square and wh.stop - wh.start == k_h:
                    # whole k x k windows: AVX2 row kernel (_pool_avx2.h);
                    # their divisor is k*k in both count_include_pad modes
                    srow = xp + (pl * in_h + wh.start) * in_w + 2 * inner.lo - pad_w
                    if floating is float:
                        fc_avg_s2_f32(srow, in_w, k_w, acc + inner.lo, inner.hi - inner.lo,
                                      <float>(k_h * k_w))
                    else:
                        fc_avg_s2_f64(srow, in_w, k_w, acc + inner.lo, inner.hi - inner.lo,
                                      <double>(k_h * k_w))
                    _sum_edge_columns(xp + pl * in_h * in_w, in_w, wh.start, wh.stop, pad_w,
                                      k_w, inner, out_w, acc)
                    _divide_row(acc, acc, inner.lo, row_div, cdiv, float_exact)
                    _divide_row(acc + inner.hi, acc + inner.hi, out_w - inner.hi, row_div,
                                cdiv + inner.hi, float_exact)
                    continue
                if pairs:
                    # as in max_pool2d_forward: inner columns take every
                    # tap in one pass, edge columns sum their clipped window
                    for q in range(inner.lo, inner.hi):
                        acc[q] = 0
                    for i in range(wh.start, wh.stop):
                        _sum_taps_stride2(xp + (pl * in_h + i) * in_w, pad_w, acc,
                                          inner.lo, inner.hi, k_w)
                    _sum_edge_columns(xp + pl * in_h * in_w, in_w, wh.start, wh.stop, pad_w,
                                      k_w, inner, out_w, acc)
                    _divide_row(acc, acc, out_w, row_div, cdiv, float_exact)
                    continue
                for q in range(out_w):
                    acc[q] = 0
                for i in range(wh.start, wh.stop):
                    srow = xp + (pl * in_h + i) * in_w
                    for v in range(taps.lo, taps.hi):
                        co = v - pad_w
                        cols = _tap_range(co, stride_w, in_w, out_w)
                        if stride_w == 1:
                            for q in range(cols.lo, cols.hi):
                                acc[q] = acc[q] + srow[q + co]
                        else:
                            for q in range(cols.lo, cols.hi):
                                acc[q] = acc[q] + srow[q * stride_w + co]
                _divide_row(acc, acc, out_w, row_div, cdiv, float_exact)


cdef struct AvgGeometry:
    Py_ssize_t in_h, in_w, out_h, out_w
    Py_ssize_t k_h, k_w, stride_h, stride_w, pad_h, pad_w
    bint count_include_pad
    bint pairs          # stride-2, 2- or 3-tap rows take the fast path
    Span inner          # ... for these columns
    Span taps           # taps that reach the input at all
    bint float_exact    # every divisor is exact in float32 (see _divide_row)
    bint spread_avx2    # spread rows by the AVX2 kernel (see _avg_spread_row)
    Py_ssize_t spread_n # ... over this many windows (whole vectors, > out_w)
    Py_ssize_t ring_w   # row stride of the ring of spread rows (>= in_w)


cdef void _avg_spread_row(const floating* grow, floating* hrow, floating* share,
                          Py_ssize_t p, const AvgGeometry* geo,
                          const double* cdiv) noexcept nogil:
    """Spread output row p's shares over one input row's columns:
    ``hrow[j] = sum of share[q]`` over the windows q that cover column j,
    added tap by tap (then column), the same order on both paths."""
    cdef Py_ssize_t q, v, co
    cdef Span cols
    cdef Window wh = _avg_window(p, geo.k_h, geo.stride_h, geo.pad_h, geo.in_h)
    cdef double row_div = (<double>wh.padded if geo.count_include_pad
                           else <double>(wh.stop - wh.start))
    if geo.spread_avx2:
        # stride 2, 2 or 3 taps, no padding, every window inside the row:
        # AVX2 kernel over share[1:] (share[0] and the lanes past out_w stay
        # zero), writing the padded ring row in whole vectors
        _divide_row(grow, share + 1, geo.out_w, row_div, cdiv, geo.float_exact)
        if floating is float:
            fc_avg_spread_s2_f32(share, hrow, geo.spread_n, geo.k_w)
        else:
            fc_avg_spread_s2_f64(share, hrow, geo.spread_n, geo.k_w)
        return
    _divide_row(grow, share, geo.out_w, row_div, cdiv, geo.float_exact)
    memset(hrow, 0, geo.in_w * sizeof(floating))
    if geo.pairs:
        # with 3 taps, tap 2 of column q is tap 0 of column q+1, which
        # must come first
        _spread_pairs_stride2(hrow, geo.pad_w, share, geo.inner.lo, geo.inner.hi)
        for q in range(geo.out_w - 1, geo.inner.hi - 1, -1):
            _window_spread(hrow, geo.in_w, 2 * q - geo.pad_w, geo.k_w, share[q])
        if geo.k_w == 3:
            _spread_third_tap_stride2(hrow, geo.pad_w, share, geo.inner.lo, geo.inner.hi)
        for q in range(geo.inner.lo - 1, -1, -1):
            _window_spread(hrow, geo.in_w, 2 * q - geo.pad_w, geo.k_w, share[q])
        return
    for v in range(geo.taps.lo, geo.taps.hi):
        co = v - geo.pad_w
        cols = _tap_range(co, geo.stride_w, geo.in_w, geo.out_w)
        if geo.stride_w == 1:
            for q in range(cols.lo, cols.hi):
                hrow[q + co] += share[q]
        else:
            for q in range(cols.lo, cols.hi):
                hrow[q * geo.stride_w + co] += share[q]


cdef void _avg_backward_plane(const floating* g, floating* dx, floating* ring,
                              Py_ssize_t ring_rows, floating* share,
                              const AvgGeometry* geo, const double* cdiv) noexcept nogil:
    """One plane of the average-pooling gradient, written once, row by row.

    Separable: each output row's shares are spread over the columns once
    (``_avg_spread_row``, kept in a ring of the rows still needed), and
    input row i is the sum, in output-row order, of the spread rows of the
    windows that cover it -- contiguous vector adds instead of k_h strided
    scatters per output row, and no zero-fill pass over the plane.
    """
    cdef Py_ssize_t i, j, p, p_lo, p_hi
    cdef Py_ssize_t in_w = geo.in_w
    cdef Py_ssize_t built = 0           # spread rows [0, built) have been made
    cdef floating* drow
    cdef const floating* hrow
    cdef const floating* next_row
    for i in range(geo.in_h):
        drow = dx + i * in_w
        p_lo = max(0, _ceil_div(i + geo.pad_h - geo.k_h + 1, geo.stride_h))
        p_hi = min(geo.out_h - 1, _floor_div(i + geo.pad_h, geo.stride_h))
        while built <= p_hi:
            _avg_spread_row(g + built * geo.out_w, ring + (built % ring_rows) * geo.ring_w,
                            share, built, geo, cdiv)
            built += 1
        if p_lo > p_hi:
            memset(drow, 0, in_w * sizeof(floating))
            continue
        hrow = ring + (p_lo % ring_rows) * geo.ring_w
        if p_hi == p_lo + 1:
            # two windows cover the row (k_h = 3, stride 2): one pass
            next_row = ring + (p_hi % ring_rows) * geo.ring_w
            for j in range(in_w):
                drow[j] = hrow[j] + next_row[j]
            continue
        for j in range(in_w):
            drow[j] = hrow[j]
        for p in range(p_lo + 1, p_hi + 1):
            hrow = ring + (p % ring_rows) * geo.ring_w
            for j in range(in_w):
                drow[j] = drow[j] + hrow[j]


cdef void _avg_backward_plane_k2s2(const floating* g, floating* dx,
                                   const AvgGeometry* geo, Py_ssize_t g_left,
                                   Py_ssize_t dx_left) noexcept nogil:
    """One plane of a 2x2, stride-2, unpadded average-pooling gradient whose
    windows all lie inside the input: each input element is in at most one
    window, so both input rows of an output row are written in one AVX2 pass
    (``_pool_avx2.h``, the same values as ``_avg_backward_plane``); the
    columns and rows no window covers get zeros."""
    cdef Py_ssize_t p
    cdef Py_ssize_t in_w = geo.in_w, out_w = geo.out_w
    cdef floating* d0
    for p in range(geo.out_h):
        fc_prefetch_grad_rows(g, NULL, sizeof(floating), g_left, out_w, dx, dx_left, in_w, p,
                              PREFETCH_OUT_ROWS)
        d0 = dx + 2 * p * in_w
        if floating is float:
            fc_avg_grad_k2s2_f32(g + p * out_w, d0, d0 + in_w, out_w, 4)
        else:
            fc_avg_grad_k2s2_f64(g + p * out_w, d0, d0 + in_w, out_w, 4)
        _zero_block_row_tails(d0, in_w, out_w, 1)
    memset(dx + 2 * geo.out_h * in_w, 0, (geo.in_h - 2 * geo.out_h) * in_w * sizeof(floating))


cdef int _avg_backward_small_planes(const floating[:, :, :, ::1] grad_out,
                                    floating[:, :, :, ::1] grad_in,
                                    Py_ssize_t n_blocks, Py_ssize_t block,
                                    Py_ssize_t k_h, Py_ssize_t k_w,
                                    Py_ssize_t stride_h, Py_ssize_t stride_w,
                                    Py_ssize_t pad_h, Py_ssize_t pad_w,
                                    bint count_include_pad, int n_threads) except -1:
    """The first ``n_blocks * block`` planes of an NCHW average-pool gradient
    whose output rows are narrower than a vector: the row loops' per-row
    work cost 5x the large planes' time per element there (8x8 and 4x4
    planes).  Each block of ``block`` planes becomes one channels-last
    image, the NHWC kernel (parallel over those images) spreads the shares
    in the NCHW order, so the bits are the same, and the blocks are
    transposed back.  Two temporaries of the blocks' size."""
    cdef Py_ssize_t out_h = grad_out.shape[2], out_w = grad_out.shape[3]
    cdef Py_ssize_t in_h = grad_in.shape[2], in_w = grad_in.shape[3]
    cdef Py_ssize_t out_plane = out_h * out_w, in_plane = in_h * in_w, b
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, :, ::1] g_cl = np.empty((n_blocks, out_h, out_w, block), dtype)
    cdef floating[:, :, :, ::1] dx_cl = np.empty((n_blocks, in_h, in_w, block), dtype)
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef floating* gcl = &g_cl[0, 0, 0, 0]
    cdef floating* dcl = &dx_cl[0, 0, 0, 0]
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            _planes_to_channels_last(gp + b * block * out_plane, block, out_plane,
                                     gcl + b * out_plane * block)
    avg_pool2d_backward_nhwc(g_cl, dx_cl, k_h, k_w, stride_h, stride_w, pad_h, pad_w,
                             count_include_pad, n_threads)
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            _channels_last_to_planes(dcl + b * in_plane * block, block, in_plane,
                                     dxp + b * block * in_plane)
    return 0


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                        floating[:, :, :, ::1] grad_in,
                        Py_ssize_t k_h, Py_ssize_t k_w,
                        Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w,
                        bint count_include_pad, int n_threads):
    """Spread each ``grad_out`` element evenly over its window.

    One work item per plane (see ``_avg_backward_plane``); every element of
    ``grad_in`` is written exactly once, its shares added in a fixed order.
    Per-thread workspace: ceil(k_h / stride_h) spread rows of the input's
    width and one row of shares.
    """
    cdef Py_ssize_t planes = grad_out.shape[0] * grad_out.shape[1]
    cdef AvgGeometry geo
    geo.in_h = grad_in.shape[2]
    geo.in_w = grad_in.shape[3]
    geo.out_h = grad_out.shape[2]
    geo.out_w = grad_out.shape[3]
    if planes == 0 or geo.in_h * geo.in_w == 0:
        return
    if geo.out_h * geo.out_w == 0:
        with nogil:
            memset(&grad_in[0, 0, 0, 0], 0,
                   planes * geo.in_h * geo.in_w * sizeof(floating))
        return
    geo.k_h, geo.k_w = k_h, k_w
    geo.stride_h, geo.stride_w = stride_h, stride_w
    geo.pad_h, geo.pad_w = pad_h, pad_w
    geo.count_include_pad = count_include_pad
    geo.pairs = POOL_FAST_PATHS and stride_w == 2 and (k_w == 2 or k_w == 3)
    geo.inner = _inner_columns(k_w, 2, pad_w, geo.in_w, geo.out_w)
    geo.taps = _useful_taps(k_w, pad_w, stride_w, geo.in_w, geo.out_w)
    geo.float_exact = _float_exact_divisors(k_h, k_w)
    cdef const double[::1] col_div = _avg_col_divisors(k_w, stride_w, pad_w, geo.in_w,
                                                       geo.out_w, count_include_pad)
    cdef const double* cdiv = &col_div[0]
    # 2x2 / stride 2 / no padding, windows inside the input, rows of whole
    # AVX2 vectors: the write-once row kernel
    cdef bint square2 = (FC_POOL_AVX2 and POOL_FAST_PATHS and k_h == 2 and k_w == 2
                         and stride_h == 2 and stride_w == 2 and pad_h == 0 and pad_w == 0
                         and 2 * geo.out_h <= geo.in_h and 2 * geo.out_w <= geo.in_w
                         and geo.out_w >= _avx2_lanes(sizeof(floating)))
    cdef Py_ssize_t lanes = _avx2_lanes(sizeof(floating))
    geo.spread_avx2 = (FC_POOL_AVX2 and geo.pairs and pad_w == 0
                       and geo.inner.lo == 0 and geo.inner.hi == geo.out_w)
    geo.spread_n = (geo.out_w + lanes) // lanes * lanes
    geo.ring_w = max(geo.in_w, 2 * geo.spread_n) if geo.spread_avx2 else geo.in_w
    cdef Py_ssize_t share_len = geo.spread_n + 1 if geo.spread_avx2 else geo.out_w
    # 3x3 / stride 2 / no padding, windows inside the input: the write-once
    # two-row kernel, over rotating share rows
    cdef bint square3 = (FC_POOL_AVX2 and POOL_FAST_PATHS and k_h == 3 and k_w == 3
                         and stride_h == 2 and stride_w == 2 and pad_h == 0 and pad_w == 0
                         and 2 * geo.out_h + 1 <= geo.in_h and 2 * geo.out_w + 1 <= geo.in_w
                         and geo.in_w // 2 >= lanes)
    if square3:
        share_len = max(share_len, 4 * (geo.in_w // 2 + 2))
    # output rows narrower than a vector, where neither row kernel runs:
    # whole blocks of planes as channels-last images, the rest row by row
    cdef Py_ssize_t block = SMALL_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t first = (0 if square3 else
                             _staged_planes(planes, geo.out_w, geo.in_h * geo.in_w,
                                            sizeof(floating)))
    if first:
        _avg_backward_small_planes(grad_out, grad_in, first // block, block, k_h, k_w,
                                   stride_h, stride_w, pad_h, pad_w, count_include_pad,
                                   n_threads)
        if first == planes:
            return
    cdef Py_ssize_t ring_rows = min(_ceil_div(k_h, stride_h), geo.out_h)
    cdef Py_ssize_t in_size = geo.in_h * geo.in_w
    cdef Py_ssize_t out_size = geo.out_h * geo.out_w
    cdef const floating* gp = &grad_out[0, 0, 0, 0]
    cdef floating* dxp = &grad_in[0, 0, 0, 0]
    cdef const AvgGeometry* geo_p = &geo
    cdef bint stream = _streams(planes, in_size, sizeof(floating))
    cdef Py_ssize_t pl, dx_left
    cdef floating* ring = NULL
    cdef int status = STATUS_OK
    cdef int* status_p = &status
    cdef void* scratch_mem = NULL
    cdef floating* scratch = NULL
    cdef floating* dst
    with nogil, parallel(num_threads=n_threads):
        ring = <floating*>_workspace((ring_rows * geo_p.ring_w + share_len) * sizeof(floating))
        if ring == NULL:
            status_p[0] = STATUS_NO_MEMORY
        else:
            # (the spread kernel reads zeros around the shares it is given)
            memset(ring + ring_rows * geo_p.ring_w, 0, share_len * sizeof(floating))
        # a thread's scratch plane when the gradient streams; if that
        # allocation fails, its planes are written in place (same values)
        scratch_mem = _workspace(in_size * sizeof(floating) + 64) if stream else NULL
        scratch = <floating*>_align64(scratch_mem) if scratch_mem != NULL else NULL
        for pl in prange(first, planes, schedule="static"):
            # the plane is built in place, or in the scratch plane and then
            # streamed out (dx_left: what the prefetch may reach past it)
            if scratch != NULL:
                dst = scratch
                dx_left = in_size
            else:
                dst = dxp + pl * in_size
                dx_left = (planes - pl) * in_size
            if square2:
                _avg_backward_plane_k2s2(gp + pl * out_size, dst, geo_p,
                                         (planes - pl) * out_size, dx_left)
            elif square3:
                if ring != NULL:
                    # every row in the header (the same sums as
                    # _avg_backward_plane, see fc_avg_grad_plane_k3s2)
                    if floating is float:
                        fc_avg_grad_plane_k3s2_f32(gp + pl * out_size, dst,
                                                   ring + ring_rows * geo_p.ring_w,
                                                   geo_p.in_h, geo_p.in_w, geo_p.out_h,
                                                   geo_p.out_w, PREFETCH_OUT_ROWS,
                                                   (planes - pl) * out_size, dx_left)
                    else:
                        fc_avg_grad_plane_k3s2_f64(gp + pl * out_size, dst,
                                                   ring + ring_rows * geo_p.ring_w,
                                                   geo_p.in_h, geo_p.in_w, geo_p.out_h,
                                                   geo_p.out_w, PREFETCH_OUT_ROWS,
                                                   (planes - pl) * out_size, dx_left)
            elif ring != NULL:
                _avg_backward_plane(gp + pl * out_size, dst, ring, ring_rows,
                                    ring + ring_rows * geo_p.ring_w, geo_p, cdiv)
            if scratch != NULL:
                fc_stream_copy(dxp + pl * in_size, scratch, in_size * sizeof(floating))
        if scratch != NULL:
            fc_stream_fence()
        free(scratch_mem)
        free(ring)
    _raise_for_status(status)


# --- channels-last (NHWC) kernels --------------------------------------------

include "_winograd.pxi"
include "_kernels_nhwc.pxi"
include "_phases.pxi"
