"""Tests of fastopt.schedules (pure Python; expected values computed by hand)."""

import argparse
import json
import math
import sys

import pytest
from hypothesis import given, settings, strategies as st

from fastopt import schedules
from fastopt.schedules import (
    Constant,
    CosineAnnealing,
    CosineWarmRestarts,
    Exponential,
    InverseSqrt,
    InverseTime,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    Polynomial,
    ReduceOnPlateau,
    Schedule,
    StepDecay,
    Warmup,
    add_cli,
    plot,
    scale_lr_for_batch,
    table,
)

approx = pytest.approx
REL = 1e-12


def values(sched, steps):
    return [sched(s) for s in steps]


# ---------------------------------------------------------------------------
# corner values of each schedule
# ---------------------------------------------------------------------------

def test_constant():
    c = Constant(0.3)
    assert values(c, [0, 1, 10, 10**9]) == [0.3] * 4
    assert c.initial_lr == 0.3


def test_step_decay_matches_pytorch_steplr_doc_example():
    # StepLR(step_size=30, gamma=0.1), lr 0.05: 0.05 for 0-29, 0.005 for 30-59, 0.0005 for 60-89
    sch = StepDecay(0.05, step_size=30, gamma=0.1)
    for s in (0, 1, 29):
        assert sch(s) == 0.05
    for s in (30, 45, 59):
        assert sch(s) == approx(0.005, rel=REL)
    for s in (60, 89):
        assert sch(s) == approx(0.0005, rel=REL)
    assert sch(90) == approx(5e-5, rel=REL)
    assert sch.initial_lr == 0.05


def test_multistep_matches_pytorch_multisteplr_doc_example():
    # MultiStepLR(milestones=[30, 80], gamma=0.1), lr 0.05
    sch = MultiStep(0.05, [30, 80], gamma=0.1)
    assert values(sch, [0, 29]) == [0.05, 0.05]
    assert values(sch, [30, 31, 79]) == approx([0.005] * 3, rel=REL)
    assert values(sch, [80, 81, 1000]) == approx([0.0005] * 3, rel=REL)


def test_multistep_resnet_style():
    sch = MultiStep(0.1, (30, 60, 90))
    assert values(sch, [29, 30, 59, 60, 89, 90]) == approx(
        [0.1, 0.01, 0.01, 0.001, 0.001, 0.0001], rel=REL
    )


def test_exponential_matches_pytorch_exponentiallr():
    sch = Exponential(0.1, gamma=0.9)
    assert sch(0) == 0.1
    assert sch(1) == approx(0.09, rel=REL)
    assert sch(2) == approx(0.081, rel=REL)
    assert sch(10) == approx(0.03486784401, rel=REL)


def test_exponential_growth_overflow_is_inf():
    sch = Exponential(1e-7, gamma=10.0)
    assert sch(3) == approx(1e-4, rel=REL)
    assert sch(10**6) == math.inf


def test_inverse_time():
    sch = InverseTime(0.1, k=0.5)
    assert values(sch, [0, 2, 6]) == approx([0.1, 0.05, 0.025], rel=REL)
    sch2 = InverseTime(0.1, k=0.5, power=2.0)
    assert values(sch2, [0, 2, 6]) == approx([0.1, 0.025, 0.00625], rel=REL)
    sch3 = InverseTime(0.1, k=0.0)
    assert sch3(1000) == 0.1


def test_inverse_sqrt_no_warmup():
    sch = InverseSqrt(1.0)
    assert values(sch, [0, 3, 15, 99]) == approx([1.0, 0.5, 0.25, 0.1], rel=REL)


def test_inverse_sqrt_with_warmup():
    sch = InverseSqrt(1.0, warmup_steps=4)
    # linear warmup (s+1)/W, reaching the peak 1.0 at s = W - 1
    assert values(sch, [0, 1, 2, 3]) == approx([0.25, 0.5, 0.75, 1.0], rel=REL)
    # then sqrt(W / (s + 1))
    assert sch(4) == approx(0.894427190999916, rel=REL)
    assert sch(15) == approx(0.5, rel=REL)
    assert sch(399) == approx(0.1, rel=REL)
    assert max(values(sch, range(50))) == 1.0


def test_cosine_annealing_matches_pytorch_closed_form():
    sch = CosineAnnealing(0.1, total_steps=100)
    assert sch(0) == 0.1
    assert sch(25) == approx(0.08535533905932738, rel=REL)
    assert sch(50) == approx(0.05, rel=REL)
    assert sch(75) == approx(0.014644660940672627, rel=REL)
    assert sch(100) == 0.0
    assert sch(101) == 0.0 and sch(10**7) == 0.0  # clamped after T


def test_cosine_annealing_min_lr():
    sch = CosineAnnealing(0.1, 100, min_lr=0.01)
    assert sch(0) == approx(0.1, rel=REL)
    assert sch(50) == approx(0.055, rel=REL)
    assert sch(100) == approx(0.01, rel=REL)
    assert sch(500) == 0.01


