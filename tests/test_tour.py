"""``fastopt tour``: every claim asserted on the numbers it prints, and its pictures."""
import math

import numpy as np
import pytest

from fastopt import tour


def test_momentum_damps_the_zigzag():
    n = tour.claim_momentum().numbers
    assert n["sgd_flips"] == n["steps"]                  # SGD crosses the valley floor every step
    assert n["momentum_flips"] <= n["sgd_flips"] // 5
    assert n["momentum_sideways"] < 0.7 * n["sgd_sideways"]
    assert n["momentum_final"] < n["sgd_final"]


def test_adagrad_step_only_shrinks_rmsprop_does_not():
    n = tour.claim_adagrad().numbers
    ada = np.array(n["adagrad_every"])
    ada = ada[np.isfinite(ada)]
    assert np.all(np.diff(ada) <= 0)                       # non-increasing at every step
    assert n["adagrad"][-1] < 0.5 * n["adagrad"][0]
    rms = n["rmsprop"]
    assert rms[-1] > rms[0]                                # RMSProp's step grows back as g shrinks


def test_adam_bias_correction_matters_in_the_first_steps():
    n = tour.claim_adam_bias().numbers
    np.testing.assert_allclose(n["corrected"], 1.0, rtol=1e-6)
    assert n["uncorrected"][0] == pytest.approx(0.1 / math.sqrt(0.001), rel=1e-6)     # 3.16
    assert n["uncorrected"][-1] > 6.0


def test_newton_needs_no_learning_rate():
    n = tour.claim_newton().numbers
    assert n["quadratic_newton_nit"] == 1 and n["quadratic_newton_f"] < 1e-25
    assert n["rosenbrock_newton_nit"] < 50 and n["rosenbrock_newton_f"] < 1e-20
    assert n["gd_above_diverged"]
    assert n["gd_best_f_2000"] > 1e-3                      # GD at its best rate is still far off


def test_gradient_noise_escapes_the_saddle():
    n = tour.claim_noise_saddle().numbers
    assert n["plain_final"][1] == 0.0 and abs(n["plain_final"][0]) < 1e-6     # sits on the saddle point
    assert abs(n["noisy_final"][1]) > 1.0 and n["noisy_f"] < -1.0


def test_early_stopping_picks_the_best_epoch():
    n = tour.claim_early_stopping().numbers
    assert n["best_epoch"] == n["argmin_val_full_run"]
    assert n["stopped_epoch"] == n["best_epoch"] + 20
    assert n["val_restored"] == pytest.approx(n["val_at_best"], rel=1e-12)
    assert n["val_end_full_run"] > 1.2 * n["val_at_best"]


def test_batch_minibatch_stochastic():
    n = tour.claim_batch_sizes().numbers
    b, m, s = n["batch (400)"], n["mini-batch (32)"], n["stochastic (1)"]
    assert (b["steps"], m["steps"], s["steps"]) == (20, 260, 8000)
    for v in (b, m, s):
        assert v["final"] < v["first"]
    # per epoch, smaller batches get lower sooner
    assert s["first"] < m["first"] < b["first"]
    assert m["final"] < b["final"]


def test_linear_scaling_rule():
    n = tour.claim_linear_scaling().numbers
    assert n["scaled_lr"] == pytest.approx(0.16)
    assert n["gap_scaled"] < 0.2 * n["gap_unscaled"]


def test_l1_proximal_makes_exact_zeros_coupled_does_not():
    n = tour.claim_l1_sparsity().numbers
    assert n["proximal_zeros"] == n["true_zeros"] == 24 and n["proximal_recovers_support"]
    assert n["coupled_zeros"] == 0


def test_tour_writes_every_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    from fastopt.cli import main
    assert main(["tour", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for stem, fn in tour.CLAIMS:
        with Image.open(tmp_path / f"{stem}.png") as im:
            img = np.asarray(im.convert("RGB"))
        assert min(img.shape[:2]) >= 400
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50        # not blank: lines, text, colours
    for title in ("Momentum damps oscillation", "Adagrad's step shrinks", "Newton needs no learning rate",
                  "Gradient noise helps escape the saddle", "Early stopping picks the best epoch"):
        assert title in printed


def test_tour_rejects_unknown_claims(capsys):
    from fastopt.cli import main
    assert main(["tour", "--only", "momentum,nope", "--no-pictures"]) == 2
    assert "unknown claim(s) ['nope']" in capsys.readouterr().err
