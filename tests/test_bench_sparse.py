"""The --sparse part of the bench: opt-in, its own part, every way of stepping timed."""
import argparse

import pytest

from fastopt.bench import cli, sparse


def _cfg(argv):
    return cli.config_from_args(cli.add_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_sparse_is_opt_in_and_its_own_part():
    assert not _cfg([]).sparse
    cfg = _cfg(["--sparse", "--sparse-rows", "2e6"])
    assert cfg.sparse and cfg.sparse_rows == 2_000_000
    assert not (cfg.table or cfg.many_arrays or cfg.small or cfg.contention or cfg.torch_training)
    with pytest.raises(ValueError, match="--sparse-rows"):
        _cfg(["--sparse", "--sparse-rows", "1000"])


@pytest.mark.parametrize("with_torch", [False, True])
def test_measure_times_sparse_dense_and_torch_steps(with_torch):
    torch = pytest.importorskip("torch") if with_torch else None
    res = sparse.measure(torch, rows=20_000, repeat=1, small_rows=1_000_000, fixed_touched=100)
    assert res["config"]["rows"] == 20_000 and 0 < res["config"]["touched"] <= 200
    # the power-law batch repeats its hot rows: fewer distinct rows than draws
    assert res["config"]["touched_power_law"] < 200 and res["config"]["hottest_power_law"] > 1
    assert set(res["steps"]) == {"Adam", "Adagrad", "RowwiseAdagrad"}
    for rule, times in res["steps"].items():
        want = {"sparse", "sparse power-law", "dense"}
        want |= {"coalesce", "coalesce power-law"} if rule == "Adam" else set()
        want |= {"torch", "torch power-law"} if with_torch and rule != "RowwiseAdagrad" else set()
        assert set(times) == want and all(t > 0 for t in times.values())
    assert list(res["scaling"]) == ["2,000 rows", "20,000 rows"] and res["scaling_ratio"] > 0
    text = sparse.lines(res)
    assert "20,000 x 64" in text[0] and text[2].split()[:2] == ["Adam", "uniform"]
    assert text[3].split()[:2] == ["Adam", "power-law"]
    verdicts = [line for line in text if line.startswith("targets:")]
    assert len(verdicts) == (3 if with_torch else 2) and all(line.endswith(("met", "memory)")) for line in verdicts)
    assert "ratio" in verdicts[-1]


def test_power_law_batch_is_a_permuted_zipf_sample():
    import numpy as np
    idx, vals = sparse._batch(np.random.default_rng(0), 1_000_003, 50_000, "power-law")
    assert idx.dtype == np.int64 and vals.shape == (50_000, 64) and 0 <= idx.min() and idx.max() < 1_000_003
    _, counts = np.unique(idx, return_counts=True)
    assert counts.max() > 1000 and counts.size > 5000      # hot rows and a long tail


def test_the_table_size_verdict_pairs_its_ratio_by_round():
    # one mode's samples caught by a slow minute move the ratio of the medians, not the
    # median of each round's own ratio: the verdict follows the paired figure
    res = {"config": {"rows": 10**7, "dim": 64, "draws": 10**5, "touched": 99_000, "threads": 2,
                      "fixed_touched": 10_000},
           "steps": {}, "scaling": {"1,000,000 rows": 1e-3, "10,000,000 rows": 1.8e-3}, "scaling_ratio": 1.2}
    text = sparse.lines(res)
    assert "ratio 1.20" in text[-2] and text[-1].split("->")[1].startswith(" met")
    res["scaling_ratio"] = 1.6
    assert sparse.lines(res)[-1].split("->")[1].startswith(" NOT met")
    assert sparse._round_times({"a": lambda: None, "b": lambda: None}, 3).keys() == {"a", "b"}
