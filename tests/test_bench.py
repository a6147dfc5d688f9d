"""The benchmark harness and the command line, on tiny sizes (a few seconds; with or
without PyTorch installed)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import bench
from fastopt.__main__ import main as cli_main
from fastopt.rules import BY_NAME

TINY = ["--sizes", "1000", "--algos", "adam,sgd", "--repeat", "2", "--threads", "1"]


def _has_torch():
    return bench.load_torch() is not None


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out.json"
    code = bench.main(TINY + ["--json", str(path)])
    assert code == 0
    return json.loads(path.read_text())


def _positive(x):
    return isinstance(x, (int, float)) and x > 0 and x == x and x != float("inf")


def test_table_has_every_algorithm_dtype_and_field(results):
    rows = results["table"]
    assert {(r["algo"], r["dtype"]) for r in rows} == {(a, d) for a in ("adam", "sgd")
                                                       for d in ("float32", "float64")}
    for r in rows:
        assert r["n"] == 1000 and r["threads"] == 1
        assert r["accesses_per_element"] == {"adam": 7, "sgd": 3}[r["algo"]]
        for key in ("time_s", "gbps", "stream_time_s", "stream_gbps", "pct_stream", "numpy_time_s",
                    "speedup_numpy"):
            assert _positive(r[key]), (key, r[key])
        assert r["time_s"] < 0.01                       # a 1,000-element step is microseconds
        assert r["thread_speedup"] == 1.0 and r["stream_thread_speedup"] == 1.0
        assert isinstance(r["pct_stream_reliable"], bool)
        assert abs(r["gbps"] - r["accesses_per_element"] * {"float32": 4, "float64": 8}[r["dtype"]]
                   * r["n"] / r["time_s"] / 1e9) < 1e-6 * r["gbps"]
        if _has_torch():
            assert r["torch_mode"] in ("fused", "foreach") and _positive(r["speedup_torch"])
        else:
            assert r["torch_time_s"] is None and r["speedup_torch"] is None


def test_summary_cases_and_meta(results):
    assert results["meta"]["algos"] == ["sgd", "adam"] and results["meta"]["sizes"] == [1000]
    assert results["meta"]["openmp"] == fastopt.openmp_enabled()
    assert all(_positive(c["gbps"]) for c in results["copy"])
    (many,) = results["many_arrays"]
    assert many["arrays"] == 160 and many["size"] == 10_000
    assert _positive(many["many_time_s"]) and _positive(many["one_time_s"])
    small = results["small"]
    assert small["n"] == 1000 and _positive(small["fastopt_us"])
    assert (small["torch_us"] is not None) == _has_torch()


def test_no_torch_no_reference_and_text_output(capsys):
    code = cli_main(["bench"] + TINY + ["--dtypes", "float32", "--no-torch", "--no-reference", "--small"])
    assert code == 0
    out = capsys.readouterr().out
    assert "small step (Adam float32, n=1,000" in out and "fused" not in out
    assert "== float32" not in out and "many arrays" not in out
    code = cli_main(["bench"] + TINY + ["--dtypes", "float32", "--no-torch", "--no-reference", "--table",
                                        "--many-arrays"])
    out = capsys.readouterr().out
    assert code == 0
    assert "== float32, n = 1,000" in out and "%stream" in out and "many arrays" in out
    assert "small step" not in out


def test_thread_scaling_line_sets_the_step_beside_the_bus():
    rows = [{"algo": a, "dtype": "float32", "n": 10**7, "threads": t, "thread_speedup_base": 1,
             "thread_speedup": {1: 1.0, 2: s}[t], "stream_thread_speedup": {1: 1.0, 2: b}[t]}
            for a, s, b in (("adam", 1.2, 1.25), ("sgd", 1.3, 1.2)) for t in (1, 2)]
    rows.append(dict(rows[1], n=1000, thread_speedup=9.0))           # only the largest size counts
    (line,) = bench.scaling_lines(rows)
    assert line.startswith("thread scaling, float32 n=10,000,000: 2 vs 1 threads = 1.25×")
    assert "range 1.20–1.30×" in line and "same arrays: 1.22× (range 1.20–1.25×)" in line
    assert bench.scaling_lines([r for r in rows if r["threads"] == 1]) == []


@pytest.mark.parametrize("argv", [["--algos", "nope"], ["--sizes", "0"], ["--threads", "0"],
                                  ["--dtypes", "float16"], ["--repeat", "0"]])
def test_bad_options_exit_2(argv, capsys):
    assert bench.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_option_parsing():
    assert bench.parse_sizes("1e3,100_000,1e3") == [1000, 100_000]
    assert bench.parse_threads("max,1", maximum=4) == [1, 4]
    assert [a.key for a in bench.parse_algos("lion,ADAM")] == ["adam", "lion"]
    assert [a.cls for a in bench.parse_algos("all")] == [c.__name__ for c in fastopt.optim.ALL]   # one row per class


def test_plot_without_matplotlib(monkeypatch, results):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # makes the import fail
    assert "matplotlib is not installed" in bench.write_plot("x.png", results)


def test_rules_match_the_optimizers():
    """The harness's rule names (used for accesses per element) are the kernels the
    classes really run."""
    for algo in bench.ALGOS:
        opt = getattr(fastopt, algo.cls)([np.zeros(4, np.float32)], **algo.kwargs)
        state = {k for k in opt.state[0] if isinstance(opt.state[0][k], np.ndarray)}
        assert state == set(BY_NAME[algo.rule].state), algo.key


def test_info_mentions_openmp(tmp_path):
    # run the very package under test (installed or in place), not whatever the cwd holds
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "fastopt", "info"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OpenMP" in out.stdout and fastopt.__version__ in out.stdout
    assert "serial threshold" in out.stdout and "SIMD" in out.stdout


def test_cli_without_command_prints_help(capsys):
    assert cli_main([]) == 2
    assert "bench" in capsys.readouterr().err
