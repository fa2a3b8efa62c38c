"""Cost of switching the cores between fastconv's OpenMP threads and NumPy's
multithreaded BLAS (issue 3 asks for this measurement).

Run:  python bench/switch_cost.py
      OPENBLAS_NUM_THREADS=1 python bench/switch_cost.py
      OMP_WAIT_POLICY=passive python bench/switch_cost.py

Prints the best time of a conv2d alone, a matmul alone, and the two
alternating; the difference is what the hand-over between the two thread
pools costs (spinning workers of one pool delaying the other).
"""

import numpy as np

import fastconv
from fastconv import _bench


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 28, 28)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    a = rng.standard_normal((512, 512)).astype(np.float32)

    def conv():
        fastconv.conv2d(x, w, padding=1)

    def matmul():
        a @ a

    def both():
        conv()
        matmul()

    t = _bench.best_times(dict(conv=conv, matmul=matmul, both=both), 7)
    t_conv, t_mm, t_both = t["conv"], t["matmul"], t["both"]
    print(f"conv2d {t_conv * 1e3:.3f} ms, matmul {t_mm * 1e3:.3f} ms, alternating "
          f"{t_both * 1e3:.3f} ms -> switching costs {(t_both - t_conv - t_mm) * 1e3:+.3f} ms "
          "per pair")


if __name__ == "__main__":
    main()
