"""Build of fastopt's compiled kernels.

* The float32/float64 kernels are generated from ``fastopt/rules`` first.
* OpenMP is used when a test program compiles and links with it; otherwise the build
  still succeeds and every step runs serially (``python -m fastopt info`` says so).
* ``-O3 -fno-math-errno`` lets sqrt vectorise; ``-ffp-contract=off`` keeps every
  product and sum separately rounded, so kernels match the NumPy reference bit for bit.
* ``-march=native`` tunes for the build machine unless ``FASTOPT_PORTABLE=1``.
* ``--param=vect-max-version-for-alias-checks=64`` lets loops over many buffers vectorise.
* ``FASTOPT_VEC_REPORT=1`` prints GCC's vectorisation report (``-fopt-info-vec``).
"""
import os
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fastopt", "_kernels"))
import _codegen  # noqa: E402
import _rowcodegen  # noqa: E402

KERNELS = ["rules", "lowrules", "rows", "sparse", "rowwise", "driver", "engine", "stream", "vecops", "meanred",
           "hogwild"]


def compiler_accepts(flags, link_flags=()):
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n" \
        if "-fopenmp" in flags else "int main(void){return 0;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc + list(flags) + [c, "-o", os.path.join(tmp, "t")] + list(link_flags),
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


def build_flags():
    cflags = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
    portable = os.environ.get("FASTOPT_PORTABLE", "") not in ("", "0")
    if not portable and compiler_accepts(["-march=native"]):
        cflags.append("-march=native")
    # GCC does not take the kernels' restrict-qualified locals as proof that buffers do
    # not overlap: it versions each loop on run-time overlap checks, and gives up past
    # 10 pairs of them (a mixed-precision kernel of a three-state rule needs 15)
    if compiler_accepts(["--param=vect-max-version-for-alias-checks=64"]):
        cflags.append("--param=vect-max-version-for-alias-checks=64")
    if os.environ.get("FASTOPT_VEC_REPORT", "") not in ("", "0"):
        cflags.append("-fopt-info-vec-optimized")
    openmp = os.environ.get("FASTOPT_NO_OPENMP", "") in ("", "0") and compiler_accepts(["-fopenmp"], ["-fopenmp"])
    if openmp:
        print("fastopt: building with OpenMP")
    else:
        print("fastopt: WARNING: the compiler does not accept OpenMP; building serial kernels", file=sys.stderr)
    return cflags, openmp, portable


def write_build_info(cflags, openmp, portable):
    text = ("# Written by setup.py at build time.\n"
            f"OPENMP = {openmp!r}\nCFLAGS = {' '.join(cflags + (['-fopenmp'] if openmp else []))!r}\n"
            f"PORTABLE = {portable!r}\n")
    with open(os.path.join(HERE, "fastopt", "_build_info.py"), "w") as f:
        f.write(text)


def extensions():
    import numpy
    from Cython.Build import cythonize

    _codegen.main()
    _rowcodegen.main()
    cflags, openmp, portable = build_flags()
    write_build_info(cflags, openmp, portable)
    omp = ["-fopenmp"] if openmp else []
    exts = [Extension(f"fastopt._kernels.{name}", [f"fastopt/_kernels/{name}.pyx"],
                      include_dirs=[numpy.get_include(), "fastopt/_kernels"],
                      define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
                      extra_compile_args=cflags + omp, extra_link_args=omp)
            for name in KERNELS]
    return cythonize(exts, compiler_directives={"language_level": 3}, quiet=True)


setup(ext_modules=extensions())
