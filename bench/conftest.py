"""pytest-benchmark suite (not collected by the default ``pytest`` run).

Run:  pip install ".[bench,torch]" && python -m pytest bench --benchmark-group-by=param:case
"""
