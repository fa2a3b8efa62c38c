"""pytest-benchmark suite (not collected by the default ``pytest`` run).

Run:  pip install ".[bench,torch]" && python -m pytest bench --benchmark-group-by=param:case
"""

import pytest


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the timings ran on in the saved JSON: fastconv's BLAS
    (``FASTCONV_BLAS=mkl`` switches it to oneMKL), SIMD level, OpenMP
    runtime and thread count, as ``python -m fastconv config`` prints them."""
    from fastconv._config import config as fastconv_config

    machine_info["fastconv"] = {key: str(value) for key, value in fastconv_config().items()}


@pytest.fixture
def record_rate(benchmark):
    """``record_rate(key, amount)``: ``amount / best time / 1e9`` into the
    benchmark's ``extra_info[key]`` (GFLOP/s, GB/s).  Under
    ``--benchmark-disable`` (each function called once, as a smoke test)
    there is no time, and nothing is recorded."""
    def record(key, amount):
        if benchmark.stats is not None:
            benchmark.extra_info[key] = amount / benchmark.stats.stats.min / 1e9
    return record
