"""Which rule kernels does the C compiler vectorise?

Regenerates the kernels from the rules, compiles them with this build's flags plus
GCC's ``-fopt-info-vec-optimized`` and reports, for every kernel and precision, whether
its element loops without gradient noise — the plain one, and the L1 one, reported as
``<kernel>+l1`` — were vectorised. Needs Cython and
gcc; used by ``python -m fastopt vecreport`` and the test suite.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FLAGS = ("-O3 -fno-math-errno -ffp-contract=off -march=native --param=vect-max-version-for-alias-checks=64 "
                 "-fopenmp")


def _build_flags():
    try:
        from fastopt import _build_info
        return _build_info.CFLAGS
    except ImportError:
        return DEFAULT_FLAGS


def _toolchain(cc, flags):
    """The C compiler (``cc``, ``$CC`` or gcc; refused when absent) and the flags as a list
    (this build's unless given)."""
    cc = cc or os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler '{cc}'")
    return cc, (flags or _build_flags()).split()


def _kernel_sources(pyx):
    """Every .pxd and header of the kernels, and the one .pyx a report compiles."""
    return [name for name in os.listdir(HERE) if name.endswith((".pxd", ".h"))] + [pyx]


def _scratch_package(tmp, names):
    """``fastopt/_kernels`` under ``tmp`` (so that cimports resolve), holding copies of
    ``names`` from the kernels' directory; returns its path."""
    pkg = os.path.join(tmp, "fastopt", "_kernels")
    os.makedirs(pkg)
    for name in names:
        shutil.copy(os.path.join(HERE, name), pkg)
    for init in (os.path.join(tmp, "fastopt", "__init__.py"), os.path.join(pkg, "__init__.py")):
        open(init, "w").close()
    return pkg


def _cython(pyx, tmp, c_file, what):
    from Cython.Compiler.Main import CompilationOptions, compile as cython_compile

    options = CompilationOptions(include_path=[tmp], output_file=c_file, language_level=3)
    if cython_compile(pyx, options).num_errors:
        raise RuntimeError(f"Cython failed on {what}")


def _gcc(cc, flags, extra, c_file, output, pkg, what):
    """Compile ``c_file`` with ``flags`` and the report's ``extra`` options; returns the
    compiler's diagnostics (where GCC's optimisation reports go)."""
    import numpy

    cmd = [cc, *flags, "-fPIC", *extra, c_file, "-o", output, "-I" + sysconfig.get_paths()["include"],
           "-I" + pkg, "-I" + numpy.get_include()]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(output))
    if out.returncode:
        raise RuntimeError(f"compiling {what} failed:\n{out.stderr[-2000:]}")
    return out.stderr


def _optimized(stderr, source, message=r"loop vectorized"):
    """Line numbers of ``source`` that GCC reported ``optimized: <message>`` for."""
    return {int(m.group(1))
            for m in re.finditer(re.escape(source) + r":(\d+):\d+: optimized: " + message, stderr)}


def _c_loops(c_lines, pyx_name, wanted):
    """``(pyx line, C line)`` of every C ``for`` loop Cython wrote for one of the ``wanted``
    lines of ``pyx_name`` (a fused function's loop appears once per specialisation, in
    order), read from the source-line comments Cython puts before each statement."""
    current = None
    for number, line in enumerate(c_lines, 1):
        m = re.search(re.escape(pyx_name) + r'":(\d+)', line)
        if m:
            current = int(m.group(1))
        elif current in wanted and line.lstrip().startswith("for ("):
            yield current, number


def _loops_in(pyx, function, loop):
    """pyx lines of the loop statement ``loop`` inside the ``cdef`` function whose
    definition starts with ``function``."""
    lines, inside = set(), False
    for number, line in enumerate(open(os.path.join(HERE, pyx)).read().splitlines(), 1):
        if line.startswith("cdef "):
            inside = line.startswith(function)
        elif inside and line.strip() == loop:
            lines.add(number)
    return lines