def test_cosine_warm_restarts_constant_period():
    sch = CosineWarmRestarts(0.1, period=10)
    assert sch(0) == 0.1
    assert sch(5) == approx(0.05, rel=REL)
    assert sch(9) == approx(0.0024471741852423235, rel=REL)
    assert sch(10) == 0.1  # restart
    assert sch(15) == approx(0.05, rel=REL)
    assert sch(1000) == 0.1
    assert sch.cycle(25) == (2, 5, 10)


def test_cosine_warm_restarts_period_mult():
    # T_0 = 10, T_mult = 2: cycles start at 0, 10, 30, 70, 150
    sch = CosineWarmRestarts(0.1, period=10, period_mult=2, min_lr=0.0)
    for start in (0, 10, 30, 70, 150):
        assert sch(start) == 0.1
    assert sch(20) == approx(0.05, rel=REL)  # middle of the 20-step cycle
    assert sch(50) == approx(0.05, rel=REL)  # middle of the 40-step cycle
    assert sch(69) == approx(0.0001541333133436018, rel=REL)
    assert sch.cycle(69) == (2, 39, 40)
    assert sch.cycle(70) == (3, 0, 80)


def test_cosine_warm_restarts_min_lr():
    sch = CosineWarmRestarts(1.0, period=4, min_lr=0.5)
    assert values(sch, [0, 2, 4]) == approx([1.0, 0.75, 1.0], rel=REL)


def test_linear():
    sch = Linear(0.1, total_steps=100)
    assert values(sch, [0, 50, 100, 200]) == approx([0.1, 0.05, 0.0, 0.0], abs=1e-15)
    assert sch(100) == 0.0
    sch2 = Linear(0.1, 100, end_lr=0.01)
    assert values(sch2, [0, 50, 100, 1000]) == approx([0.1, 0.055, 0.01, 0.01], rel=REL)
    ramp = Linear(0.0, 4, end_lr=1.0)
    assert values(ramp, [0, 1, 4, 9]) == approx([0.0, 0.25, 1.0, 1.0], rel=REL)


def test_polynomial():
    sch = Polynomial(0.1, 100, power=2.0)
    assert values(sch, [0, 50, 100, 150]) == approx([0.1, 0.025, 0.0, 0.0], abs=1e-15)
    sch2 = Polynomial(0.1, 100, end_lr=0.01, power=2.0)
    assert values(sch2, [0, 50, 100, 150]) == approx([0.1, 0.0325, 0.01, 0.01], rel=REL)
    lin = Polynomial(0.1, 100, end_lr=0.01)
    assert lin(50) == approx(Linear(0.1, 100, end_lr=0.01)(50), rel=REL)


def test_onecycle_cos_corners():
    # max 0.1, T = 100, pct 0.3: initial 0.004, min 4e-7; phase 1 ends at s = 29
    sch = OneCycle(0.1, 100)
    assert sch.initial_value == approx(0.004, rel=REL)
    assert sch.min_value == approx(4e-7, rel=REL)
    assert sch(0) == approx(0.004, rel=REL)
    assert sch(10) == approx(0.029516394846410082, rel=REL)
    assert sch(29) == 0.1
    assert sch(64) == approx(0.0500002, rel=REL)
    assert sch(99) == approx(4e-7, rel=REL)
    # clamped after T - 1 (PyTorch raises after T)
    assert sch(100) == sch(99) and sch(10**6) == sch(99)
    assert max(values(sch, range(100))) == 0.1


def test_onecycle_linear_and_three_phase():
    lin = OneCycle(0.1, 100, anneal="linear")
    assert lin(10) == approx(0.037103448275862067, rel=REL)
    assert lin(64) == approx((0.1 + 4e-7) / 2, rel=REL)
    assert lin(99) == approx(4e-7, rel=REL)
    three = OneCycle(0.1, 100, three_phase=True)
    # phases end at 29, 58, 99
    assert three(29) == 0.1
    assert three(40) == approx(0.0697666314563159, rel=REL)
    assert three(58) == approx(0.004, rel=REL)
    assert three(70) == approx(0.0032125295768510825, rel=REL)
    assert three(99) == approx(4e-7, rel=REL)
    assert three(150) == three(99)


def test_onecycle_degenerate_phase():
    # pct_start * T == 1: the first phase has zero length and yields max_lr at s = 0
    sch = OneCycle(1.0, 10, pct_start=0.1)
    assert sch(0) == 1.0
    assert sch(9) == approx(1.0 / 25 / 1e4, rel=REL)
    assert OneCycle(1.0, 10, pct_start=0.0)(0) < 1.0


# ---------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------

def test_warmup_linear_into_cosine():
    sch = Warmup(CosineAnnealing(0.1, 90), warmup_steps=10)
    assert values(sch, [0, 5, 9]) == approx([0.0, 0.05, 0.09], rel=REL)
    assert sch(10) == 0.1  # boundary: cosine at its own s = 0
    assert sch(55) == approx(0.05, rel=REL)
    assert sch(100) == 0.0
    assert sch(1000) == 0.0


