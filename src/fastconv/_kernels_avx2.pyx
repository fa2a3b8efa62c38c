# The kernels of _kernels.pyx, compiled a second time with -mavx2 -mfma
# (see setup.py).  fastconv._simd imports this module instead of _kernels
# when the CPU and the OS support AVX2 and FMA.
include "_kernels.pyx"
