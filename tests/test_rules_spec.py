"""The rule declarations (fastopt.rules): a mistake in a rule is reported at the rule's
own file and line when the rule is defined; everything else about a rule (classes,
low-level functions, references, bench rows) is derived from the one declaration;
the generator casts literals, annotates kernels and writes the layout once."""
import inspect
import os
import re

import numpy as np
import pytest

import fastopt
import fastopt.reference as ref
from fastopt import kernels
from fastopt._kernels import _codegen
from fastopt.reference.engine import reference_function
from fastopt.rules import BY_NAME, CLASSES, RULES, ClassSpec, Hyper, Rule, RuleError, bench_rows

HERE = os.path.basename(__file__)


def line_of(text):
    """The first line of this file that holds ``text``."""
    with open(__file__) as f:
        lines = f.read().splitlines()
    return next(k for k, line in enumerate(lines, 1) if text in line)


def adam_like(**kw):
    args = dict(name="typo", doc="", state=("exp_avg", "exp_avg_sq"), hyper=(Hyper("beta1", 0.9),),
                scalars="b1 = beta1\nomb1 = 1.0 - beta1\n", outputs=("b1", "omb1"),
                body="exp_avg = b1 * exp_avg + omb1 * g\nexp_avg_sq = exp_avg_sq + g * g\n"
                     "p = p - lr * exp_avg / sqrt(exp_avg_sq)\n")
    args.update(kw)
    return Rule(**args)


# --- 1. mistakes are reported at the rule's file and line ------------------------------------
def test_unknown_name_in_body_names_file_and_line():
    with pytest.raises(RuleError) as e:
        Rule(name="typo", doc="", state=("exp_avg_sq",), outputs=(), body="""
exp_avg_sq = exp_avg_sq + g * g
p = p - lr * g / sqrt(exp_avg_sqq)
""")
    line = line_of("p = p - lr * g / sqrt(exp_avg_sqq)")
    msg = str(e.value)
    assert msg.startswith(f"tests{os.sep}{HERE}:{line}: rule typo: ") or msg.startswith(f"{__file__}:{line}:"), msg
    assert "exp_avg_sqq" in msg


def test_misspelt_state_assignment_is_caught():
    # the misspelt name would have been a silent temporary, the state never updated
    with pytest.raises(RuleError, match=rf"{re.escape(HERE)}:\d+: rule typo: body never assigns 'exp_avg_sq'"):
        adam_like(body="exp_avg = b1 * exp_avg + omb1 * g\nexp_avg_sqq = exp_avg_sq + g * g\n"
                       "p = p - lr * exp_avg / sqrt(exp_avg_sq)\n")


def test_unread_temporary_is_caught():
    with pytest.raises(RuleError, match="'unused', which nothing reads"):
        adam_like(body="exp_avg = b1 * exp_avg + omb1 * g\nexp_avg_sq = exp_avg_sq + g * g\nunused = g\n"
                       "p = p - lr * exp_avg / sqrt(exp_avg_sq)\n")


def test_scalars_typo_and_missing_output():
    with pytest.raises(RuleError, match=rf"{re.escape(HERE)}:\d+: rule typo: scalars reads unknown name 'beta'"):
        adam_like(scalars="b1 = beta\nomb1 = 1.0 - beta1\n")
    with pytest.raises(RuleError, match="scalars never assigns 'omb1'"):
        adam_like(scalars="b1 = beta1\n")


def test_read_before_assignment_and_readonly_names():
    with pytest.raises(RuleError, match="'tmp' .assigned only further down"):
        adam_like(body="exp_avg = tmp\ntmp = g\nexp_avg_sq = exp_avg_sq + g * g\np = p - lr * exp_avg\n")
    with pytest.raises(RuleError, match="assigns 'g', which it may only read"):
        adam_like(body="g = g * 2.0\nexp_avg = b1 * exp_avg + omb1 * g\nexp_avg_sq = exp_avg_sq + g * g\n"
                       "p = p - lr * exp_avg\n")
    with pytest.raises(RuleError, match=r"calls tanh\(\); only sqrt, fabs, exp, log"):
        adam_like(body="exp_avg = tanh(g)\nexp_avg_sq = exp_avg_sq + g * g\np = p - lr * exp_avg\n")


BODY_END = "exp_avg = b1 * exp_avg + omb1 * g\nexp_avg_sq = exp_avg_sq + g * g\n"


