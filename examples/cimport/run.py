"""Run the cimport example against fastconv's Python API; exits non-zero on
any mismatch.  Build first: ``python setup.py build_ext --inplace``."""

import sys

import numpy as np

import fastconv
import conv_user


def main():
    rng = np.random.default_rng(0)
    failures = 0
    for dtype in (np.float32, np.float64):
        for stride, padding, groups in ((1, 1, 1), (2, 0, 2), (1, 2, 4)):
            x = rng.standard_normal((2, 4, 11, 9)).astype(dtype)
            w = rng.standard_normal((8, 4 // groups, 3, 3)).astype(dtype)
            b = rng.standard_normal(8).astype(dtype)
            got = conv_user.conv2d(x, w, b, stride, padding)
            want = fastconv.conv2d(x, w, b, stride, padding, groups=groups)
            same = got.shape == want.shape and np.array_equal(got, want)
            failures += not same
            print(f"{np.dtype(dtype).name} stride={stride} padding={padding} groups={groups}: "
                  f"{'identical' if same else 'MISMATCH'}")
    print("cimport example:", "ok" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