def test_warmup_kinds():
    exp = Warmup(1.0, 4, start_lr=0.0625, kind="exponential")
    assert values(exp, [0, 1, 2, 3, 4, 100]) == approx(
        [0.0625, 0.125, 0.25, 0.5, 1.0, 1.0], rel=REL
    )
    cos = Warmup(Constant(1.0), 4, start_lr=0.0, kind="cosine")
    assert values(cos, [0, 2, 4]) == approx([0.0, 0.5, 1.0], abs=1e-15)
    assert cos(1) == approx(0.5 * (1 - math.cos(math.pi / 4)), rel=REL)
    lin = Warmup(0.2, 4, start_lr=0.1)
    assert values(lin, [0, 2, 4]) == approx([0.1, 0.15, 0.2], rel=REL)
    none = Warmup(StepDecay(1.0, 2), 0)
    assert values(none, [0, 2]) == approx([1.0, 0.1], rel=REL)


def test_join_of_three():
    sch = Join([Constant(1.0), Linear(1.0, 10), Exponential(0.5, 0.5)], boundaries=[5, 15])
    assert values(sch, [0, 4]) == [1.0, 1.0]
    assert sch(5) == 1.0  # Linear at its own s = 0
    assert sch(10) == approx(0.5, rel=REL)
    assert sch(14) == approx(0.1, rel=REL)
    assert sch(15) == 0.5  # Exponential at its own s = 0
    assert sch(16) == 0.25
    assert sch(17) == 0.125
    assert Join([0.3], [])(100) == 0.3


# ---------------------------------------------------------------------------
# ReduceOnPlateau
# ---------------------------------------------------------------------------

def test_plateau_patience_sequence():
    sch = ReduceOnPlateau(1.0, factor=0.5, patience=2)
    lrs = [sch.report(m) for m in [10, 9, 9, 9, 9, 9, 9, 9]]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert sch(0) == 0.25 and sch(12345) == 0.25
    assert sch.last_epoch == 8 and sch.best == 9.0


def test_plateau_rel_threshold():
    # 9.9995 is not below 10 * (1 - 1e-4) = 9.999 -> counts as a bad epoch
    sch = ReduceOnPlateau(1.0, patience=0)
    assert [sch.report(m) for m in [10.0, 9.9995]] == [1.0, approx(0.1, rel=REL)]
    sch = ReduceOnPlateau(1.0, patience=0)
    assert [sch.report(m) for m in [10.0, 9.998]] == [1.0, 1.0]


def test_plateau_cooldown():
    sch = ReduceOnPlateau(1.0, factor=0.1, patience=0, cooldown=2)
    lrs = [sch.report(m) for m in [1, 2, 2, 2, 2, 2]]
    assert lrs == approx([1.0, 0.1, 0.1, 0.1, 0.01, 0.01], rel=REL)
    assert sch.cooldown_counter == 1 and sch.in_cooldown


def test_plateau_min_lr_and_eps():
    sch = ReduceOnPlateau(1.0, factor=0.1, patience=0, min_lr=0.05)
    lrs = [sch.report(1.0) for _ in range(5)]
    assert lrs == approx([1.0, 0.1, 0.05, 0.05, 0.05], rel=REL)
    tiny = ReduceOnPlateau(1e-8, factor=0.5, patience=0)
    assert [tiny.report(1.0) for _ in range(3)] == [1e-8] * 3  # change 5e-9 <= eps


def test_plateau_max_mode_abs_threshold():
    sch = ReduceOnPlateau(1.0, mode="max", threshold=0.5, threshold_mode="abs", patience=0)
    assert sch.report(1.0) == 1.0
    assert sch.report(1.4) == approx(0.1, rel=REL)  # 1.4 is not > 1.0 + 0.5
    assert sch.report(1.6) == approx(0.1, rel=REL)  # improvement
    assert sch.best == 1.6


def test_plateau_nan_metric_is_bad():
    sch = ReduceOnPlateau(1.0, patience=0)
    sch.report(1.0)
    assert sch.report(float("nan")) == approx(0.1, rel=REL)


def test_plateau_state_dict_roundtrip_mid_run():
    kw = dict(factor=0.5, patience=2, cooldown=2, threshold=0.01)
    a = ReduceOnPlateau(1.0, **kw)
    metrics = [5, 4, 4, 4, 4, 3.9, 3.95, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2]
    assert [a.report(m) for m in metrics[:6]] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    # split in the middle of a cooldown, with a non-trivial best
    assert (a.cooldown_counter, a.num_bad_epochs, a.best, a.last_epoch) == (1, 0, 3.9, 6)
    sd = a.state_dict()
    sd = json.loads(json.dumps(sd))  # plain values survive JSON
    b = ReduceOnPlateau(0.7, mode="max")  # different hyper-parameters are overwritten
    b.load_state_dict(sd)
    assert b.state_dict() == a.state_dict()
    rest_a = [a.report(m) for m in metrics[6:]]
    rest_b = [b.report(m) for m in metrics[6:]]
    assert rest_a == rest_b == [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125]
    assert a.state_dict() == b.state_dict()
    c = Schedule.from_state_dict(a.state_dict())
    assert isinstance(c, ReduceOnPlateau) and c.state_dict() == a.state_dict()


