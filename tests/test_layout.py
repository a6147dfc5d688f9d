"""The library does not import its command line or its benchmark harness.

``fastopt.bench*``, ``fastopt.cli*`` and ``fastopt.__main__`` may import the library;
nothing else may import them: ``import fastopt`` must stay free of argparse front
ends and of the timing harness (and of whatever those import later on).
"""
import ast
import importlib.util
import os
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import fastopt

PACKAGE = pathlib.Path(fastopt.__file__).resolve().parent
FORBIDDEN = ("fastopt.bench", "fastopt.cli")
EXEMPT = FORBIDDEN + ("fastopt.__main__",)

# (file relative to the package, module it imports): deliberate exceptions.
ALLOWED = {
    # ``from fastopt.schedules import add_cli`` predates fastopt.cli; the shim imports
    # the command only when called (the subprocess test shows import time stays clean)
    ("schedules/__init__.py", "fastopt.cli.schedule"),
}


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def library_modules():
    """Every module of the package outside ``EXEMPT``, found without importing anything
    (``pkgutil.walk_packages`` would import the exempt packages to walk into them)."""
    found = ["fastopt"]

    def walk(path, prefix):
        for info in pkgutil.iter_modules([str(path)], prefix):
            if _under(info.name, EXEMPT):
                continue
            found.append(info.name)
            if info.ispkg:
                walk(path / info.name.rsplit(".", 1)[1], info.name + ".")
    walk(PACKAGE, "fastopt.")
    return sorted(found)


def library_files():
    """``(path relative to the package, module name)`` of every library ``.py`` file."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        parts = ("fastopt",) + rel.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not _under(name, EXEMPT):
            out.append((rel.as_posix(), name))
    return out


def imported_modules(source, module, is_package):
    """Every module ``source`` imports anywhere (functions included), as absolute names:
    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule), relative
    imports are resolved against ``module``, and ``importlib.import_module("x")`` /
    ``__import__("x")`` with a literal name count too."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            names.append(target)
            names += [f"{target}.{a.name}" for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


def violations(source, rel, module):
    hits = [n for n in imported_modules(source, module, rel.endswith("__init__.py")) if _under(n, FORBIDDEN)]
    allowed = tuple(target for r, target in ALLOWED if r == rel)
    return sorted({n for n in hits if not _under(n, allowed)})


def test_the_walk_finds_the_library_and_skips_the_exempt():
    mods = library_modules()
    assert {"fastopt", "fastopt.schedules", "fastopt.optim.base", "fastopt.rules._spec",
            "fastopt._kernels.driver"} <= set(mods)
    assert not [m for m in mods if _under(m, EXEMPT)]
    files = dict(library_files())
    assert "schedules/_base.py" in files and "__main__.py" not in files
    assert not [f for f in files if f.startswith(("cli/", "bench"))]


def test_no_library_file_imports_the_cli_or_the_bench():
    bad = {}
    for rel, module in library_files():
        found = violations((PACKAGE / rel).read_text(encoding="utf-8"), rel, module)
        if found:
            bad[rel] = found
    assert not bad, f"library modules import the command line or the benchmark: {bad}"


def test_allowed_exceptions_still_exist():
    # a stale entry would silently allow a future import
    for rel, target in ALLOWED:
        module = dict(library_files())[rel]
        assert target in imported_modules((PACKAGE / rel).read_text(encoding="utf-8"), module,
                                          rel.endswith("__init__.py")), (rel, target)


@pytest.mark.parametrize("source", [
    "import fastopt.bench",
    "import fastopt.cli.schedule as s",
    "from fastopt import bench",
    "from fastopt import cli",
    "from fastopt.bench import run",
    "from .. import bench",
    "from ..cli import main",
    "def f():\n    from fastopt import bench\n",
    "import importlib\nimportlib.import_module('fastopt.cli')",
])
def test_the_static_check_catches_every_spelling(source):
    assert violations(source, "optim/base.py", "fastopt.optim.base")


@pytest.mark.parametrize("source", [
    "import fastopt.benchmarks",          # a prefix of the name is not the module
    "from fastopt import client",
    "from fastopt.schedules import add_cli",
    "from . import bench_helpers",
])
def test_the_static_check_has_no_false_alarms(source):
    assert not violations(source, "optim/base.py", "fastopt.optim.base")


PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("\\n".join(sorted(m for m in sys.modules
                        if any(m == p or m.startswith(p + ".") for p in {forbidden!r}))))
"""


def test_importing_every_library_module_loads_neither_cli_nor_bench(tmp_path):
    # a fresh interpreter: this one has long imported both (the tests themselves do)
    home = str(PACKAGE.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]))
    mods = library_modules()
    # modules that need an optional dependency (their own tests check the message)
    for dependency, package in (("torch", "fastopt.torch"), ("mpi4py", "fastopt.distributed")):
        if importlib.util.find_spec(dependency) is None:
            mods = [m for m in mods if not _under(m, (package,))]
    out = subprocess.run([sys.executable, "-P", "-c", PROBE.format(forbidden=FORBIDDEN), *mods],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], f"importing {len(mods)} library modules loaded {out.stdout.split()}"


def test_schedules_import_only_math_dataclasses_rules_and_themselves():
    # what test_schedules.py::test_module_imports_only_math meant for the single file:
    # a schedule is plain float arithmetic, so importing one costs no NumPy, no argparse
    allowed = {"math", "dataclasses", "fastopt.rules"}
    for path in sorted((PACKAGE / "schedules").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." if node.level else node.module]
            else:
                continue
            assert set(names) <= allowed | {"."}, (path.name, names)
