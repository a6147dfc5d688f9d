"""Another Cython extension can ``cimport`` fastopt's kernels and run them without the
GIL: build tests/_cimport_demo/fastopt_cimport_demo.pyx in a temporary directory
against the installed .pxd files, import it, and check its results bit for bit against
the NumPy reference."""
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import fastopt
from conftest import assert_bitwise
from fastopt import kernels
from fastopt.reference import rules as ref

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(HERE, "_cimport_demo", "fastopt_cimport_demo.pyx")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
KERNELS_DIR = os.path.join(ROOT, "fastopt", "_kernels")

BUILD = r"""
import sys
from setuptools import Extension, setup
from Cython.Build import cythonize
root, kdir = sys.argv[1], sys.argv[2]
ext = Extension("fastopt_cimport_demo", ["fastopt_cimport_demo.pyx"], include_dirs=[root, kdir],
                extra_compile_args=["-O0"])
setup(name="fastopt_cimport_demo", script_args=["build_ext", "--inplace"],
      ext_modules=cythonize([ext], include_path=[root, kdir], quiet=True,
                            compiler_directives={"language_level": 3}))
"""


def _compiler():
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("Cython", reason="Cython is needed to build a cimporting extension")
    pytest.importorskip("setuptools", reason="setuptools is needed to build a cimporting extension")
    if _compiler() is None:
        pytest.skip("no C compiler available")
    for pxd in ("_types.pxd", "rules.pxd"):
        assert os.path.exists(os.path.join(KERNELS_DIR, pxd)), f"fastopt/_kernels/{pxd} is not installed"
    tmp = tmp_path_factory.mktemp("cimport_demo")
    shutil.copy(DEMO, tmp)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", BUILD, ROOT, KERNELS_DIR], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"building the cimport demo failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    so = [f for f in os.listdir(tmp) if f.startswith("fastopt_cimport_demo") and f.endswith((".so", ".pyd"))]
    assert so, f"no extension module built: {os.listdir(tmp)}"
    spec = importlib.util.spec_from_file_location("fastopt_cimport_demo", os.path.join(tmp, so[0]))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sgd_kernel_called_from_another_extension_without_gil(demo):
    rng = np.random.default_rng(3)
    n = 1001
    p = rng.standard_normal(n)
    g = rng.standard_normal(n) * 10.0 ** rng.uniform(-5, 5, n)
    want, start = p.copy(), p.copy()
    held = demo.sgd(p, g, 0.037)
    ref.sgd(want, g, t=1, lr=0.037)
    assert held is False, "the kernel ran with the GIL held"
    assert_bitwise(p, want, "sgd through cimport")
    assert np.all(p != start)


def test_empty_array(demo):
    p = np.zeros(0)
    assert demo.sgd(p, np.zeros(0), 0.1) is False


@pytest.mark.parametrize("name", ["adam", "nadam", "rmsprop_centered_momentum", "lion"])
def test_any_rule_through_rule_entry(demo, name):
    """rule_entry(index): the per-step scalars and the float64 kernel of a rule, both
    run by the other extension with the GIL released, equal fastopt.kernels and the
    reference bit for bit over a few steps."""
    from fastopt._kernels.rules import RULE_INDEX
    from fastopt.rules import BY_NAME
    from conftest import make_state, reference_step
    rule = BY_NAME[name]
    hyper = {h.name: h.default for h in rule.hyper}
    if "momentum" in hyper:
        hyper["momentum"] = 0.9
    lr, n = 0.01, 257
    rng = np.random.default_rng(9)
    p = rng.standard_normal(n)
    p_ref, p_k = p.copy(), p.copy()
    st = make_state(rule, n, np.float64, hyper)
    st_ref, st_k = [s.copy() for s in st], [s.copy() for s in st]
    ss = [v for _, v in rule.scalar_state]
    ss_ref = {k: v for k, v in rule.scalar_state}
    ss_k = dict(ss_ref)
    for t in range(1, 6):
        g = rng.standard_normal(n)
        ss, held = demo.rule_step(RULE_INDEX[name], p, g, st, [lr] + [hyper[h.name] for h in rule.hyper],
                                  float(t), ss)
        assert held is False
        ss_ref = reference_step(rule, p_ref, g, st_ref, t, lr, hyper, {}, ss_ref)
        out = getattr(kernels, name)(p_k, g, *st_k, step=t, lr=lr, **hyper, **ss_k)
        if rule.scalar_state:
            ss_k = {rule.scalar_state[0][0]: out}
            assert ss == list(ss_ref.values()) == [out]
        assert_bitwise(p, p_ref, f"{name} step {t}")
        assert_bitwise(p, p_k, f"{name} step {t}")
        for a, b in zip(st, st_ref):
            assert_bitwise(a, b, f"{name} state, step {t}")