def _named_status(c_lines, pyx_name, loops, vectorised):
    """``{loop name: vectorised}`` for the loops ``{pyx line: name}``: a name counts when
    any of its C loops vectorised, and is False when Cython wrote none."""
    status = {}
    for pyx_line, number in _c_loops(c_lines, pyx_name, loops):
        name = loops[pyx_line]
        status[name] = status.get(name, False) or number in vectorised
    for name in loops.values():
        status.setdefault(name, False)
    return status


def _plain_loops(pyx_lines):
    """pyx line number of each kernel's noise-free element loops -> kernel name
    (``<kernel>+l1`` for the loop with the L1 option)."""
    loops, kernel = {}, None
    for number, line in enumerate(pyx_lines, 1):
        if line.startswith("cdef void "):
            kernel = line[len("cdef void "):].split("(")[0]
        elif line.strip() in ("for _i in range(_n):", "for _i in range(_c0, _c1):") and kernel:
            loops[number] = kernel
        elif line.strip() in ("for _i in range(_n):  # l1", "for _i in range(_c0, _c1):  # l1") and kernel:
            loops[number] = kernel + "+l1"
    return loops


def report(cc=None, flags=None, module="rules"):
    """``{kernel name: True if its element loop vectorised}``; ``module="rows"``: the
    sparse row kernels (their loop over a row's elements) instead of the dense ones."""
    from Cython.Build import cythonize  # noqa: F401 - fail early without Cython

    sys.path.insert(0, HERE)
    try:
        import _codegen
        import _codegen_lowprec  # noqa: F401 - _codegen.main imports it by name (HERE is off the path then)
        import _rowcodegen
    finally:
        sys.path.pop(0)
    cc, flags = _toolchain(cc, flags)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _scratch_package(tmp, ("_types.pxd", "noise.pxd", "fo_restrict.h", "fo_prefetch.h"))
        _codegen.main(pkg)
        _rowcodegen.main(pkg)
        pyx, c_file = os.path.join(pkg, f"{module}.pyx"), os.path.join(tmp, f"{module}.c")
        _cython(pyx, tmp, c_file, "the generated kernels")
        stderr = _gcc(cc, flags, ["-fopt-info-vec-optimized", "-c"], c_file, os.path.join(tmp, f"{module}.o"), pkg,
                      "the kernels")
        c_lines = open(c_file).read().splitlines()
        loops = _plain_loops(open(pyx).read().splitlines())
    return _named_status(c_lines, f"{module}.pyx", loops, _optimized(stderr, f"{module}.c"))


def hogwild_report(cc=None, flags=None):
    """``{(pyx line, C loop number): vectorised}`` for the factor loops of the Hogwild!
    matrix-factorisation kernel (``for f in range(K)`` in ``_mf_range``, every fused
    specialisation). The linear model's loops gather and scatter through column indices
    and are not expected to vectorise."""
    cc, flags = _toolchain(cc, flags)
    loops = _loops_in("hogwild.pyx", "cdef double _mf_range(", "for f in range(K):")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _scratch_package(tmp, _kernel_sources("hogwild.pyx"))
        c_file = os.path.join(tmp, "hogwild.c")
        _cython(os.path.join(pkg, "hogwild.pyx"), tmp, c_file, "hogwild.pyx")
        stderr = _gcc(cc, flags, ["-fopt-info-vec-optimized", "-c"], c_file, os.path.join(tmp, "h.o"), pkg,
                      "hogwild.c")
        c_lines = open(c_file).read().splitlines()
    vectorised = _optimized(stderr, "hogwild.c")
    status, seen = {}, {}
    for pyx_line, number in _c_loops(c_lines, "hogwild.pyx", loops):
        k = seen[pyx_line] = seen.get(pyx_line, 0) + 1
        status[(pyx_line, k)] = number in vectorised
    return status


