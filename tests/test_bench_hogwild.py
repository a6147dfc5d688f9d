"""The --hogwild part of the bench: its own part, opt-in, with real (small) runs."""
import argparse
import importlib.util

import pytest
from subproc import assert_ok, run_snippet

from fastopt.bench import cli
from fastopt.bench import hogwild as hb


def test_hogwild_is_its_own_opt_in_part():
    parse = cli.add_arguments(argparse.ArgumentParser()).parse_args
    cfg = cli.config_from_args(parse(["--hogwild"]))
    assert cfg.hogwild and not (cfg.table or cfg.many_arrays or cfg.small or cfg.contention or cfg.torch_training)
    assert not cli.config_from_args(parse([])).hogwild


SMALL = dict(n_samples=600, n_features=5000, density=0.01, repeat=1, n_users=400, n_items=100, mf_density=0.1,
             mf_epochs=3)


def test_measure_small_sets():
    lines = []
    # scikit-learn stays out of this process (its wheel maps a libgomp of its own)
    res = hb.measure(threads=[1, 2], sklearn=False, emit=lines.append, **SMALL)
    runs = [(r["who"], r["dtype"], r["threads"]) for r in res["linear"]]
    assert runs == [("fastopt", "float64", 1), ("fastopt", "float32", 1), ("fastopt", "float64", 2)]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["examples_per_second"] > 0 for r in res["linear"])
    assert [m["threads"] for m in res["mf"]] == [1, 2]
    assert all(len(m["rmse"]) == 3 for m in res["mf"])
    text = "\n".join(lines)
    assert "Hogwild logistic regression" in text and "Hogwild matrix factorisation" in text


def test_measure_beside_sklearn():
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed")
    result = run_snippet(f"""
        from fastopt.bench import hogwild as hb
        res = hb.measure(threads=[1], emit=lambda line: None, **{SMALL!r})
        print(sorted((r["who"], r["dtype"]) for r in res["linear"]))
        print("OK")
    """, timeout=300)
    assert_ok(result)
    assert "('sklearn', 'float64')" in result.stdout and "('sklearn', 'float32')" in result.stdout