def test_plateau_state_dict_keys():
    sd = ReduceOnPlateau(0.1).state_dict()
    assert sd["kind"] == "ReduceOnPlateau"
    for key in ("best", "num_bad_epochs", "cooldown_counter", "current_lr", "last_epoch"):
        assert key in sd
    assert sd["best"] == math.inf


# ---------------------------------------------------------------------------
# state dicts of the other schedules
# ---------------------------------------------------------------------------

ALL = [
    Constant(0.1),
    StepDecay(0.05, 30),
    MultiStep(0.05, [30, 80]),
    Exponential(0.1, 0.9),
    InverseTime(0.1, 0.5, 2.0),
    InverseSqrt(1.0, 4),
    CosineAnnealing(0.1, 100, 0.01),
    CosineWarmRestarts(0.1, 10, 2, 0.001),
    Linear(0.1, 100, 0.01),
    Polynomial(0.1, 100, 0.01, 2.0),
    OneCycle(0.1, 100, three_phase=True, anneal="linear"),
    Warmup(CosineAnnealing(0.1, 90), 10, start_lr=0.01, kind="cosine"),
    Join([Constant(1.0), Linear(1.0, 10), Exponential(0.5, 0.5)], [5, 15]),
    ReduceOnPlateau(0.1),
]


@pytest.mark.parametrize("sched", ALL, ids=lambda x: type(x).__name__)
def test_state_dict_roundtrip(sched):
    sd = sched.state_dict()
    assert sd["kind"] == type(sched).__name__
    assert json.loads(json.dumps(sd)) == sd  # only plain values
    clone = Schedule.from_state_dict(sd)
    assert type(clone) is type(sched)
    steps = [0, 1, 5, 9, 10, 29, 30, 50, 99, 100, 250]
    assert values(clone, steps) == values(sched, steps)
    # load into a fresh instance of the same class with other hyper-parameters
    other = Schedule.from_state_dict(sd)
    other.load_state_dict(sd)
    assert values(other, steps) == values(sched, steps)
    assert sched.initial_lr == sched(0)


def test_load_state_dict_into_differently_configured_instance():
    a = CosineAnnealing(0.1, 100, 0.01)
    b = CosineAnnealing(1.0, 7)
    b.load_state_dict(a.state_dict())
    assert values(b, range(0, 120, 7)) == values(a, range(0, 120, 7))
    w = Warmup(Linear(1.0, 3), 2)
    w.load_state_dict(Warmup(CosineAnnealing(0.1, 90), 10).state_dict())
    assert w(10) == 0.1 and w(55) == approx(0.05, rel=REL)


def test_nested_plateau_state_survives_join():
    p = ReduceOnPlateau(1.0, patience=0)
    j = Join([Constant(0.5), p], [3])
    p.report(1.0)
    p.report(1.0)
    assert j(10) == approx(0.1, rel=REL)
    j2 = Schedule.from_state_dict(j.state_dict())
    assert j2(10) == approx(0.1, rel=REL)
    j2.schedules[1].report(1.0)
    p.report(1.0)
    assert j2(10) == j(10) == approx(0.01, rel=REL)


def test_load_state_dict_errors():
    cos = CosineAnnealing(0.1, 100)
    with pytest.raises(ValueError, match="Linear"):
        cos.load_state_dict(Linear(0.1, 100).state_dict())
    sd = cos.state_dict()
    del sd["min_lr"]
    with pytest.raises(ValueError, match="missing.*min_lr"):
        cos.load_state_dict(sd)
    sd = cos.state_dict()
    sd["bogus"] = 1
    with pytest.raises(ValueError, match="unexpected.*bogus"):
        cos.load_state_dict(sd)
    with pytest.raises(TypeError, match="state_dict"):
        cos.load_state_dict([("kind", "CosineAnnealing")])
    sd = cos.state_dict()
    sd["total_steps"] = -3
    with pytest.raises(ValueError, match="total_steps"):
        cos.load_state_dict(sd)
    assert cos(50) == approx(0.05, rel=REL)  # a failed load leaves the schedule untouched
    p = ReduceOnPlateau(0.1)
    sd = p.state_dict()
    del sd["num_bad_epochs"]
    with pytest.raises(ValueError, match="num_bad_epochs"):
        p.load_state_dict(sd)
    with pytest.raises(ValueError, match="ReduceOnPlateau"):
        p.load_state_dict(Constant(0.1).state_dict())
    with pytest.raises(ValueError, match="unknown schedule kind"):
        Schedule.from_state_dict({"kind": "Nope"})
    with pytest.raises(ValueError, match="missing.*gamma"):
        Schedule.from_state_dict({"kind": "Exponential", "lr": 0.1})


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------

