"""Runtime SIMD dispatch (fastconv._simd): the baseline and AVX2 builds of the
kernels must return bitwise identical results, and FASTCONV_SIMD must choose."""

import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _simd, functional
from helpers import every_kernel_output

needs_avx2 = pytest.mark.skipif("avx2" not in _simd.available(),
                                reason="no AVX2 build or no AVX2/FMA on this CPU")


@needs_avx2
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_baseline_and_avx2_builds_agree_bitwise(monkeypatch, dtype):
    from fastconv import _kernels, _kernels_avx2

    results = []
    for module in (_kernels, _kernels_avx2):
        monkeypatch.setattr(functional, "_kernels", module)
        results.append(every_kernel_output(np.random.default_rng(3), dtype))
    for base, avx2 in zip(*results):
        np.testing.assert_array_equal(base, avx2)


def _level_in_subprocess(value):
    code = "from fastconv import _simd; print(_simd.level)"
    env = dict(__import__("os").environ, FASTCONV_SIMD=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_environment_forces_the_baseline():
    proc = _level_in_subprocess("baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "baseline"


def test_auto_picks_the_best_available():
    proc = _level_in_subprocess("auto")
    assert proc.stdout.strip() == _simd.available()[-1]


def test_bad_value_is_refused():
    proc = _level_in_subprocess("avx9000")
    assert proc.returncode != 0
    assert "FASTCONV_SIMD must be auto, baseline or avx2" in proc.stderr


def test_show_config_reports_the_level(capsys):
    fastconv.show_config()
    assert f"simd: {_simd.level}" in capsys.readouterr().out
