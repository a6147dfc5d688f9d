"""The --torch-training part of the bench: its own part, real training steps, every mode,
the targets it checks and the interference ratio."""
import argparse
import statistics

import pytest

from fastopt.bench import cli, torch_training

torch = pytest.importorskip("torch")


def test_torch_training_is_its_own_part():
    cfg = cli.config_from_args(cli.add_arguments(argparse.ArgumentParser()).parse_args(["--torch-training"]))
    assert cfg.torch_training and not (cfg.table or cfg.many_arrays or cfg.small or cfg.contention)


def test_measure_times_fastopt_foreach_and_fused_on_a_small_model():
    rows = torch_training.measure(torch, steps=2, optimizers=torch_training.OPTIMIZERS[1:6:4],
                                  model_kwargs=dict(vocab=500, dim=8, hidden=16, classes=4), batch=4, bag=3,
                                  deepspeed=False)
    assert [r["cls"] for r in rows] == ["Adam", "Adadelta"]
    assert set(rows[0]["runs"]) == {"fastopt", "foreach", "fused"} and set(rows[1]["runs"]) == {"fastopt", "foreach"}
    for r in rows:
        assert r["params"] == 500 * 8 + 8 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4
        assert r["alone"] > 0
        assert all(v > 0 for run in r["runs"].values() for v in run.values())
        assert set(r["runs"]["fastopt"]) == {"fwd_bwd", "step", "step_alone"}
    text = torch_training.lines(rows, threads=1)
    assert "1 threads" in text[0] and text[2].split()[:2] == ["Adam", "fastopt"] and text[4].split()[0] == "fused"
    assert text[-1].startswith("targets met: ")


def test_the_transformer_model_trains_a_step_in_every_mode():
    rows = torch_training.measure(torch, steps=1, optimizers=torch_training.OPTIMIZERS[2:3], model="transformer",
                                  model_kwargs=dict(vocab=50, dim=16, heads=2, ff=32, layers=1), batch=2, bag=5,
                                  deepspeed=False)
    (row,) = rows
    assert row["model"] == "transformer" and set(row["runs"]) == {"fastopt", "foreach", "fused"}
    emb, ff, layer_norms = 50 * 16, 16 * 32 + 32 + 32 * 16 + 16, 2 * 2 * 16
    attention = 3 * 16 * 16 + 3 * 16 + 16 * 16 + 16
    assert row["params"] == emb + attention + ff + layer_norms + 16 * 50 + 50
    assert "transformer LM" in torch_training.lines(rows)[0]
    with pytest.raises(ValueError, match="model must be one of"):
        torch_training.measure(torch, model="cnn")


def _row(cls, fastopt, others, alone=1.0):
    runs = {"fastopt": dict(zip(("fwd_bwd", "step", "step_alone"), fastopt))}
    runs.update({m: dict(zip(("fwd_bwd", "step", "step_alone"), t)) for m, t in others.items()})
    return {"label": cls, "cls": cls, "model": "mlp", "params": 1, "alone": alone, "runs": runs}


def test_targets_are_judged_from_the_times():
    good = _row("Adam", (1.0, 0.10, 0.10), {"fused": (1.0, 0.11, 0.11), "foreach": (1.0, 0.5, 0.5)})
    assert all(ok for _, ok in torch_training.targets([good]))
    slow_step = _row("Adam", (1.0, 0.12, 0.12), {"fused": (1.0, 0.11, 0.11)})
    assert [ok for _, ok in torch_training.targets([slow_step])] == [False, False, True]
    # no fused kernel: 3x faster than torch's best is the bar
    rms = _row("RMSprop", (1.0, 0.10, 0.10), {"foreach": (1.0, 0.25, 0.25)})
    assert [ok for _, ok in torch_training.targets([rms])] == [False, True, True]
    # the forward+backward after fastopt's step is slower than alone: interference
    mixed = _row("Adam", (1.2, 0.10, 0.10), {"fused": (1.0, 0.2, 0.2)})
    checks = torch_training.targets([mixed])
    assert checks[2][1] is False and "mixed / alone 1.18" in checks[2][0]
    assert torch_training.interference(mixed, "fused") == pytest.approx(1.2 / 1.2)