INVALID = [
    (lambda: Constant(-0.1), ValueError, "lr"),
    (lambda: Constant(float("nan")), ValueError, "lr.*finite"),
    (lambda: Constant(float("inf")), ValueError, "lr.*finite"),
    (lambda: Constant("0.1"), TypeError, "lr"),
    (lambda: Constant(True), TypeError, "lr"),
    (lambda: StepDecay(0.1, 0), ValueError, "step_size"),
    (lambda: StepDecay(0.1, -5), ValueError, "step_size"),
    (lambda: StepDecay(0.1, 10.0), TypeError, "step_size"),
    (lambda: StepDecay(0.1, 10, gamma=0.0), ValueError, "gamma"),
    (lambda: StepDecay(0.1, 10, gamma=-0.5), ValueError, "gamma"),
    (lambda: MultiStep(0.1, []), ValueError, "milestones"),
    (lambda: MultiStep(0.1, [60, 30]), ValueError, "milestones.*increasing"),
    (lambda: MultiStep(0.1, [30, 30]), ValueError, "milestones"),
    (lambda: MultiStep(0.1, [-1, 30]), ValueError, "milestones"),
    (lambda: MultiStep(0.1, 30), TypeError, "milestones"),
    (lambda: MultiStep(0.1, [30.5]), TypeError, "milestones"),
    (lambda: MultiStep(0.1, [30], gamma=0), ValueError, "gamma"),
    (lambda: Exponential(0.1, 0.0), ValueError, "gamma"),
    (lambda: Exponential(0.1, float("inf")), ValueError, "gamma"),
    (lambda: InverseTime(0.1, -1.0), ValueError, "k"),
    (lambda: InverseTime(0.1, 1.0, power=0.0), ValueError, "power"),
    (lambda: InverseSqrt(0.1, -1), ValueError, "warmup_steps"),
    (lambda: InverseSqrt(0.1, 2.5), TypeError, "warmup_steps"),
    (lambda: CosineAnnealing(0.1, 0), ValueError, "total_steps"),
    (lambda: CosineAnnealing(0.1, 100, min_lr=0.2), ValueError, "min_lr"),
    (lambda: CosineAnnealing(0.1, 100, min_lr=-0.01), ValueError, "min_lr"),
    (lambda: CosineWarmRestarts(0.1, 0), ValueError, "period"),
    (lambda: CosineWarmRestarts(0.1, 10, period_mult=0), ValueError, "period_mult"),
    (lambda: CosineWarmRestarts(0.1, 10, period_mult=1.5), TypeError, "period_mult"),
    (lambda: CosineWarmRestarts(0.1, 10, min_lr=1.0), ValueError, "min_lr"),
    (lambda: Linear(0.1, 0), ValueError, "total_steps"),
    (lambda: Linear(0.1, 10, end_lr=-1.0), ValueError, "end_lr"),
    (lambda: Polynomial(0.1, -10), ValueError, "total_steps"),
    (lambda: Polynomial(0.1, 10, power=-1.0), ValueError, "power"),
    (lambda: Polynomial(0.1, 10, end_lr=float("nan")), ValueError, "end_lr"),
    (lambda: OneCycle(0.1, 0), ValueError, "total_steps"),
    (lambda: OneCycle(0.1, 100, pct_start=1.5), ValueError, "pct_start"),
    (lambda: OneCycle(0.1, 100, pct_start=-0.1), ValueError, "pct_start"),
    (lambda: OneCycle(0.1, 100, pct_start=0.6, three_phase=True), ValueError, "pct_start"),
    (lambda: OneCycle(0.1, 100, div_factor=0.0), ValueError, "div_factor"),
    (lambda: OneCycle(0.1, 100, final_div_factor=-1.0), ValueError, "final_div_factor"),
    (lambda: OneCycle(0.1, 100, anneal="cosine"), ValueError, "anneal"),
    (lambda: OneCycle(0.1, 100, three_phase=1), TypeError, "three_phase"),
    (lambda: OneCycle(-0.1, 100), ValueError, "max_lr"),
    (lambda: Warmup(CosineAnnealing(0.1, 10), -1), ValueError, "warmup_steps"),
    (lambda: Warmup(0.1, 10, start_lr=0.2), ValueError, "start_lr"),
    (lambda: Warmup(0.1, 10, start_lr=-0.2), ValueError, "start_lr"),
    (lambda: Warmup(0.1, 10, kind="exponential"), ValueError, "start_lr"),
    (lambda: Warmup(0.1, 10, kind="quadratic"), ValueError, "kind"),
    (lambda: Warmup("cosine", 10), TypeError, "schedule_or_lr"),
    (lambda: Join([], []), ValueError, "schedules"),
    (lambda: Join([0.1, 0.2], []), ValueError, "boundaries"),
    (lambda: Join([0.1, 0.2, 0.3], [10, 5]), ValueError, "boundaries.*increasing"),
    (lambda: Join([0.1, 0.2], [0]), ValueError, "boundaries"),
    (lambda: Join([0.1, "x"], [3]), TypeError, "schedules"),
    (lambda: Join(Constant(0.1), []), TypeError, "schedules"),
    (lambda: ReduceOnPlateau(0.1, mode="up"), ValueError, "mode"),
    (lambda: ReduceOnPlateau(0.1, factor=1.0), ValueError, "factor"),
    (lambda: ReduceOnPlateau(0.1, factor=0.0), ValueError, "factor"),
    (lambda: ReduceOnPlateau(0.1, patience=-1), ValueError, "patience"),
    (lambda: ReduceOnPlateau(0.1, threshold=-1e-4), ValueError, "threshold"),
    (lambda: ReduceOnPlateau(0.1, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda: ReduceOnPlateau(0.1, cooldown=-1), ValueError, "cooldown"),
    (lambda: ReduceOnPlateau(0.1, min_lr=1.0), ValueError, "min_lr"),
    (lambda: ReduceOnPlateau(0.1, eps=-1.0), ValueError, "eps"),
    (lambda: scale_lr_for_batch(0.1, 0, 256), ValueError, "batch_size"),
    (lambda: scale_lr_for_batch(0.1, 512, 0), ValueError, "base_batch_size"),
    (lambda: scale_lr_for_batch(-0.1, 512, 256), ValueError, "lr"),
    (lambda: scale_lr_for_batch(0.1, 512.0, 256), TypeError, "batch_size"),
    (lambda: table(Constant(0.1), 0), ValueError, "steps"),
    (lambda: table(Constant(0.1), 10, every=0), ValueError, "every"),
    (lambda: table(lambda s: 0.1, 10), TypeError, "schedule"),
]


@pytest.mark.parametrize("make, exc, pattern", INVALID)
def test_invalid_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_plateau_report_rejects_non_numbers():
    with pytest.raises(TypeError, match="metric"):
        ReduceOnPlateau(0.1).report("low")


@pytest.mark.parametrize("sched", ALL, ids=lambda x: type(x).__name__)
def test_negative_step_raises(sched):
    with pytest.raises(ValueError, match="s must be >= 0"):
        sched(-1)


def test_numpy_scalars_accepted():
    np = pytest.importorskip("numpy")
    sch = StepDecay(np.float32(0.5), np.int64(2), gamma=np.float64(0.5))
    assert sch(2) == 0.25 and isinstance(sch(2), float)
    assert type(sch.state_dict()["step_size"]) is int


def test_scale_lr_for_batch():
    assert scale_lr_for_batch(0.1, 1024, 256) == approx(0.4, rel=REL)
    assert scale_lr_for_batch(0.1, 128, 256) == approx(0.05, rel=REL)


def test_every_public_name_has_a_docstring():
    for name in schedules.__all__:
        obj = getattr(schedules, name)
        assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name
    for cls in [Constant, StepDecay, MultiStep, Exponential, InverseTime, InverseSqrt,
                CosineAnnealing, CosineWarmRestarts, Linear, Polynomial, OneCycle]:
        assert "lr" in cls.__doc__ or "α" in cls.__doc__


# The schedules now form a package whose modules import only math, dataclasses,
# fastopt.rules and each other: tests/test_layout.py checks that, module by module.


# ---------------------------------------------------------------------------
# properties (hypothesis)
# ---------------------------------------------------------------------------

lrs = st.floats(min_value=1e-6, max_value=10.0)
fracs = st.floats(min_value=0.0, max_value=1.0)
horizons = st.integers(min_value=1, max_value=300)
FAST = settings(max_examples=40, deadline=None, database=None)


def _nonincreasing(xs, tol=1e-15):
    return all(b <= a * (1 + tol) + tol for a, b in zip(xs, xs[1:]))


def _nondecreasing(xs, tol=1e-15):
    return all(b >= a * (1 - tol) - tol for a, b in zip(xs, xs[1:]))


def _decaying(draw):
    lr = draw(lrs)
    T = draw(horizons)
    floor = lr * draw(fracs)
    gamma = draw(st.floats(min_value=1e-3, max_value=1.0))
    kind = draw(st.sampled_from(
        ["step", "multi", "exp", "invtime", "invsqrt", "cos", "linear", "poly", "const"]))
    if kind == "step":
        return StepDecay(lr, draw(st.integers(1, 50)), gamma), 0.0, lr
    if kind == "multi":
        ms = sorted(set(draw(st.lists(st.integers(1, 400), min_size=1, max_size=5))))
        return MultiStep(lr, ms, gamma), 0.0, lr
    if kind == "exp":
        return Exponential(lr, gamma), 0.0, lr
    if kind == "invtime":
        return InverseTime(lr, draw(st.floats(0.0, 10.0)), draw(st.floats(0.1, 3.0))), 0.0, lr
    if kind == "invsqrt":
        return InverseSqrt(lr), 0.0, lr
    if kind == "cos":
        return CosineAnnealing(lr, T, floor), floor, lr
    if kind == "linear":
        return Linear(lr, T, floor), floor, lr
    if kind == "poly":
        return Polynomial(lr, T, floor, draw(st.floats(0.1, 4.0))), floor, lr
    return Constant(lr), lr, lr


@FAST
@given(st.data())
def test_decaying_schedules_monotone_and_bounded(data):
    sched, lo, hi = _decaying(data.draw)
    xs = values(sched, range(0, 400))
    assert all(math.isfinite(x) for x in xs)
    assert _nonincreasing(xs)
    assert all(lo * (1 - 1e-12) - 1e-300 <= x <= hi * (1 + 1e-12) for x in xs)
    assert xs[0] == approx(hi, rel=1e-12)


@FAST
@given(lr=lrs, frac=fracs, period=st.integers(1, 30), mult=st.integers(1, 3))
def test_restarts_bounded_and_restart_at_cycle_starts(lr, frac, period, mult):
    sched = CosineWarmRestarts(lr, period, mult, lr * frac)
    xs = values(sched, range(300))
    lo = lr * frac
    assert all(lo * (1 - 1e-12) <= x <= lr * (1 + 1e-12) for x in xs)
    start, t = 0, period
    while start < 300:
        assert xs[start] == approx(lr, rel=1e-12)
        seg = xs[start:min(start + t, 300)]
        assert _nonincreasing(seg)
        start, t = start + t, t * mult


@FAST
@given(max_lr=lrs, T=st.integers(2, 300), pct=st.floats(0.0, 1.0),
       div=st.floats(1.0, 100.0), fdiv=st.floats(1.0, 1e5),
       anneal=st.sampled_from(["cos", "linear"]))
def test_onecycle_up_then_down_within_bounds(max_lr, T, pct, div, fdiv, anneal):
    sched = OneCycle(max_lr, T, pct, div, fdiv, anneal)
    xs = values(sched, range(T + 5))
    lo = max_lr / div / fdiv
    assert all(math.isfinite(x) for x in xs)
    assert all(lo * (1 - 1e-9) <= x <= max_lr * (1 + 1e-9) for x in xs)
    peak = xs.index(max(xs))
    assert _nondecreasing(xs[: peak + 1], 1e-12)
    assert _nonincreasing(xs[peak:], 1e-12)
    if float(pct * T) - 1 < T - 1:  # the annealing phase exists (pct_start < 1)
        assert xs[-1] == approx(lo, rel=1e-9)
    else:  # pct_start = 1: PyTorch never leaves the warm-up phase
        assert xs[-1] == max_lr


@FAST
@given(lr=lrs, W=st.integers(1, 50), frac=st.floats(1e-3, 1.0),
       kind=st.sampled_from(["linear", "exponential", "cosine"]), T=horizons)
def test_warmup_rises_to_target_then_follows(lr, W, frac, kind, T):
    after = CosineAnnealing(lr, T)
    sched = Warmup(after, W, start_lr=lr * frac, kind=kind)
    xs = values(sched, range(W + 1))
    assert _nondecreasing(xs, 1e-12)
    assert xs[0] == approx(lr * frac, rel=1e-12)
    assert all(lr * frac * (1 - 1e-12) <= x <= lr * (1 + 1e-12) for x in xs)
    for s in (W, W + 1, W + T, W + T + 7):
        assert sched(s) == after(s - W)


@FAST
@given(st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=60),
       st.integers(0, 5), st.integers(0, 3), st.sampled_from(["min", "max"]))
