"""Build-time generator of the sparse row-wise kernels (``rows.pyx``/``rows.pxd``).

A row kernel is the rule's dense body applied to the touched rows of a 2-D parameter
``(rows, dim)``: the slot's ``n = touched · dim`` elements are the coalesced gradient
rows one after another, and element ``e`` updates column ``e % dim`` of parameter row
``rows[e // dim]`` (and of each state buffer). It has the dense kernels' signature, so
the driver splits, balances and claims its elements like any other slot (a row may be
cut between two chunks; every element's arithmetic is the same wherever the cut is).
The body, the pre-processing and the literal casts come from ``_codegen``: the same
source as the dense kernels, hence the same bits per element. Gradient noise is keyed
by the element's index in the whole parameter (``row · dim + column``), so a touched
element draws what a dense step would draw.

``"exact"`` mode (``Slot.last`` not NULL) first brings each row's state up to date: a
row last updated at step ``s`` missed ``k = t - 1 - s`` steps with a zero gradient, and
for the rules that allow the mode (``Rule.sparse_decay``) such a step only multiplies
some state buffers by a constant, ``x = d x``: the catch-up is ``x = x · d^k``, with
``d^k`` computed in double from the kernel's (rounded) ``d`` and rounded once.

Run by ``setup.py`` beside ``_codegen``; kept apart so that the dense generator's
variants (storage precisions) and this layout change independently.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from _codegen import (HEADER, L1_PROXIMAL, L1_SUBGRADIENT, PREPROCESS, _annotated_body, _assigned,  # noqa: E402
                      _guarded, _indent, cast_literals, l1_declarations, load_rules, scalar_declarations,
                      pyx_head, write_if_changed)
from _variants import SHIPPED  # noqa: E402


def render_row_kernel(rule, common, variant, functions):
    """``<rule>_rows_<suffix>(slot, start, n)``: elements [start, start + n) of a row slot."""
    ctype, param, state = variant.ctype, variant.param, variant.state
    name = f"{rule.name}_rows_{variant.suffix}"
    out = [f"# rule {rule.name}: {rule.where} (sparse rows)",
           f"cdef void {name}(const Slot* _slot, Py_ssize_t _start, Py_ssize_t _n) noexcept nogil:",
           f'    """{rule.doc} (on the touched rows)"""',
           f"    cdef {param.ptr} _buf_p",
           f"    cdef {param.cptr} _buf_g",
           f"    cdef const {param.ctype}* _row_g = <const {param.ctype}*>_slot.buf[1]"]
    for name_ in rule.state:
        out.append(f"    cdef {state.ptr} _buf_{name_}")
    out += scalar_declarations(rule, common, ctype) + l1_declarations(ctype)
    body = _annotated_body(rule, variant, functions)
    locals_ = ["p", "g"] + list(rule.state) + [n for n in _assigned(rule.body) if n not in ("p", "g") + rule.state]
    out.append(f"    cdef {ctype} " + ", ".join(locals_))
    out.append("    cdef Py_ssize_t _i, _j, _blk, _m, _r, _c0, _c1, _row, _end = _start + _n, _e = _start")
    out.append("    cdef Py_ssize_t _d = _slot.dim, _nr = _slot.n // _slot.dim if _slot.dim else 0, _nx")
    out.append(f"    cdef Py_ssize_t _rb = _d * sizeof({param.ctype})")
    out.append("    cdef long long _k")
    decays = [(s, d) for s, d in (rule.sparse_decay or {}).items()]
    if decays:
        out.append(f"    cdef {ctype} " + ", ".join(f"_f_{s}" for s, _ in decays))
    out.append("    cdef double _z[NOISE_BLOCK]")
    load = ([f"p = {variant.load(param, '_buf_p[_i]')}", f"g = {variant.load(param, '_buf_g[_i]')}"]
            + [f"{s} = {variant.load(state, f'_buf_{s}[_i]')}" + (f" * _f_{s}" if s in dict(decays) else "")
               for s in rule.state])
    store = ([f"_buf_p[_i] = {variant.store(param, 'p')}"]
             + [f"_buf_{s}[_i] = {variant.store(state, s)}" for s in rule.state])
    plain = "\n".join(load) + "\n" + PREPROCESS + "\n" + body.strip("\n") + "\n" + "\n".join(store)
    # L1 / elastic-net on the touched rows, as the dense kernels do it (a loop of its own,
    # so that the plain loop is unchanged when it is off)
    sub, prox = cast_literals(L1_SUBGRADIENT, ctype), cast_literals(L1_PROXIMAL, ctype)
    l1 = ("\n".join(load) + "\n" + PREPROCESS + "\n" + sub + "\n" + body.strip("\n") + "\n" + prox + "\n"
          + "\n".join(store))
    noisy = ("_i = _c0 + _blk + _j\n" + "\n".join(load) + "\n" + PREPROCESS
             + f"\ng = g + <{ctype}>(sigma * _z[_j])\n" + _guarded(sub, "l1_sub") + "\n" + body.strip("\n") + "\n"
             + _guarded(prox, "l1_thr") + "\n" + "\n".join(store))
    # the parameter and state lines of a row ahead (the gradient rows are sequential), and the
    # caller's value rows, read in index order, which are scattered too: PREFETCH_FAR rows
    # ahead into L2, PREFETCH_ROWS ahead into L1 (L1's few miss buffers alone keep too few
    # rows in flight to cover DRAM's latency)
    prefetch = ["_slot.buf[0]"] + [f"_slot.buf[{k + 2}]" for k in range(len(rule.state))]
    row = ["_r = _e // _d",
           "_c0 = _e - _r * _d"]
    for ahead, fetch in (("PREFETCH_FAR", "fo_prefetch_l2_span"), ("PREFETCH_ROWS", "fo_prefetch_span")):
        row += [f"if _c0 == 0 and _r + {ahead} < _nr:",
                f"    _nx = _slot.rows[_r + {ahead}] * _rb"]
        row += [f"    {fetch}({b} + _nx, _rb)" for b in prefetch]
        row += [f"    if _slot.src != NULL and _slot.src[_r + {ahead}] >= 0:",
                f"        {fetch}(_slot.buf[1] + _slot.src[_r + {ahead}] * _rb, _rb)"]
    row += [
           "_c1 = _d if _end - _r * _d >= _d else _end - _r * _d",
           "_row = _slot.rows[_r]",
           f"_buf_p = <{param.ctype}*>_slot.buf[0] + _row * _d",
           "if _slot.src == NULL:",
           "    _buf_g = _row_g + _r * _d",
           "elif _slot.src[_r] >= 0:",
           "    _buf_g = _row_g + _slot.src[_r] * _d",
           "else:",
           f"    _buf_g = <const {param.ctype}*>_slot.dup + (-1 - _slot.src[_r]) * _d"]
    row += [f"_buf_{s} = <{state.ctype}*>_slot.buf[{k + 2}] + _row * _d" for k, s in enumerate(rule.state)]
    if decays:
        # the catch-up factor is fused into the state's load (x · 1 is x: lazy rows keep their bits)
        row += [f"_f_{s} = 1.0" for s, _ in decays]
        row += ["if _slot.last != NULL and _slot.step - 1 - _slot.last[_row] > 0:",
                "    _k = _slot.step - 1 - _slot.last[_row]"]
        row += [f"    _f_{s} = <{ctype}>pow(<double>{d}, <double>_k)" for s, d in decays]
    row += ["if sigma == 0.0 and l1_sub == 0.0 and l1_thr == 0.0:",
            "    for _i in range(_c0, _c1):",
            _indent(plain, 8),
            "elif sigma == 0.0:",
            "    for _i in range(_c0, _c1):  # l1",
            _indent(l1, 8),
            "else:",
            "    _blk = 0",
            "    while _blk < _c1 - _c0:",
            "        _m = NOISE_BLOCK if _c1 - _c0 - _blk > NOISE_BLOCK else _c1 - _c0 - _blk",
            "        fill_normals(_slot.noise_key, _row * _d + _c0 + _blk, _m, _z)",
            "        for _j in range(_m):",
            _indent(noisy, 12),
            "        _blk = _blk + _m",
            "_e = _r * _d + _c1"]
    out += ["    while _e < _end:", _indent("\n".join(row), 8), ""]
    return "\n".join(out)


def render(mod):
    """``(rows.pyx, rows.pxd)``: every rule's row kernels and their table."""
    rules = mod.RULES
    common = tuple(mod.COMMON_SCALARS)
    functions = mod.FUNCTIONS
    pyx = pyx_head(functions, "Slot, RangeFn, NOISE_BLOCK", math=("pow",)) + [
           'cdef extern from "fo_prefetch.h":',
           "    void fo_prefetch_span(const char* a, Py_ssize_t nbytes) noexcept nogil",
           "    void fo_prefetch_l2_span(const char* a, Py_ssize_t nbytes) noexcept nogil",
           "",
           "# rows ahead whose parameter and state lines are prefetched (scattered rows: TLB and cache misses),",
           "# into L1 and, further ahead, into L2",
           "cdef enum:",
           "    PREFETCH_ROWS = 8",
           "    PREFETCH_FAR = 32",
           ""]
    pxd = [HEADER, "from fastopt._kernels._types cimport Slot, RangeFn", "",
           "cdef RangeFn row_kernel(int index, int itemsize) noexcept nogil",
           "cdef bint allows_exact(int index) noexcept nogil", ""]
    for rule in rules:
        for variant in SHIPPED:
            pyx.append(render_row_kernel(rule, common, variant, functions))
    n = len(rules)
    pyx.append(f"cdef RangeFn _F32[{n}]")
    pyx.append(f"cdef RangeFn _F64[{n}]")
    pyx.append(f"cdef bint _EXACT[{n}]")
    for k, rule in enumerate(rules):
        f32, f64 = (f"{rule.name}_rows_{v.suffix}" for v in SHIPPED)
        pyx += [f"_F32[{k}] = {f32}", f"_F64[{k}] = {f64}", f"_EXACT[{k}] = {rule.sparse_decay is not None}"]
    pyx += ["",
            "# rule name -> whether its sparse step has an \"exact\" mode (Rule.sparse_decay)",
            "EXACT = {" + ", ".join(f"{r.name!r}: {r.sparse_decay is not None}" for r in rules) + "}",
            "",
            "cdef RangeFn row_kernel(int index, int itemsize) noexcept nogil:",
            "    return _F32[index] if itemsize == 4 else _F64[index]",
            "",
            "cdef bint allows_exact(int index) noexcept nogil:",
            "    return _EXACT[index]",
            ""]
    return "\n".join(pyx) + "\n", "\n".join(pxd) + "\n"


def main(outdir=HERE):
    """Write rows.pyx and rows.pxd into ``outdir`` (the package by default)."""
    pyx, pxd = render(load_rules())
    write_if_changed(os.path.join(outdir, "rows.pyx"), pyx)
    write_if_changed(os.path.join(outdir, "rows.pxd"), pxd)


if __name__ == "__main__":
    main()
