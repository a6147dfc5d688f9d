"""fastopt.distributed under real MPI: each test starts ``mpiexec -n P`` (MPICH from the
``mpi`` extra; oversubscribed on small machines) with a scripts of ``tests/mpi`` and a
timeout, so a hang fails the test instead of the run."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("mpi4py")
from fastopt.distributed import ShardLayout, mean_gradient, mean_into  # noqa: E402
from fastopt.distributed.launch import mpiexec_path, run_mpi  # noqa: E402

if mpiexec_path() is None:
    pytest.skip("no mpiexec (pip install 'fastopt[mpi]')", allow_module_level=True)

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi")
import fastopt  # noqa: E402
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
TIMEOUT = 120


def mpi(nranks, script, *args, timeout=TIMEOUT, ok=True):
    """Run a script of tests/mpi on ``nranks`` ranks; its JSON lines, one per rank."""
    r = run_mpi(nranks, [os.path.join(HERE, script)] + list(args), timeout=timeout)
    if ok:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return (_records(r.stdout), r) if not ok else _records(r.stdout)


def _records(text):
    """The ``{"rank": ...}`` JSON objects in ``text`` (mpiexec may join two ranks' lines)."""
    dec, out, at = json.JSONDecoder(), [], text.find('{"rank"')
    while at >= 0:
        obj, end = dec.raw_decode(text, at)
        out.append(obj)
        at = text.find('{"rank"', end)
    return out


# --- single process: the definition of the mean and the layout ----------------------------
def test_mean_gradient_is_float64_rank_order_sum_over_p():
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(100_003).astype(np.float32) * 10 ** r for r in range(3)]
    want = ((gs[0].astype(np.float64) + gs[1]) + gs[2]) / 3
    got = mean_gradient(gs)
    assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32))
    # the order matters in float64 and is the rank order
    g64 = [np.array([1e16, 1.0, -1e16])[i:i + 1] for i in range(3)]
    assert mean_gradient(g64)[0] == ((1e16 + 1.0) - 1e16) / 3
    # one rank: the gradient itself
    assert np.array_equal(mean_gradient([gs[1]]), gs[1])
    out = gs[0].copy()
    mean_into(out, [out, gs[1]])                 # out may be a source
    assert np.array_equal(out, ((gs[0].astype(np.float64) + gs[1]) / 2).astype(np.float32))
    with pytest.raises(ValueError, match="rank 1"):
        mean_gradient([gs[0], gs[1][:5]])


@given(sizes=st.lists(st.integers(1, 60_000), min_size=1, max_size=6), nranks=st.integers(1, 9),
       wide=st.lists(st.booleans(), min_size=6, max_size=6))
@settings(max_examples=60, deadline=None)
def test_layout_whole_blocks_and_balanced(sizes, nranks, wide):
    items = [8 if w else 4 for w in wide[:len(sizes)]]
    L = ShardLayout(sizes, items, nranks)
    seen = [[] for _ in sizes]
    for r in range(nranks):
        for k, a, b in L.pieces[r]:
            assert a % L.block == 0 and (b % L.block == 0 or b == sizes[k])
            seen[k].append((a, b))
    for k, n in enumerate(sizes):                 # every element exactly once, in order
        spans = sorted(seen[k])
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
    share = L.total_bytes / nranks
    for r in range(nranks):                        # 1/P of the bytes, within one block
        assert abs(L.owner_bytes(r) - share) <= L.block * max(items)


# --- sharded optimizer under mpiexec -------------------------------------------------------
CASES = [
    (1, "Adam", 1, {"lr": 0.01, "weight_decay": 0.1, "clip_norm": 5.0}),
    (2, "Adam", 2, {"lr": 0.01, "weight_decay": 0.1, "clip_norm": 5.0, "nonfinite": "skip"}),
    (3, "AdamW", 1, {"lr": 0.01, "clip_norm": 5.0, "nonfinite": "raise", "amsgrad": True}),
    (4, "SGD", 2, {"lr": 0.01, "momentum": 0.9, "nesterov": True, "clip_norm": 50.0, "steps": 4}),
    (3, "Lion", 2, {"lr": 0.001, "weight_decay": 0.1, "chunk_bytes": 192}),
    (2, "Adagrad", 1, {"lr": 0.1, "nonfinite": "skip", "chunk_bytes": 1 << 22}),
    (3, "RMSprop", 2, {"lr": 0.01, "clip_norm": 1.0, "nonfinite": "skip", "small": True}),
]