def main():
    status = report()
    width = max(map(len, status))
    for name, ok in status.items():
        print(f"{name:<{width}}  {'vectorised' if ok else 'NOT vectorised'}")
    bad = [n for n, ok in status.items() if not ok]
    print(f"\n{len(status) - len(bad)}/{len(status)} kernel loops vectorised")
    return 1 if bad else 0


def packed_arithmetic(asm, function):
    """True when ``function``'s body in the assembly text ``asm`` (GCC's ``-S`` output)
    adds and subtracts doubles only in packed vectors (``addpd``/``subpd``, any width),
    never one at a time (``addsd``/``subsd``): how the binned-sum helpers' grids are
    told from a scalar lowering of their vector code. False if the function is absent."""
    body = re.search(r"^" + re.escape(function) + r"(?:\.\w+)*:\n(.*?)^\s*\.size\s+" + re.escape(function),
                     asm, re.S | re.M)
    if body is None:
        return False
    code = body.group(1)
    return bool(re.search(r"\bv?(?:add|sub)pd\b", code)) and not re.search(r"\bv?(?:add|sub)sd\b", code)


def sparse_report(cc=None, flags=None):
    """The coalescing's column loops in ``sparse.pyx``: ``{"pair_f32", "pair_f64"}``,
    True when GCC vectorised ``_group_sum``'s two-row sum (``for j in range(dim):``) in
    the fused float/double specialisation, and ``{"binsum_f32", "binsum_f64"}``, True
    when the binned-sum line helpers of ``fo_binsum.h`` (``fo_bs_line_f``/``_d``, written
    in GCC vector extensions) compiled to packed arithmetic (:func:`packed_arithmetic`:
    on any vector width the target has)."""
    cc, flags = _toolchain(cc, flags)
    loops = _loops_in("sparse.pyx", "cdef inline void _group_sum(", "for j in range(dim):")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _scratch_package(tmp, _kernel_sources("sparse.pyx"))
        c_file, asm_file = os.path.join(tmp, "sparse.c"), os.path.join(tmp, "s.s")
        _cython(os.path.join(pkg, "sparse.pyx"), tmp, c_file, "sparse.pyx")
        stderr = _gcc(cc, flags, ["-fopenmp", "-fopt-info-vec-optimized", "-Wno-psabi", "-S"], c_file, asm_file, pkg,
                      "sparse.c")
        c_lines = open(c_file).read().splitlines()
        asm = open(asm_file).read()
    vectorised = _optimized(stderr, "sparse.c")
    # the fused function's loop: float (fuse_0) first, then double
    status, seen = {}, {}
    for pyx_line, number in _c_loops(c_lines, "sparse.pyx", loops):
        k = seen[pyx_line] = seen.get(pyx_line, 0) + 1
        key = f"pair_{'f32' if k == 1 else 'f64'}"
        status[key] = status.get(key, False) or number in vectorised
    for p in ("f32", "f64"):
        status.setdefault(f"pair_{p}", False)
        status[f"binsum_{p}"] = packed_arithmetic(asm, f"fo_bs_line_{p[0]}")
    return status


def _low_loops(pyx_lines):
    """pyx line of each low-precision kernel's element loops -> a name: the kernel's for
    its plain loop (options on), ``<kernel>:lean`` for its loop without pre-processing,
    ``:sr`` and ``:ssr`` for its loops that round parameters or state stochastically."""
    loops, kernel, armed = {}, None, None
    for number, line in enumerate(pyx_lines, 1):
        if line.startswith("cdef void "):
            kernel, armed = line[len("cdef void "):].split("(")[0], None
        elif line.strip() in ("if _lean:", "elif _lean:"):
            armed = ":lean"
        elif line.strip() == "elif sigma == 0.0 and _sr == 0:":
            armed = ""
        elif line.strip() in ("elif sigma == 0.0 and _ssr == 0:", "elif sigma == 0.0:"):
            armed = ":sr"
        elif line.strip() == "elif sigma == 0.0 and _ssr != 0:":
            armed = ":ssr"
        elif armed is not None and line.strip() == "for _j in range(_m):" and kernel:
            loops[number] = kernel + armed
            armed = None
    return loops