def test_plateau_never_increases_and_respects_floor(metrics, patience, cooldown, mode):
    sch = ReduceOnPlateau(1.0, mode=mode, factor=0.5, patience=patience, cooldown=cooldown,
                          min_lr=1e-3)
    lrs_seen = [sch.report(m) for m in metrics]
    assert _nonincreasing([1.0] + lrs_seen, 0.0)
    assert all(x >= 1e-3 for x in lrs_seen)
    # a resumed copy behaves identically
    half = len(metrics) // 2
    a = ReduceOnPlateau(1.0, mode=mode, factor=0.5, patience=patience, cooldown=cooldown,
                        min_lr=1e-3)
    for m in metrics[:half]:
        a.report(m)
    b = Schedule.from_state_dict(a.state_dict())
    assert [a.report(m) for m in metrics[half:]] == [b.report(m) for m in metrics[half:]]


# ---------------------------------------------------------------------------
# table / plot / CLI
# ---------------------------------------------------------------------------

def test_table():
    text = table(CosineAnnealing(0.1, 100), 100, every=25)
    lines = text.splitlines()
    assert lines[0].split() == ["step", "lr"]
    rows = [line.split() for line in lines[1:]]
    assert [int(r[0]) for r in rows] == [0, 25, 50, 75, 99]
    assert float(rows[0][1]) == 0.1
    assert float(rows[2][1]) == approx(0.05, rel=1e-9)
    assert float(rows[1][1]) == approx(0.08535533906, rel=1e-9)


