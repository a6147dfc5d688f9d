"""Exact values of the schedules, recorded from the single-file ``fastopt/schedules.py``
before it became a package: the split must not change a single bit of any value.

``tests/test_schedules.py`` checks values against hand-computed numbers with a relative
tolerance; these are ``==`` so that a reordered expression (``a * b / c`` versus
``a * (b / c)``) is caught too."""

import pytest

from fastopt import schedules as S

GOLDEN = [
    ('S.StepDecay(0.05, 7, 0.7)', {0: 0.05, 6: 0.05, 7: 0.034999999999999996, 20: 0.024499999999999997, 1000: 5.0453545003758944e-24}),
    ('S.MultiStep(0.1, [3, 60, 90], 0.3)', {2: 0.1, 3: 0.03, 60: 0.009, 90: 0.0026999999999999997}),
    ('S.Exponential(0.1, 0.9)', {1: 0.09000000000000001, 10: 0.03486784401000001, 137: 5.385472259508681e-08}),
    ('S.InverseTime(0.1, 0.3, 1.7)', {0: 0.1, 1: 0.06401714489020875, 33: 0.0017233558133916652}),
    ('S.InverseSqrt(0.7, 4)', {0: 0.175, 2: 0.5249999999999999, 4: 0.626099033699941, 99: 0.13999999999999999}),
    ('S.CosineAnnealing(0.3, 7, 0.001)', {1: 0.28519484575141163, 3: 0.18376687962646898, 6: 0.015805154248588353, 7: 0.001}),
    ('S.CosineWarmRestarts(0.1, 10, 2, 0.001)', {3: 0.07959536998847742, 10: 0.1, 29: 0.001609427140540686, 69: 0.0011525919802101658, 71: 0.09996183729391579}),
    ('S.Linear(0.1, 100, 0.01)', {1: 0.09910000000000001, 33: 0.0703, 99: 0.010899999999999993}),
    ('S.Polynomial(0.1, 100, 0.01, 0.5)', {1: 0.09954886933959581, 33: 0.08366817494685205, 99: 0.019000000000000003}),
    ('S.OneCycle(0.5, 13, 0.4, 10.0, 100.0)', {0: 0.04999999999999999, 2: 0.2581857289430545, 5: 0.4871469763762996, 9: 0.1616874294611267, 12: 0.0005}),
    ("S.OneCycle(0.1, 100, three_phase=True, anneal='linear')", {10: 0.037103448275862067, 40: 0.06358620689655173, 70: 0.002829385365853659, 99: 4.0000000000022656e-07}),
    ("S.Warmup(S.CosineAnnealing(0.1, 90), 10, start_lr=0.01, kind='cosine')", {1: 0.012202456766718078, 7: 0.08145033635316129, 10: 0.1, 33: 0.08473291852294987}),
    ("S.Warmup(1.0, 5, start_lr=0.01, kind='exponential')", {1: 0.0251188643150958, 3: 0.15848931924611134}),
    ('S.Join([S.Warmup(S.Linear(1.0, 10), 3), S.OneCycle(0.5, 20)], [13])', {1: 0.3333333333333333, 5: 0.8, 13: 0.020000000000000018, 20: 0.47524231600673683, 40: 2e-06}),
]


@pytest.mark.parametrize("src, expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_values_are_bit_identical_to_the_single_file_module(src, expected):
    sched = eval(src, {"S": S})
    assert {s: sched(s) for s in expected} == expected
    clone = S.Schedule.from_state_dict(sched.state_dict())
    assert {s: clone(s) for s in expected} == expected


def test_plateau_sequence_is_unchanged():
    sch = S.ReduceOnPlateau(1.0, factor=0.5, patience=2, cooldown=2, threshold=0.01)
    lrs = [sch.report(m) for m in [5, 4, 4, 4, 4, 3.9, 3.95, 4, 4, 4, 4, 2, 2, 2, float("nan"), 2, 2]]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125]
