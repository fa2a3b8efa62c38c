"""Shared fixtures: thread counts and a seeded RNG."""

import numpy as np
import pytest

import fastconv


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    """Run the test with fastconv pinned to 1, then 2 threads."""
    fastconv.set_num_threads(request.param)
    yield request.param
    fastconv.set_num_threads(None)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