@pytest.mark.parametrize("line, match", [
    ("p = p - lr * g * (1 / 3)", "integer literal 1 in arithmetic; write 1.0"),
    ("p = p - lr * g * (2 ** -1)", "integer literal 2"),
    ("p = p - lr * (g % 3.0)", "uses '%'"),
    ("p = p - lr * (g // 2.0)", "uses '//'"),
    ("p = p - lr * g * 1e-50", "float32 kernels cannot hold"),
    ("p = p - lr * g * 1e39", "float32 kernels cannot hold"),
    ("p = p - lr * g * sigma", "unknown name 'sigma'"),
])
def test_constructs_whose_c_meaning_differs_are_refused(line, match):
    # each compiled: C's truncating 1 / 3 (0), fmod's sign, a float32 underflow, or a
    # double (sigma) promoting a float32 kernel would silently differ from the reference
    with pytest.raises(RuleError, match=re.escape(match)):
        adam_like(body=BODY_END + line + "\n")


def test_a_statement_over_several_lines_is_refused():
    with pytest.raises(RuleError, match="one line"):
        adam_like(body=BODY_END + "p = p - lr * \\\n    exp_avg / sqrt(exp_avg_sq)\n")


@pytest.mark.parametrize("kw, match", [
    (dict(state=("_m", "exp_avg_sq")), "'_m' is not allowed"),
    (dict(state=("exp_avg", "exp_avg")), "state names repeat"),
    (dict(hyper=(Hyper("double", 0.9),)), "'double' is not allowed"),
    (dict(outputs=("b1", "omb1", "wd")), "the kernel's own names"),
    (dict(state_init={"exp_avg": "nope"}), "state_init maps 'exp_avg' to 'nope'"),
])
def test_names_that_would_not_compile_are_refused(kw, match):
    with pytest.raises(RuleError, match=re.escape(match)):
        adam_like(**kw)


def test_names_the_generator_used_to_take_are_free():
    # a first moment called m, a temporary called i: the generator's own names start with _
    rule = adam_like(state=("m", "exp_avg_sq"), body="m = b1 * m + omb1 * g\nexp_avg_sq = exp_avg_sq + g * g\n"
                                                    "i = sqrt (exp_avg_sq)\np = p - lr * m / i\n")
    from fastopt.rules import COMMON_SCALARS, FUNCTIONS
    text = _codegen.render_kernel(rule, tuple(COMMON_SCALARS), _codegen.SHIPPED[0], FUNCTIONS)
    assert "i = sqrtf (exp_avg_sq)" in text          # "sqrt (" is a call too: float32 there
    assert "cdef float p, g, m, exp_avg_sq, i" in text


def test_the_line_is_in_the_rule_file():
    # a multi-line body: the error points at the offending line, not the Rule( call
    with pytest.raises(RuleError) as e:
        Rule(
            name="typo",
            doc="",
            state=("m",),
            body="""
m = m + g
p = p - lr * mm
""",
        )
    line = line_of("p = p - lr * mm")
    assert f"{HERE}:{line}:" in str(e.value)


def test_every_shipped_rule_knows_where_it_is_defined():
    for rule in RULES:
        path, line = rule.where.rsplit(":", 1)
        assert path.replace(os.sep, "/").startswith("fastopt/rules/") and int(line) > 0, rule.where
        assert rule.body_origins, rule.name


# --- 2. the generator: literals, annotations, layout -------------------------------------
def test_float_literals_take_the_kernel_precision():
    assert _codegen.cast_literals("sgn = -1.0 if c < 0.0 else sgn", "float") == \
        "sgn = -<float>1.0 if c < <float>0.0 else sgn"
    assert _codegen.cast_literals("x = 2 * y + 1e-3", "float") == "x = 2 * y + <float>1e-3"
    assert _codegen.cast_literals("x = 1.0", "double") == "x = 1.0"


def test_generated_kernels_point_back_to_the_rules():
    mod = _codegen.load_rules()
    pyx, pxd = _codegen.render(mod)
    for rule in mod.RULES:
        assert f"# rule {rule.name}: {rule.where}\ncdef void {rule.name}_f32(" in pyx
    assert re.search(r"sgn = <float>1\.0 if c > <float>0\.0 else sgn  # adam\.py:\d+", pyx)
    assert "ACCESSES_ADAM = 7" in pxd
    layout = _codegen.render_layout(mod)
    assert "N_COMMON = 10" in layout and "C_SIGN = 0" in layout and "C_LR = 7" in layout and "C_L1_THR = 9" in layout


# --- 3. everything else is derived from the declarations ----------------------------------
OPTIONS = "clip_norm=None, grad_noise=None, seed=0, nonfinite='ignore', sparse='lazy', precision=None"