def report_low(rules=("adam", "lion"), cc=None, flags=None):
    """The low-precision kernels' (``lowrules.pyx``) vectorisation, for the named rules
    in every variant: ``{kernel name (its plain loop) or "<kernel>:lean" (its loop when no
    option pre-processes g): True if that element loop vectorised}``, plus
    ``fo_q8_load_block`` and ``fo_q8_store_block`` (the 8-bit block functions)."""
    sys.path.insert(0, HERE)
    try:
        import _codegen
        import _codegen_lowprec
    finally:
        sys.path.pop(0)
    cc, flags = _toolchain(cc, flags)
    mod = _codegen.load_rules()

    class Subset:
        RULES = mod.RULES
        COMMON_SCALARS = mod.COMMON_SCALARS
        FUNCTIONS = mod.FUNCTIONS
    keep = set(rules)
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _scratch_package(tmp, ("_types.pxd", "noise.pxd", "fo_restrict.h", "fo_lowprec.h"))
        _codegen.main(pkg)
        saved = _codegen_lowprec.LOW_RULES, _codegen_lowprec.Q8_RULES
        _codegen_lowprec.LOW_RULES = tuple(r for r in saved[0] if r in keep)
        _codegen_lowprec.Q8_RULES = tuple(r for r in saved[1] if r in keep)
        try:
            pyx_text, _ = _codegen_lowprec.render(Subset)
        finally:
            _codegen_lowprec.LOW_RULES, _codegen_lowprec.Q8_RULES = saved
        pyx, c_file = os.path.join(pkg, "lowrules.pyx"), os.path.join(tmp, "lowrules.c")
        with open(pyx, "w") as f:
            f.write(pyx_text)
        with open(os.path.join(pkg, "lowsimd.h"), "w") as f:
            f.write(_codegen_lowprec.render_simd(Subset)[0])
        _cython(pyx, tmp, c_file, "the generated low-precision kernels")
        # FO_Q8_NO_VBMI: the 8-bit block functions' portable loops, which the report is
        # about (the AVX-512 VBMI dequantiser is written in intrinsics); FO_NO_SIMD: the
        # lean loops' Cython form (lowsimd.h's intrinsics take their place where they can)
        stderr = _gcc(cc, flags, ["-DFO_Q8_NO_VBMI", "-DFO_NO_SIMD", "-fopt-info-vec-optimized", "-c"], c_file,
                      os.path.join(tmp, "lowrules.o"), pkg, "the low-precision kernels")
        c_lines = open(c_file).read().splitlines()
    status = _named_status(c_lines, "lowrules.pyx", _low_loops(pyx_text.splitlines()),
                           _optimized(stderr, "lowrules.c"))
    header = _optimized(stderr, "fo_lowprec.h")
    h_lines = open(os.path.join(HERE, "fo_lowprec.h")).read().splitlines()
    func = None
    for number, line in enumerate(h_lines, 1):
        m = re.search(r"static (?:inline )?\w+ (fo_\w+)\(", line)
        if m:   # the portable block functions' loops only (not the VBMI one's, nor set-up)
            func = m.group(1) if m.group(1) in ("fo_q8_load_block", "fo_q8_store_block") else None
        elif func and line.lstrip().startswith("for (") and "= zero;" not in line:
            # (the all-zero block's fill becomes a memset, not a vectorised loop)
            status[f"{func}:{number}"] = number in header
    return status


def _vec_markers(pyx_lines):
    """pyx line -> name of every loop marked ``# vec: NAME`` in a .pyx's lines."""
    out = {}
    for number, line in enumerate(pyx_lines, 1):
        m = re.search(r"#\s*vec:\s*(\w+)\s*$", line)
        if m:
            out[number] = m.group(1)
    return out


