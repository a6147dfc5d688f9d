"""Shared fixtures of the pytest-benchmark suites (run: ``pytest benchmarks --benchmark-only``).

Options: ``--bench-sizes 1e3,1e5,1e7`` (elements per array) and ``--bench-threads 1,max``.
Arrays of one (size, dtype) are made once and reused by every benchmark of that size.
The whole suite takes about 10 minutes on 2 cores; select with ``-k``, e.g. ``-k "adam and float32"``.
"""
import pytest

from fastopt import bench


def pytest_addoption(parser):
    group = parser.getgroup("fastopt benchmarks")
    group.addoption("--bench-sizes", default="1e3,1e5,1e7", help="elements per array (default 1e3,1e5,1e7)")
    group.addoption("--bench-threads", default="1,max", help="thread counts (default 1,max)")
    group.addoption("--sparse-rows", default="1e6", help="rows of the sparse table (default 1e6)")


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "size" in metafunc.fixturenames:
        sizes = bench.parse_sizes(config.getoption("--bench-sizes"))
        metafunc.parametrize("size", sizes, ids=[f"n{n:.0e}".replace("+0", "") for n in sizes])
    if "threads" in metafunc.fixturenames:
        threads = bench.parse_threads(config.getoption("--bench-threads"))
        metafunc.parametrize("threads", threads, ids=[f"t{t}" for t in threads])


class _Pools:
    """:class:`fastopt.bench.Pool` objects of the size in use (both dtypes); a new size
    frees the previous one, which bounds memory."""

    def __init__(self):
        self.pools = {}

    def get(self, n, dtype):
        if (n, dtype) not in self.pools:
            self.pools = {k: v for k, v in self.pools.items() if k[0] == n}
            self.pools[(n, dtype)] = bench.Pool(n, dtype, nstream=4)
        return self.pools[(n, dtype)]


@pytest.fixture(scope="session")
def pools():
    return _Pools()


@pytest.fixture(autouse=True)
def _restore_threads():
    """Every benchmark sets its thread count; put fastopt back to following OpenMP."""
    yield
    bench.fastopt.set_num_threads(0)


@pytest.fixture(scope="session")
def torch_module():
    """``torch``, or skip the benchmark when it is not installed."""
    return pytest.importorskip("torch")