def test_ratios_are_paired_by_round():
    """A slow stretch of the machine that catches fastopt's step in three rounds of five
    and torch's in two: the medians' ratio says fastopt is 2.7x slower, each round
    says 1.1x faster, and the round's own ratio is the one judged."""
    rounds = {"fastopt": {"fwd_bwd": [1.0] * 5, "step": [1.0, 1.0, 3.0, 3.0, 3.0], "step_alone": [1.0] * 5},
              "fused": {"fwd_bwd": [1.0] * 5, "step": [1.1, 1.1, 3.3, 3.3, 1.1], "step_alone": [1.0] * 5},
              "alone": [1.0, 1.0, 3.0, 3.0, 3.0]}
    runs = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in rounds.items() if m != "alone"}
    row = {"label": "Adam", "cls": "Adam", "model": "mlp", "params": 1, "alone": 3.0, "runs": runs,
           "rounds": rounds}
    assert runs["fused"]["step"] / runs["fastopt"]["step"] == pytest.approx(1.1 / 3.0)
    assert torch_training.paired(row, ("fused", "step"), ("fastopt", "step")) == pytest.approx(1.1)
    step, _, mix = torch_training.targets([row])
    assert step == ("Adam: step vs torch fused 1.10x (target >= 1)", True)
    # mixed total (1 + step) over alone + step alone, round by round: 2/2, 2/2, 4/4, 4/4, 4/4
    assert torch_training.interference(row, "fastopt") == pytest.approx(1.0) and mix[1]
    assert "1.10×" in "".join(torch_training.lines([row]))
    # the rounds measure() keeps are the ones the medians came from
    (real,) = torch_training.measure(torch, steps=3, optimizers=torch_training.OPTIMIZERS[1:2],
                                     model_kwargs=dict(vocab=50, dim=4, hidden=8, classes=3), batch=2, bag=2,
                                     deepspeed=False)
    assert len(real["rounds"]["alone"]) == 3 and real["alone"] == statistics.median(real["rounds"]["alone"])
    for mode, run in real["runs"].items():
        assert {k: statistics.median(v) for k, v in real["rounds"][mode].items()} == run


def test_training_steps_option():
    parse = cli.add_arguments(argparse.ArgumentParser()).parse_args
    assert cli.config_from_args(parse(["--torch-training"])).training_steps == torch_training.STEPS == 21
    assert cli.config_from_args(parse(["--torch-training", "--training-steps", "5"])).training_steps == 5
    with pytest.raises(ValueError, match="--training-steps must be >= 1"):
        cli.config_from_args(parse(["--torch-training", "--training-steps", "0"]))


def test_the_bf16_row_times_master_weights_all_bf16_and_torch_on_bf16_parameters():
    cfg = cli.config_from_args(cli.add_arguments(argparse.ArgumentParser()).parse_args(["--torch-training-bf16"]))
    assert cfg.torch_training_bf16 and not (cfg.torch_training or cfg.table or cfg.small)
    rows = torch_training.measure_bf16(torch, steps=2, model_kwargs=dict(vocab=500, dim=8, hidden=16, classes=4),
                                       batch=4, bag=3, deepspeed=False)
    (row,) = rows
    assert set(row["runs"]) == {"fastopt", "fastopt-bf16", "foreach", "fused"} and row["dtype"] == "bfloat16"
    assert all(v > 0 for run in row["runs"].values() for v in run.values())
    text = torch_training.lines(rows, threads=1)
    assert "bfloat16 parameters" in text[0] and text[3].split()[0] == "fastopt-bf16"
    # like for like: fastopt-bf16 (torch's storage) is judged against torch fused and
    # torch's best total, and is never "torch's best" itself; the master-weights mode
    # (twice the bytes) against DeepSpeed, which also keeps float32 state
    def judge(master, bf16, fused, deepspeed=None):
        runs = {"fastopt": {"fwd_bwd": 1.0, "step": master, "step_alone": master},
                "fastopt-bf16": {"fwd_bwd": 1.0, "step": bf16, "step_alone": bf16},
                "fused": {"fwd_bwd": 1.0, "step": fused, "step_alone": fused}}
        if deepspeed is not None:
            runs["deepspeed"] = {"fwd_bwd": 1.0, "step": deepspeed, "step_alone": deepspeed}
        return torch_training.targets([dict(row, runs=runs, alone=1.0, rounds=None)])   # made-up medians only
    met = judge(master=0.05, bf16=1e-6, fused=0.1)
    assert [text.split(":")[1].split()[0] for text, _ in met] == ["all-bf16", "total", "fastopt", "fastopt-bf16"]
    assert all(ok for _, ok in met)              # fastopt-bf16 counted as torch would fail the total
    met = judge(master=0.12, bf16=0.06, fused=0.1, deepspeed=0.13)
    assert [(text.split(":")[1].split()[0], ok) for text, ok in met][:3] == \
        [("all-bf16", True), ("master-weights", True), ("total", True)]
    assert "all-bf16 step vs torch fused 1.67x" in met[0][0] and "vs DeepSpeed 1.08x" in met[1][0]
    met = judge(master=0.12, bf16=0.11, fused=0.1, deepspeed=0.11)
    assert [ok for _, ok in met][:3] == [False, False, False]


def test_the_bf16_transformer_row():
    rows = torch_training.measure_bf16(torch, steps=1, model="transformer", batch=2, bag=8, deepspeed=False,
                                       model_kwargs=dict(vocab=64, dim=16, heads=2, ff=32, layers=1))
    (row,) = rows
    assert row["model"] == "transformer" and row["dtype"] == "bfloat16"
    assert set(row["runs"]) == {"fastopt", "fastopt-bf16", "foreach", "fused"}
    assert all(v > 0 for run in row["runs"].values() for v in run.values())
    assert "transformer LM" in torch_training.lines(rows, threads=1)[0]
    with pytest.raises(ValueError, match="model must be one of"):
        torch_training.measure_bf16(torch, model="cnn")