def _hide_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def test_plot_falls_back_to_table_without_matplotlib(monkeypatch, capsys, tmp_path):
    _hide_matplotlib(monkeypatch)
    out = plot(Linear(1.0, 100), 100, path=tmp_path / "x.png")
    assert isinstance(out, str)
    assert capsys.readouterr().out == out
    assert "0.5" in out.split()
    assert not (tmp_path / "x.png").exists()


def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    fig = plot(Linear(1.0, 100), 100, path=str(path))
    assert path.stat().st_size > 0
    assert fig.axes


def _cli(argv):
    parser = argparse.ArgumentParser(prog="fastopt")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _rows(text):
    lines = text.splitlines()
    assert lines[0].split() == ["step", "lr"]
    return {int(a): float(b) for a, b in (line.split() for line in lines[1:])}


def test_cli_cosine_prints_table(capsys):
    rc = _cli(["schedule", "cosine", "--lr", "0.1", "--steps", "100", "--every", "10"])
    assert rc == 0
    rows = _rows(capsys.readouterr().out)
    assert sorted(rows) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
    assert rows[0] == 0.1
    assert rows[50] == approx(0.05, rel=1e-9)


def test_cli_cosine_with_warmup_and_min_lr(capsys):
    rc = _cli(["schedule", "cosine", "--lr", "0.1", "--steps", "110", "--min-lr", "0.01",
               "--warmup", "10", "--every", "5"])
    assert rc == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == 0.0
    assert rows[5] == approx(0.05, rel=1e-9)
    assert rows[10] == approx(0.1, rel=1e-9)
    assert rows[60] == approx(0.055, rel=1e-9)  # cosine over 100 steps after warmup