def marked_report(module, cc=None, flags=None):
    """The vectorisation of the loops marked ``# vec: <loop>`` in ``<module>.pyx`` (kernels
    fused over float/double, float first): ``{"<loop>_f32" | "<loop>_f64": True if
    vectorised}``. An element loop counts when GCC reports it vectorised (or turned into a
    library call such as memcpy); a call of a GCC-vector-extension helper (a function
    ``fo_<name>_f``/``_d`` written by an ``FO_<NAME>(...)`` macro, as ``fo_stats_lanes_*``)
    when the compiler kept its operations as vector instructions."""
    cc, flags = _toolchain(cc, flags)
    markers = _vec_markers(open(os.path.join(HERE, f"{module}.pyx")).read().splitlines())
    with tempfile.TemporaryDirectory() as tmp:
        pkg = _scratch_package(tmp, _kernel_sources(f"{module}.pyx"))
        c_file = os.path.join(tmp, f"{module}.c")
        _cython(os.path.join(pkg, f"{module}.pyx"), tmp, c_file, f"{module}.pyx")
        stderr = _gcc(cc, flags, ["-fopt-info-vec-optimized", "-fopt-info-loop-optimized",
                                  "-Wvector-operation-performance", "-c"], c_file, os.path.join(tmp, "v.o"), pkg,
                      f"{module}.c")
        vectorised = _optimized(stderr, f"{module}.c")
        # a plain copy loop GCC replaces by a memcpy call (which is vectorised code)
        vectorised |= _optimized(stderr, f"{module}.c", r"Loop \d+ distributed: split to 0 loops and 1 library calls")
        lowered = {int(m.group(1)) for m in re.finditer(
            re.escape(f"{module}.c") + r":(\d+):\d+: warning: vector operation will be expanded "
            r"(?:piecewise|with a single scalar)", stderr)}
        c_lines = open(c_file).read().splitlines()
    helper = {}                       # fo_<name>_{f,d}: C lines of the macro's expansion
    for number, line in enumerate(c_lines, 1):
        m = re.match(r"\s*FO_[A-Z0-9_]+\((fo_\w+_[fd]),", line)
        if m:
            helper[m.group(1)] = number
    status, seen, current, start = {}, {}, None, 0

    def close(end):
        if current in markers:
            name = markers[current]
            k = seen[current] = seen.get(current, 0) + 1
            # the code only: Cython's comments quote the neighbouring source lines too
            call = "".join(c for c in c_lines[start - 1:end] if not c.lstrip().startswith(("*", "/*")))
            m = next((h for h in re.finditer(r"\b(fo_\w+_[fd])\(", call) if h.group(1) in helper), None)
            if m:                  # a vector-extension helper: one call per precision, by name
                key = f"{name}_{'f32' if m.group(1).endswith('f') else 'f64'}"
                status[key] = m.group(1) in helper and helper[m.group(1)] not in lowered
            else:                  # a fused function: float (fuse_0) first, then double
                key = f"{name}_{'f32' if k == 1 else 'f64'}"
                status[key] = status.get(key, False) or any(start <= n <= end for n in vectorised)
    for number, line in enumerate(c_lines, 1):
        m = re.search(module + r'\.pyx":(\d+)', line)
        if m:
            close(number)
            current, start = int(m.group(1)), number
    close(len(c_lines))
    for name in markers.values():
        if not name.startswith("stats"):
            for p in ("f32", "f64"):
                status.setdefault(f"{name}_{p}", False)
    return status


def vecops_report(cc=None, flags=None):
    """:func:`marked_report` of the second-order vector kernels (``vecops.pyx``). The
    stats, dot lanes, hub dots and four-term combination sweeps, written with GCC vector
    extensions (``fo_stats_lanes_*``, ``fo_dot_lanes_*``, ``fo_hub_lanes_*``,
    ``fo_comb4_add_*``), count when the compiler kept their vector operations as vector instructions (no
    ``-Wvector-operation-performance`` "piecewise"/"single scalar" lowering)."""
    return marked_report("vecops", cc, flags)


if __name__ == "__main__":
    sys.exit(main())