def test_classes_are_derived_with_real_signatures():
    assert [c.__name__ for c in fastopt.optim.ALL] == [c.name for c in CLASSES]
    for cls in fastopt.optim.ALL:
        assert getattr(fastopt, cls.__name__) is cls and cls.__name__ in fastopt.__all__
        assert issubclass(getattr(ref, cls.__name__), cls)
    sig = inspect.signature(fastopt.Adam)
    assert str(sig) == ("(params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, amsgrad=False, *, "
                        "maximize=False, decoupled_weight_decay=False, clip_value=None, l1=0.0, l1_coupled=False, "
                        f"{OPTIONS})")
    assert str(inspect.signature(fastopt.AdamW)).startswith(
        "(params, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False, *, maximize=False, "
        "clip_value=None")
    assert str(inspect.signature(fastopt.AdaBelief)) == (
        "(params, lr=0.001, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, *, variant='pytorch', "
        f"maximize=False, decoupled_weight_decay=False, clip_value=None, l1=0.0, l1_coupled=False, {OPTIONS})")
    # torch.optim.NAdam and RAdam take decoupled_weight_decay positionally
    assert "momentum_decay=0.004, decoupled_weight_decay=False, *" in str(inspect.signature(fastopt.NAdam))
    assert "weight_decay=0.0, decoupled_weight_decay=False, *" in str(inspect.signature(fastopt.RAdam))
    with pytest.raises(TypeError, match=r"^Adam.__init__\(\) got an unexpected keyword argument 'clip'"):
        fastopt.Adam([np.zeros(2)], clip=1.0)
    assert issubclass(fastopt.AdamW, fastopt.Adam) and issubclass(fastopt.Nesterov, fastopt.SGD)
    assert "√" in fastopt.Adam.__doc__


def test_low_level_lr_defaults_match_the_classes():
    # NAdam's had drifted (1e-3 vs the class's 2e-3)
    for spec in CLASSES:
        defaults = spec.signature_defaults(BY_NAME)
        rule = spec.select(defaults, BY_NAME)
        assert inspect.signature(getattr(kernels, rule.name)).parameters["lr"].default == \
            inspect.signature(getattr(fastopt, spec.name)).parameters["lr"].default, spec.name
    assert inspect.signature(kernels.nadam).parameters["lr"].default == 2e-3


def test_every_rule_has_a_reference_kernel_and_class():
    run_by_classes = {r for c in CLASSES for r, _ in c.rules}
    for rule in RULES:
        assert callable(reference_function(rule)) and callable(getattr(kernels, rule.name))
        assert rule.name in run_by_classes
        assert getattr(ref.rules, rule.name, None) is not None or isinstance(rule.reference, str)


def test_bench_rows():
    rows = bench_rows()
    assert [r["key"] for r in rows][:13] == ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam",
                                             "adamw", "amsgrad", "nadam", "adamax", "radam", "lion"]
    assert {r["key"]: r["rule"] for r in rows}["amsgrad"] == "adam_amsgrad"
    assert {r["key"]: r for r in rows}["adabelief"] == dict(key="adabelief", cls="AdaBelief", rule="adabelief",
                                                            kwargs={}, torch_cls=None, torch_kwargs={})


def test_variant_choice_errors():
    with pytest.raises(ValueError, match="variant must be 'pytorch' or 'optax', got 'keras'"):
        fastopt.AdaBelief([np.zeros(3)], variant="keras")
    assert fastopt.AdaBelief([np.zeros(3)], variant="optax")._group_rule[0].name == "adabelief_optax"


def test_classspec_refuses_a_key_without_default():
    spec = ClassSpec(name="X", doc="", rules=(("sgd", {}),), args=("lr", "nonsense"))
    with pytest.raises(ValueError, match="no default for 'nonsense'"):
        spec.signature_defaults(BY_NAME)


# --- 4. AdaBelief, the rule added as one file --------------------------------------------
def test_adabelief_first_steps_by_hand():
    """Two steps of adabelief-pytorch's update on float64 Python numbers."""
    p, g1, g2, lr, b1, b2, eps = 1.0, 0.5, -0.25, 1e-2, 0.9, 0.999, 1e-16
    w, m, s = np.array([p]), np.zeros(1), np.zeros(1)
    m_, s_ = 0.0, 0.0
    for t, g in ((1, g1), (2, g2)):
        kernels.adabelief(w, np.array([g]), m, s, step=t, lr=lr)
        m_ = b1 * m_ + (1 - b1) * g
        s_ = b2 * s_ + (1 - b2) * (g - m_) ** 2 + eps
        p -= lr / (1 - b1 ** t) * m_ / (s_ ** 0.5 / (1 - b2 ** t) ** 0.5 + eps)
        assert m[0] == pytest.approx(m_, rel=1e-15) and s[0] == pytest.approx(s_, rel=1e-15)
        assert w[0] == pytest.approx(p, rel=1e-15)