@pytest.mark.parametrize("argv, step, expected", [
    (["constant", "--lr", "0.3"], 7, 0.3),
    (["step", "--lr", "0.05", "--step-size", "30"], 30, 0.005),
    (["multistep", "--lr", "0.05", "--milestones", "30,80"], 80, 0.0005),
    (["exponential", "--lr", "0.1", "--gamma", "0.9"], 2, 0.081),
    (["inverse-time", "--lr", "0.1", "--k", "0.5", "--power", "2"], 2, 0.025),
    (["inverse-sqrt", "--lr", "1.0", "--warmup", "4"], 15, 0.5),
    (["restarts", "--lr", "0.1", "--period", "10", "--period-mult", "2"], 20, 0.05),
    (["linear", "--lr", "0.1", "--end-lr", "0.01"], 50, 0.055),
    (["polynomial", "--lr", "0.1", "--power", "2"], 50, 0.025),
    (["onecycle", "--lr", "0.1"], 29, 0.1),
    (["onecycle", "--lr", "0.1", "--anneal", "linear", "--three-phase"], 58, 0.004),
])
def test_cli_every_schedule(capsys, argv, step, expected):
    rc = _cli(["schedule"] + argv + ["--steps", "100", "--every", "1"])
    assert rc == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 100
    assert rows[step] == approx(expected, rel=1e-9)


def test_cli_default_every(capsys):
    assert _cli(["schedule", "linear", "--lr", "1", "--steps", "200"]) == 0
    assert sorted(_rows(capsys.readouterr().out))[:3] == [0, 10, 20]


@pytest.mark.parametrize("argv, pattern", [
    (["step", "--lr", "0.1", "--steps", "10"], "--step-size"),
    (["multistep", "--lr", "0.1", "--steps", "10"], "--milestones"),
    (["multistep", "--lr", "0.1", "--steps", "10", "--milestones", "a,b"], "--milestones"),
    (["exponential", "--lr", "0.1", "--steps", "10"], "--gamma"),
    (["cosine", "--lr", "0.1", "--steps", "10", "--warmup", "10"], "--warmup"),
    (["onecycle", "--lr", "0.1", "--steps", "10", "--warmup", "2"], "--warmup"),
    (["cosine", "--lr", "0.1", "--steps", "10", "--min-lr", "0.5"], "min_lr"),
    (["cosine", "--lr", "0.1", "--steps", "0"], "--steps"),
    (["cosine", "--lr", "0.1", "--steps", "10", "--every", "0"], "--every"),
])
def test_cli_errors(capsys, argv, pattern):
    assert _cli(["schedule"] + argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert pattern in captured.err


def test_cli_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    _hide_matplotlib(monkeypatch)
    out = tmp_path / "lr.png"
    rc = _cli(["schedule", "cosine", "--lr", "0.1", "--steps", "100", "--plot", str(out)])
    assert rc == 1
    captured = capsys.readouterr()
    assert _rows(captured.out)[0] == 0.1
    assert "matplotlib" in captured.err
    assert not out.exists()


def test_cli_plot_with_matplotlib(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "lr.png"
    assert _cli(["schedule", "cosine", "--lr", "0.1", "--steps", "100", "--plot", str(out)]) == 0
    assert out.stat().st_size > 0
