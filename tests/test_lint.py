"""ruff (Python) and cython-lint (the hand-written .pyx/.pxd) pass over the source
tree with the project's one configuration (pyproject.toml, line length 120)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# build outputs written by fastopt/_kernels/_codegen.py: checked through their sources
GENERATED = {"rules.pyx", "rules.pxd", "layout.pxd", "rows.pyx", "rows.pxd", "lowrules.pyx", "lowrules.pxd"}

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "pyproject.toml")),
                                reason="no source tree beside the tests")


def _tool(name):
    path = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        pytest.fail(f"{name} is not installed: pip install '.[test]' brings it")
    return path


def _cython_sources():
    out = []
    for top in ("fastopt", "tests"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            out += [os.path.join(dirpath, f) for f in files
                    if f.endswith((".pyx", ".pxd")) and f not in GENERATED]
    return sorted(out)


def test_ruff_passes():
    r = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cython_lint_passes():
    files = _cython_sources()
    assert any(f.endswith("engine.pyx") for f in files)
    r = subprocess.run([_tool("cython-lint")] + files, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
