"""The summary cases of ``fastopt bench`` and the bandwidth baselines as pytest-benchmark
suites: Adam over many small arrays, the latency of a small step, the streaming copy,
and the serial/parallel crossovers that set the driver's serial thresholds (team awake
and team asleep)."""
import time

import numpy as np
import pytest

import fastopt
from fastopt import bench
from fastopt._kernels import driver, stream


def _adam_step(engine, params, grads, request):
    if engine == "fastopt":
        opt = fastopt.Adam(params)
        return lambda: opt.step(grads)
    torch = request.getfixturevalue("torch_module")
    opt, _ = bench.torch_optimizer(torch, bench.ALGO_BY_KEY["adam"], bench.torch_tensors(torch, params, grads))
    return opt.step


@pytest.mark.parametrize("layout", ["160x10k", "1x1.6M"])
@pytest.mark.parametrize("engine", ["fastopt", "torch"])
def test_many_arrays(benchmark, request, engine, layout, threads):
    """Adam over 160 float32 arrays of 10,000 elements, or one array of 1,600,000."""
    count, size = bench.MANY_ARRAYS
    if layout != "160x10k":
        count, size = 1, count * size
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
    grads = [np.full(size, 1e-2, np.float32) for _ in range(count)]
    torch = request.getfixturevalue("torch_module") if engine == "torch" else None
    bench.set_threads(threads, torch)
    step = _adam_step(engine, params, grads, request)
    step()
    benchmark.group = f"many arrays threads={threads}"
    benchmark(step)


@pytest.mark.parametrize("engine", ["fastopt", "torch"])
def test_small_step(benchmark, request, engine):
    """One Adam step on 1,000 float32 elements: the fixed cost of a step."""
    p = np.zeros(bench.SMALL_SIZE, np.float32)
    step = _adam_step(engine, [p], [np.ones_like(p)], request)
    step()
    benchmark.group = "small step"
    benchmark(step)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_copy(benchmark, pools, dtype, size, threads):
    """The streaming copy (2 accesses per element): the machine's bandwidth baseline."""
    pool = pools.get(size, dtype)
    dst = pool.stream_rw[0]
    benchmark.group = f"copy {dtype} n={size:,}"
    benchmark.extra_info.update(accesses_per_element=2, n=size, itemsize=pool.dtype.itemsize)
    benchmark(lambda: stream.copy(dst, pool.init, threads))


@pytest.mark.parametrize("mode", ["serial", "parallel"])
@pytest.mark.parametrize("n", [4_096, 16_384, 32_768, 65_536, 131_072, 262_144])
def test_threshold(benchmark, n, mode):
    """Adam float32 on all threads, forced serial or forced parallel, around the
    crossover that :func:`fastopt._kernels.driver.serial_threshold` encodes."""
    p = np.zeros(n, np.float32)
    g = [np.full(n, 1e-2, np.float32)]
    opt = fastopt.Adam([p])
    saved = driver.serial_thresholds()
    driver.set_serial_threshold(1 << 62 if mode == "serial" else 0)
    try:
        opt.step(g)
        benchmark.group = f"threshold n={n:,}"
        benchmark(lambda: opt.step(g))
    finally:
        driver.set_serial_threshold(*saved)


@pytest.mark.parametrize("mode", ["serial", "parallel", "auto"])
@pytest.mark.parametrize("n", [32_768, 131_072, 262_144, 524_288])
def test_threshold_after_idle(benchmark, n, mode):
    """The same after 2 ms without a step, long enough for idle workers to sleep:
    the crossover behind the asleep threshold (``auto``: the driver's choice)."""
    p = np.zeros(n, np.float32)
    g = [np.full(n, 1e-2, np.float32)]
    opt = fastopt.Adam([p])
    saved = driver.serial_thresholds()
    if mode != "auto":
        driver.set_serial_threshold(1 << 62 if mode == "serial" else 0)
    try:
        opt.step(g)
        benchmark.group = f"threshold after 2 ms idle n={n:,}"
        benchmark.pedantic(lambda: opt.step(g), setup=lambda: time.sleep(0.002), rounds=200, iterations=1)
    finally:
        driver.set_serial_threshold(*saved)