@pytest.mark.parametrize("nranks,name,stage,opts", CASES)
def test_sharded_equals_single_process_bitwise(nranks, name, stage, opts):
    lines = mpi(nranks, "zero_bitwise.py", name, stage, json.dumps(opts))
    assert sorted(x["rank"] for x in lines) == list(range(nranks))
    mem = [x["memory"] for x in lines]
    full = mem[0]["unsharded_state"]
    if opts.get("small"):
        assert [m["state"] for m in mem].count(0) == nranks - 2      # two blocks: two owners
        return
    for m in mem:     # each rank holds 1/P of the state, within one 8192-element float64 block per buffer
        assert abs(m["state"] - full / nranks) <= 3 * 8192 * 8, (m, full)
        if stage == 2 and nranks > 1:
            assert m["grad_buffer"] < m["params"]
    assert sum(m["state"] for m in mem) == full


@pytest.mark.parametrize("saved,loaded", [(3, 2), (1, 4), (4, 1)])
def test_checkpoint_p_to_q(tmp_path, saved, loaded):
    assert [x["saved"] for x in mpi(saved, "checkpoint.py", "save", tmp_path)] == [True] * saved
    assert len(os.listdir(tmp_path / "shards")) == saved
    assert [x["loaded"] for x in mpi(loaded, "checkpoint.py", "load", tmp_path)] == [True] * loaded


# --- bad input: the same clear error on every rank, no hang, nothing written ---------------
@pytest.mark.parametrize("mode,kind,needle", [
    ("shape", "DistributedError", "rank 1's params"),
    ("dtype", "DistributedError", "rank 2's params"),
    ("hyper", "DistributedError", "rank 1's options"),
    ("easgd_shape", "DistributedError", "EASGD needs the same parameters"),
    ("downpour_shape", "DistributedError", "Downpour needs the same parameters"),
    ("comm", "TypeError", "intra-communicator"),
    ("grad", "DistributedError", "rank 1: grads[1] must be a float64 array of shape (3, 4)"),
    ("checkpoint", "DistributedError", "another layout"),
    ("mixed_saves", "DistributedError", "come from different saves"),
    ("save", "DistributedError", "is not a directory"),
])
def test_bad_input_same_error_on_every_rank(tmp_path, mode, kind, needle):
    lines = mpi(3, "bad_input.py", mode, tmp_path)
    assert sorted(x["rank"] for x in lines) == [0, 1, 2]
    for x in lines:
        assert x["caught"] == kind and needle in x["message"], x
    if mode == "save":
        assert os.listdir(tmp_path) == []


def test_wrong_comm_on_one_rank_times_out_on_the_others(tmp_path):
    lines = mpi(3, "bad_input.py", "comm_one", tmp_path)
    by_rank = {x["rank"]: x for x in lines}
    assert by_rank[1]["caught"] == "TypeError"
    for r in (0, 2):
        assert by_rank[r]["caught"] == "DistributedError" and "within 3 s" in by_rank[r]["message"]


def test_abort_hook_waits_until_the_pipe_is_read_and_no_longer():
    """The abort hook keeps its message from being lost with the killed rank: it returns
    once the reader (mpiexec's proxy) has taken every byte, and gives up at its deadline."""
    import threading
    from fastopt.distributed.comm import _wait_until_read
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb", buffering=0, closefd=False) as stream:
            stream.write(b"x" * 1000)
            threading.Timer(0.3, os.read, (r, 4096)).start()
            t0 = time.monotonic()
            _wait_until_read(stream, 5.0)
            waited = time.monotonic() - t0
            assert 0.25 < waited < 3.0, waited
            stream.write(b"y" * 10)       # nobody reads now: the deadline ends the wait
            t0 = time.monotonic()
            _wait_until_read(stream, 0.2)
            assert 0.15 < time.monotonic() - t0 < 2.0
    finally:
        os.close(r)
        os.close(w)
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:  # not a pipe: nothing to wait for
        _wait_until_read(devnull, 5.0)
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("mode,needle,bound", [
    ("raise", "rank 1 of 3 failed; aborting all ranks", 30),
    ("die", "BAD TERMINATION", 30),
    ("hang", "did not complete within 5 s", 40),
    ("easgd_raise", "rank 2 of 3 failed; aborting all ranks", 30),
    ("downpour_raise", "rank 2 of 3 failed; aborting all ranks", 30),
])
def test_failing_rank_ends_the_job(tmp_path, mode, needle, bound):
    t0 = time.monotonic()
    lines, r = mpi(3, "bad_input.py", mode, tmp_path, ok=False, timeout=bound + 30)
    assert r.returncode != 0
    assert time.monotonic() - t0 < bound
    if mode == "die":      # Hydra ends the job with the dead rank's exit code, or kills it and says so
        assert r.returncode == 7 or needle in r.stdout, (r.returncode, r.stdout + r.stderr)
    else:
        assert needle in r.stdout + r.stderr, r.stdout + r.stderr
    assert not any(x.get("caught", 1) is None for x in lines)


