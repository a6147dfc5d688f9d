"""Each schedule kind declares its arguments once (``arg`` fields); the constructor,
``state_dict``, ``repr`` and the registry are derived from that declaration."""
import dataclasses
import inspect
import json

import pytest

from fastopt import schedules as S
from fastopt.schedules._base import _REGISTRY

KINDS = sorted(_REGISTRY.items())
EXAMPLES = {
    "Constant": S.Constant(0.1),
    "StepDecay": S.StepDecay(0.05, 30),
    "MultiStep": S.MultiStep(0.05, [30, 80]),
    "Exponential": S.Exponential(0.1, 0.9),
    "InverseTime": S.InverseTime(0.1, 0.5, 2.0),
    "InverseSqrt": S.InverseSqrt(1.0, 4),
    "CosineAnnealing": S.CosineAnnealing(0.1, 100, 0.01),
    "CosineWarmRestarts": S.CosineWarmRestarts(0.1, 10, 2, 0.001),
    "Linear": S.Linear(0.1, 100, 0.01),
    "Polynomial": S.Polynomial(0.1, 100, 0.01, 2.0),
    "OneCycle": S.OneCycle(0.1, 100, three_phase=True, anneal="linear"),
    "Warmup": S.Warmup(S.CosineAnnealing(0.1, 90), 10, start_lr=0.01, kind="cosine"),
    "Join": S.Join([S.Constant(1.0), S.Linear(1.0, 10)], [5]),
    "ReduceOnPlateau": S.ReduceOnPlateau(0.1),
}


def test_every_public_kind_is_registered_and_has_an_example():
    public = {n for n in S.__all__ if isinstance(getattr(S, n), type) and n != "Schedule"}
    assert set(_REGISTRY) == public == set(EXAMPLES)


@pytest.mark.parametrize("name, cls", KINDS)
def test_constructor_state_dict_and_repr_follow_the_declaration(name, cls):
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == list(inspect.signature(cls).parameters)
    sched = EXAMPLES[name]
    keys = [f.metadata["key"] or f.name for f in fields]
    assert list(sched.state_dict()) == ["kind"] + keys + list(cls._state_checks)
    # repr is the constructor call that rebuilds the schedule
    assert eval(repr(sched), vars(S)).state_dict() == sched.state_dict()


@pytest.mark.parametrize("name, cls", KINDS)
def test_schedules_stay_hashable_identity_objects(name, cls):
    a = EXAMPLES[name]
    b = S.Schedule.from_state_dict(a.state_dict())
    assert a != b and len({a, b}) == 2


# state dicts written by the single-file module (a checkpoint saved before the split)
SAVED = [
    ('{"kind": "Warmup", "schedule": {"kind": "CosineAnnealing", "lr": 0.1, "total_steps": 90, "min_lr": 0.0}, '
     '"warmup_steps": 10, "start_lr": 0.01, "warmup_kind": "cosine"}', {1: 0.012202456766718078, 33: 0.08473291852294987}),
    ('{"kind": "Join", "schedules": [{"kind": "Warmup", "schedule": {"kind": "Linear", "lr": 1.0, "total_steps": 10, '
     '"end_lr": 0.0}, "warmup_steps": 3, "start_lr": 0.0, "warmup_kind": "linear"}, {"kind": "OneCycle", "max_lr": 0.5, '
     '"total_steps": 20, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 10000.0, "anneal": "cos", '
     '"three_phase": false}], "boundaries": [13]}', {1: 0.3333333333333333, 20: 0.47524231600673683}),
    ('{"kind": "MultiStep", "lr": 0.1, "milestones": [3, 60, 90], "gamma": 0.3}', {60: 0.009}),
    ('{"kind": "ReduceOnPlateau", "lr": 1.0, "mode": "min", "factor": 0.5, "patience": 2, "threshold": 0.01, '
     '"threshold_mode": "rel", "cooldown": 2, "min_lr": 0.0, "eps": 1e-08, "best": 2.0, "num_bad_epochs": 0, '
     '"cooldown_counter": 0, "current_lr": 0.125, "last_epoch": 17}', {0: 0.125}),
]


@pytest.mark.parametrize("saved, expected", SAVED)
def test_state_dicts_saved_before_the_split_load_and_save_back_unchanged(saved, expected):
    sd = json.loads(saved)
    sched = S.Schedule.from_state_dict(sd)
    assert {s: sched(s) for s in expected} == expected
    assert json.dumps(sched.state_dict()) == saved


def test_negative_step_is_checked_once_in_the_base_class():
    # kinds implement _value(s) for s >= 0 only; the base __call__ guards it
    for name, cls in KINDS:
        assert "__call__" not in vars(cls), name
    with pytest.raises(ValueError, match=r"step s must be >= 0, got -3"):
        S.CosineWarmRestarts(0.1, 10).cycle(-3)
