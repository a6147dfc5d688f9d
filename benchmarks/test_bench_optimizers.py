"""One full ``opt.step(grads)`` per algorithm × dtype × size × threads, for fastopt, the
stream kernel with the same access pattern, the NumPy reference and torch.optim (fused
where PyTorch has it on the CPU, else foreach). Each (algorithm, dtype, size, threads)
is one pytest-benchmark group, so the engines are compared side by side."""
import pytest

from fastopt import bench, reference
import fastopt
from fastopt._kernels import stream

ALGOS = [a.key for a in bench.ALGOS]
ENGINES = ["fastopt", "stream", "numpy", "torch"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("algo", ALGOS)
def test_step(benchmark, pools, request, algo, dtype, size, threads, engine):
    algo = bench.ALGO_BY_KEY[algo]
    if engine == "numpy" and threads > 1:
        pytest.skip("the NumPy reference is single-threaded (see the 1-thread row)")
    pool = pools.get(size, dtype)
    pool.reset()
    torch = request.getfixturevalue("torch_module") if engine == "torch" else None
    bench.set_threads(threads, torch)
    step = _step_function(engine, algo, pool, threads, torch)
    step()                                   # warm-up: lazy state, page faults
    benchmark.group = f"{algo.key} {dtype} n={size:,} threads={threads}"
    benchmark.extra_info.update(accesses_per_element=algo.accesses, n=size, itemsize=pool.dtype.itemsize)
    benchmark(step)


def _step_function(engine, algo, pool, threads, torch):
    """A no-argument callable doing one step of ``algo`` with ``engine``."""
    grads = [pool.grad]
    if engine == "fastopt":
        opt = getattr(fastopt, algo.cls)([pool.params["fastopt"]], **algo.kwargs)
        return lambda: opt.step(grads)
    if engine == "numpy":
        opt = getattr(reference, algo.cls)([pool.params["numpy"]], **algo.kwargs)
        return lambda: opt.step(grads)
    if engine == "stream":
        rw = pool.stream_rw[:1 + algo.nstate]
        return lambda: stream.stream(pool.grad, rw, threads)
    made = bench.torch_optimizer(torch, algo, bench.torch_tensors(torch, [pool.params["torch"]], grads))
    if made is None:
        pytest.skip(f"torch.optim has no {algo.cls}")
    return made[0].step