# --- EASGD and Downpour on logistic regression ---------------------------------------------
@pytest.mark.parametrize("mode,nranks,problem", [
    ("easgd-sync", 3, "logreg"), ("easgd-async", 3, "logreg"), ("downpour", 3, "logreg"),
    ("downpour-quad", 4, "quad"), ("easgd-sync", 3, "mlp"), ("easgd-async", 3, "mlp"), ("downpour", 3, "mlp")])
def test_converges_like_the_serial_run(mode, nranks, problem):
    """400 noisy-gradient steps per worker (σ = 0.1 per element) of fastopt.problems'
    logistic regression, of a 193-parameter tanh MLP fitting a teacher MLP (``mlp``), or
    of a 20,000-parameter separable quadratic over two servers (``downpour-quad``): the
    final objective is within 0.01 of the serial run's (same optimizer, same number of
    steps, one worker), and every rank ends with the same parameters (the centre, for
    EASGD)."""
    lines = mpi(nranks, "converge.py", mode, 400, problem)
    assert len(lines) == nranks
    gaps = {x["gap"] for x in lines}
    assert len(gaps) == 1
    gap, serial = gaps.pop(), lines[0]["serial_gap"]
    assert 0 <= gap <= serial + 0.01, (gap, serial)
    assert serial < 0.15 * lines[0]["start_gap"]      # the serial run itself got somewhere
    by_rank = {x["rank"]: x for x in lines}
    if mode.startswith("easgd"):
        assert by_rank[0]["centers_equal"] is True and by_rank[0]["rounds"] == 100
    else:                 # every push applied once by every server that owns a shard
        servers = by_rank[0]["servers"]
        assert by_rank[0]["shards"] == [1] * servers
        assert all(by_rank[s]["updates"] == (nranks - servers) * 400 // 2 for s in range(servers))


# --- the fused mean kernel against its NumPy definition -----------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_mean_kernel_equals_numpy_definition_for_any_thread_count(dtype, threads):
    import fastopt
    from fastopt.distributed.reduce import mean_reference
    rng = np.random.default_rng(threads)
    old = fastopt.get_num_threads()
    fastopt.set_num_threads(threads)
    try:
        for nsrc in (1, 2, 3, 4, 7):
            for n in (0, 1, 7, 2047, 2049, 300_001):
                srcs = [(rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20)).astype(dtype) for _ in range(nsrc)]
                got, want = np.empty(n, dtype), np.empty(n, dtype)
                mean_into(got, srcs)
                mean_reference(want, srcs)
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (nsrc, n)
    finally:
        fastopt.set_num_threads(old)


def test_bench_mpi_is_opt_in_and_reports_comm_update_memory(capsys):
    import argparse
    from fastopt.bench import cli
    parser = cli.add_arguments(argparse.ArgumentParser())
    assert parser.parse_args([]).mpi is False                 # not part of the default run
    assert cli.handle(parser.parse_args(["--mpi", "--ranks", "2", "--mpi-size", "65536", "--repeat", "1"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert "comm" in out[1] and "update" in out[1] and "state MB" in out[1]
    rows = {line.split()[1]: line.split() for line in out[2:]}
    assert set(rows) == {"zero1", "zero2", "bound", "allreduce"}
    # Adam's state for 65,536 float32 (8 blocks): 0.52 MB unsharded, half of it per rank with 2 ranks
    assert float(rows["allreduce"][-1]) == 0.5 and float(rows["zero1"][-1]) == float(rows["zero2"][-1]) == 0.3


def test_missing_mpi4py_is_a_clear_import_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import fastopt.distributed as d\n"
            "assert d.mean_gradient is not None        # the NumPy parts need no MPI\n"
            "try:\n    d.ShardedOptimizer\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=_HOME))
    assert r.returncode == 0, r.stderr
    assert "pip install 'fastopt[mpi]'" in r.stdout
