"""The --torch-training part of the bench: its own part, real training steps, every mode."""
import argparse

import pytest

from fastopt.bench import cli, torch_training

torch = pytest.importorskip("torch")


def test_torch_training_is_its_own_part():
    cfg = cli.config_from_args(cli.add_arguments(argparse.ArgumentParser()).parse_args(["--torch-training"]))
    assert cfg.torch_training and not (cfg.table or cfg.many_arrays or cfg.small or cfg.contention)


def test_measure_times_fastopt_foreach_and_fused_on_a_small_model():
    rows = torch_training.measure(torch, steps=2, optimizers=torch_training.OPTIMIZERS[1:6:4],
                                  model_kwargs=dict(vocab=500, dim=8, hidden=16, classes=4), batch=4, bag=3)
    assert [r["cls"] for r in rows] == ["Adam", "Adadelta"]
    assert set(rows[0]["runs"]) == {"fastopt", "foreach", "fused"} and set(rows[1]["runs"]) == {"fastopt", "foreach"}
    for r in rows:
        assert r["params"] == 500 * 8 + 8 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4
        assert all(v > 0 for run in r["runs"].values() for v in run.values())
    text = torch_training.lines(rows, threads=1)
    assert "1 threads" in text[0] and text[2].split()[:2] == ["Adam", "fastopt"] and text[4].split()[0] == "fused"
