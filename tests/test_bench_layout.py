"""The bench package's shape: the stream kernel's arrays are laid out like a step's,
the timing module is generic, and the library does not import the bench."""
import ast
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import bench
from fastopt._kernels import stream
from fastopt._kernels.driver import data_span

BENCH_DIR = os.path.dirname(bench.__file__)


def _page_offset(a):
    return data_span(a)[0] % 4096


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [5_000, 100_000])        # both above 4 KiB per array
def test_stream_arrays_sit_at_the_steps_page_offsets(dtype, n):
    pool = bench.Pool(n, dtype, nstream=4)
    for algo in (bench.ALGO_BY_KEY["sgd"], bench.ALGO_BY_KEY["adam"], bench.ALGO_BY_KEY["amsgrad"]):
        nw = 1 + algo.nstate
        opt = getattr(fastopt, algo.cls)([pool.params["fastopt"]], **algo.kwargs)
        state = [v for v in opt.state[0].values() if isinstance(v, np.ndarray)]
        step = [pool.grad, pool.params["fastopt"]] + state
        g, rw = pool.stream_arrays(nw)
        assert len(rw) == nw == len(step) - 1
        assert [_page_offset(a) for a in [g] + rw] == [_page_offset(a) for a in step], algo.key


@pytest.mark.parametrize("offset", [16, 8, 48, 0, 64])
def test_huge_stream_arrays_sit_at_the_steps_page_offsets_too(monkeypatch, offset):
    # from ALIGNED_STATE_BYTES on (lowered here) the state of a parameter off a 64-byte
    # boundary sits on one: the stream's state stand-ins follow it, its parameter
    # stand-in stays at the parameter's offset (the parameter is placed by hand: the
    # allocator, sanitizers' included, decides where NumPy puts it)
    from fastopt.optim import base
    monkeypatch.setattr(base, "ALIGNED_STATE_BYTES", 1 << 16)
    pool = bench.Pool(100_000, "float32", nstream=3)
    raw = np.empty(pool.init.nbytes + 8192, np.uint8)
    start = (offset - raw.ctypes.data) % 4096
    pool.params["fastopt"] = raw[start:start + pool.init.nbytes].view(np.float32)
    pool.params["fastopt"][:] = pool.init
    pool.stream_rw = pool._stream_copies(3)
    opt = fastopt.Adam([pool.params["fastopt"]])
    step = [pool.grad, pool.params["fastopt"]] + list(opt._states[0])
    g, rw = pool.stream_arrays(3)
    assert [_page_offset(a) for a in [g] + rw] == [_page_offset(a) for a in step]
    assert _page_offset(rw[0]) == offset
    assert {_page_offset(a) for a in rw[1:]} == ({offset} if offset % 64 == 0 else {(offset + 63) // 64 * 64 + 2048})


def test_stream_arrays_follow_the_parameter_wherever_numpy_put_it():
    """Pools made after other allocations get other parameter offsets; the stream
    arrays move with them."""
    keep = [np.empty(k * 1000 + 24, np.uint8) for k in range(1, 40)]
    offsets = set()
    for k in range(6):
        keep.append(np.empty(4096 * k + 48 * k + 8, np.uint8))
        pool = bench.Pool(20_000, "float32", nstream=3)
        p = _page_offset(pool.params["fastopt"])
        offsets.add(p)
        assert {_page_offset(a) for a in pool.stream_rw} == {p}
        assert not any(np.shares_memory(a, b) for i, a in enumerate(pool.stream_rw) for b in pool.stream_rw[i + 1:])
        assert all(np.array_equal(a, pool.init) for a in pool.stream_rw)


@pytest.mark.parametrize("nw", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_kernel_adds_the_gradient_to_every_array(nw, dtype):
    rng = np.random.default_rng(nw)
    g = rng.standard_normal(1037).astype(dtype)
    rw = [rng.standard_normal(1037).astype(dtype) for _ in range(nw)]
    want = [w + g for w in rw]
    stream.stream(g, rw, 2)
    for w, x in zip(rw, want):
        np.testing.assert_array_equal(w, x)


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def test_timing_module_knows_nothing_of_fastopt(monkeypatch):
    path = os.path.join(BENCH_DIR, "timing.py")
    assert not [m for m in _imports(path) if m.startswith(("fastopt", "."))]
    # and it works on its own, outside the package
    spec = importlib.util.spec_from_file_location("standalone_timing", path)
    timing = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, timing)       # dataclasses look their module up
    spec.loader.exec_module(timing)
    calls = []
    t = timing.measure({"a": timing.Job(lambda: calls.append(1), 3), "b": timing.Job(lambda: None, 2)},
                       target=1e-4)
    assert len(t.samples["a"]) == 3 and len(t.samples["b"]) == 2 and t.ratio("a", "b") > 0


def test_no_library_module_imports_the_bench():
    root = os.path.dirname(fastopt.__file__)
    offenders = []
    for dirpath, _, files in os.walk(root):
        if os.path.commonpath([dirpath, BENCH_DIR]) == BENCH_DIR:
            continue
        for name in files:
            if name.endswith(".py") and name != "__main__.py":
                path = os.path.join(dirpath, name)
                if any(m == "fastopt.bench" or m.startswith("fastopt.bench.") for m in _imports(path)):
                    offenders.append(path)
    assert offenders == []
    code = "import sys, fastopt; print(sorted(m for m in sys.modules if m.startswith('fastopt.bench')))"
    home = os.path.dirname(root)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_add_cli_registers_the_bench_subcommand():
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    assert bench.add_cli(sub).prog.endswith("bench")
    args = parser.parse_args(["bench", "--sizes", "1e3", "--threads", "1"])
    assert args.func is bench.cli.handle and args.sizes == "1e3"
