"""pytest-benchmark suite (not collected by the default ``pytest`` run).

Run:  pip install ".[bench,torch]" && python -m pytest bench --benchmark-group-by=param:case
"""


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the timings ran on in the saved JSON: fastconv's BLAS
    (``FASTCONV_BLAS=mkl`` switches it to oneMKL), SIMD level, OpenMP
    runtime and thread count, as ``python -m fastconv config`` prints them."""
    from fastconv._config import config as fastconv_config

    machine_info["fastconv"] = {key: str(value) for key, value in fastconv_config().items()}
