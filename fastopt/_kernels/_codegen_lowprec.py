"""Build-time generator of the low-precision kernels (``lowrules.pyx``/``.pxd``):
each rule of :data:`_lowvariants.LOW_RULES` in each :data:`_lowvariants.LOW_VARIANTS`
from the rule's one body, as ``_codegen`` renders the float32/float64 kernels.

A kernel loads every element into float32, runs the common pre-processing and the
rule's body, and stores back in each buffer's storage. 8-bit state is processed a
block of 256 elements at a time within the same pass: the block's codes are
dequantised with its absmax, updated into a 256-float buffer on the stack, and the
block is requantised with its new absmax (the driver starts every piece of such a
parameter at a block boundary). ``lowrules.pxd`` exposes ``low_kernel(rule, variant)``
(NULL where a combination is not generated).
"""
import os

import _codegen_simd
from _codegen import (HEADER, PREPROCESS, _annotated_body, _assigned, _indent, pyx_head, scalar_declarations,
                      write_if_changed)
from _lowvariants import (BF16, COPY_SLOT, LOW_RULES, LOW_VARIANTS, Q8, Q8_RULES, SR_PARAM_BY_FLAG, SR_STATE_STORE,
                          SR_STORE)
from _variants import F32


class _Float32:
    # what _annotated_body needs of a variant: float32 arithmetic
    ctype = "float"
    param = F32


def _unsigned(rule, name):
    dom = rule.domains.get(name)
    return dom is not None and dom.lo is not None and dom.lo >= 0.0


def _load(storage, expr):
    return storage.load.format(expr)


def _store(storage, value, sr):
    if sr and storage.name in SR_STORE:
        return SR_STORE[storage.name].format(value)
    return storage.store.format(value)


def generated(rule_name, variant):
    """True when ``rule_name`` is generated in ``variant``."""
    return rule_name in (Q8_RULES if variant.state == Q8 else LOW_RULES)


def _state_store(lv, s, mode):
    if mode in ("ssr", "noisy") and _has_state_sr(lv):
        return SR_STATE_STORE["bf16"].format(s, s=s)
    return _store(lv.state, s, False)


def _element(rule, lv, mode, body):
    """The per-element code: mode "lean" (no option set), "plain", "sr" (stochastic
    rounding of parameter stores), "ssr" (of bfloat16 state stores, parameters by a
    flag) or "noisy" (gradient noise, rounding chosen at run time). ``_i`` indexes the
    slot's elements, ``_j`` the block (8-bit state and noise)."""
    lines = [f"p = {_load(lv.param, '_buf_p[_i]')}", f"g = {_load(lv.grad, '_buf_g[_i]')}"]
    for k, s in enumerate(rule.state):
        if lv.q8:
            lines.append(f"{s} = _v_{s}[_j]")
        else:
            lines.append(f"{s} = {_load(lv.state, f'_buf_{s}[_i]')}")
    if mode != "lean":
        lines.append(PREPROCESS)
    if mode == "noisy":
        lines.append("g = g + <float>(sigma * _z[_j])")
    lines.append(body.strip("\n"))

    def put(storage, value):
        if mode == "noisy" and storage.name in SR_STORE:
            return f"{_store(storage, value, True)} if _psr else {_store(storage, value, False)}"
        if mode == "ssr" and storage.name in SR_PARAM_BY_FLAG:
            return SR_PARAM_BY_FLAG[storage.name].format(value)
        return _store(storage, value, mode == "sr")
    lines.append(f"_buf_p[_i] = {put(lv.param, 'p')}")
    if lv.copy is not None:
        lines.append(f"_buf_c[_i] = {put(lv.copy, 'p')}")
    for s in rule.state:
        lines.append(f"_v_{s}[_j] = {s}" if lv.q8 else f"_buf_{s}[_i] = {_state_store(lv, s, mode)}")
    return "\n".join(lines)


def _has_sr(lv):
    return lv.param.name in SR_STORE or (lv.copy is not None and lv.copy.name in SR_STORE)


def _has_state_sr(lv):
    return lv.state == BF16


def state_sr_mix(k):
    """What state ``k``'s stochastic-rounding key is xor-ed with (the parameter's
    noise key otherwise): fastopt.lowprec.halfs.state_sr_key's constant."""
    return ((k + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def render_low_kernel(rule, common, lv, functions, simd=None):
    """One kernel ``<rule>_<variant>(slot, start, n)`` for elements [start, start + n);
    ``simd``: the (declaration, call arguments) of its AVX-512 lean loop, if any."""
    out = [f"# rule {rule.name}: {rule.where} (low precision: {lv.name})",
           f"cdef void {rule.name}_{lv.name}(const Slot* _slot, Py_ssize_t _start, Py_ssize_t _n) noexcept nogil:",
           f'    """{rule.doc}"""',
           f"    cdef {lv.param.ptr} _buf_p = <{lv.param.ctype}*>_slot.buf[0] + _start",
           f"    cdef {lv.grad.cptr} _buf_g = <const {lv.grad.ctype}*>_slot.buf[1] + _start"]
    if lv.copy is not None:
        out.append(f"    cdef {lv.copy.ptr} _buf_c = <{lv.copy.ctype}*>_slot.buf[{COPY_SLOT}] + _start")
    for k, s in enumerate(rule.state):
        if lv.q8:
            out += [f"    cdef fo_u8p _q_{s} = <uint8_t*>_slot.buf[{2 + 2 * k}] + _start",
                    f"    cdef fo_absp _a_{s} = <float*>_slot.buf[{3 + 2 * k}] + (_start >> 8)",
                    f"    cdef float _v_{s}[256]"]
        else:
            out.append(f"    cdef {lv.state.ptr} _buf_{s} = <{lv.state.ctype}*>_slot.buf[{k + 2}] + _start")
    out += scalar_declarations(rule, common, "float")
    body = _annotated_body(rule, _Float32, functions)
    locals_ = ["p", "g"] + list(rule.state) + [n for n in _assigned(rule.body) if n not in ("p", "g") + rule.state]
    out.append("    cdef float " + ", ".join(locals_))
    out.append("    cdef Py_ssize_t _i, _j, _blk, _m")
    out.append("    cdef double _z[NOISE_BLOCK]")
    # sround: bit 0 parameter stores, bit 1 state stores round stochastically
    out.append("    cdef int _sr = _slot.sround")
    out.append("    cdef uint32_t _psr = <uint32_t>(_sr & 1)")
    out.append("    cdef uint32_t _ssr = <uint32_t>((_sr >> 1) & 1)")
    out.append("    cdef uint32_t _k0 = <uint32_t>(_slot.noise_key & 0xFFFFFFFFULL) ^ 0x85EBCA6BU")
    out.append("    cdef uint32_t _k1 = <uint32_t>(_slot.noise_key >> 32)")
    if _has_state_sr(lv):
        for k, s in enumerate(rule.state):
            mix = f"(_slot.noise_key ^ {state_sr_mix(k)}ULL)"
            out.append(f"    cdef uint32_t _sk0_{s} = <uint32_t>({mix} & 0xFFFFFFFFULL) ^ 0x85EBCA6BU")
            out.append(f"    cdef uint32_t _sk1_{s} = <uint32_t>({mix} >> 32)")
    modes = (["lean", "plain"] + (["sr"] if _has_sr(lv) else []) + (["ssr"] if _has_state_sr(lv) else [])
             + ["noisy"])
    loops = {m: _element(rule, lv, m, body) for m in modes}
    # no option changes g or p before the rule: the pre-processing's multiplications by 1
    # and clip at infinity are dropped (the same bits), which matters because these loops
    # are compute-bound (16 bytes or fewer an element)
    out.append("    cdef int _lean = (sigma == 0.0 and _sr == 0 and sign == 1.0 and not has_wd and coef == 1.0 "
               "and clip > 3.4028234663852886e38 and decay == 1.0)")
    out += ["    _blk = 0",
            "    while _blk < _n:",
            "        _m = NOISE_BLOCK if _n - _blk > NOISE_BLOCK else _n - _blk"]
    # 8-bit state: the block is dequantised into _v_<state>, updated there by the
    # element loop and requantised (fo_lowprec.h's block functions)
    for s in rule.state if lv.q8 else ():
        out.append(f"        fo_q8_load_block({1 if _unsigned(rule, s) else 0}, _q_{s} + _blk, _a_{s}[_blk >> 8], "
                   f"_v_{s}, _m)")
    if simd is not None:
        # FO_SIMD is a compile-time constant: the C compiler keeps one of the two
        out += ["        if _lean and FO_SIMD and _simd_on:",
                f"            {_codegen_simd.function_name(rule, lv)}({', '.join(simd[1])})",
                "        elif _lean:"]
    else:
        out.append("        if _lean:")
    out += ["            for _j in range(_m):", "                _i = _blk + _j", _indent(loops["lean"], 16)]
    out.append("        elif sigma == 0.0 and _sr == 0:")
    out += ["            for _j in range(_m):", "                _i = _blk + _j", _indent(loops["plain"], 16)]
    if "sr" in loops:
        out.append("        elif sigma == 0.0 and _ssr == 0:" if "ssr" in loops else "        elif sigma == 0.0:")
        out += ["            for _j in range(_m):", "                _i = _blk + _j", _indent(loops["sr"], 16)]
    if "ssr" in loops:
        out.append("        elif sigma == 0.0 and _ssr != 0:")
        out += ["            for _j in range(_m):", "                _i = _blk + _j", _indent(loops["ssr"], 16)]
    out += ["        else:",
            "            if sigma != 0.0:",
            "                fill_normals(_slot.noise_key, _start + _blk, _m, _z)",
            "            else:",
            "                for _j in range(_m):",
            "                    _z[_j] = 0.0",
            "            for _j in range(_m):", "                _i = _blk + _j", _indent(loops["noisy"], 16)]
    for s in rule.state if lv.q8 else ():
        m = 1 if _unsigned(rule, s) else 0
        out.append(f"        _a_{s}[_blk >> 8] = fo_q8_store_block({m}, _v_{s}, _q_{s} + _blk, _m, "
                   f"{'ZERO_UNSIGNED' if m else 'ZERO_SIGNED'})")
    out += ["        _blk = _blk + _m", ""]
    return "\n".join(out)


def render(mod):
    """``(lowrules.pyx, lowrules.pxd)``."""
    rules = [r for r in mod.RULES if r.name in LOW_RULES]
    _, simd = render_simd(mod)
    index = {r.name: k for k, r in enumerate(mod.RULES)}
    common = tuple(mod.COMMON_SCALARS)
    functions = mod.FUNCTIONS
    stdint = "from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t"
    pyx = pyx_head(functions, "Slot, RangeFn, NOISE_BLOCK", cimports=(stdint,), restrict=("f32",)) + [
           'cdef extern from "fo_lowprec.h":',
           "    ctypedef uint16_t* fo_u16p",
           "    ctypedef const uint16_t* fo_cu16p",
           "    ctypedef uint8_t* fo_u8p",
           "    ctypedef float* fo_absp",
           "    uint32_t fo_f32_bits(float x) noexcept nogil",
           "    float fo_bits_f32(uint32_t u) noexcept nogil",
           "    float fo_bf16_load(uint16_t b) noexcept nogil",
           "    uint16_t fo_bf16_store(float x) noexcept nogil",
           "    uint16_t fo_bf16_store_sr(float x, uint32_t k0, uint32_t k1, uint32_t i) noexcept nogil",
           "    uint16_t fo_bf16_store_by(float x, uint32_t sr, uint32_t k0, uint32_t k1, uint32_t i) noexcept nogil",
           "    float fo_f16_load(uint16_t b) noexcept nogil",
           "    uint16_t fo_f16_store(float x) noexcept nogil",
           "    void fo_q8_load_block(int m, const uint8_t* q, float am, float* v, long n) noexcept nogil",
           "    float fo_q8_store_block(int m, const float* v, uint8_t* q, long n, uint8_t zero) noexcept nogil",
           "    void fo_q8_set(int m, const float* map, const uint32_t* packed) noexcept nogil",
           "",
           'cdef extern from "lowsimd.h":',
           "    int FO_SIMD"] + [decl for decl, _ in simd.values()] + [
           "",
           "import numpy as _np",
           "from fastopt.lowprec import q8 as _q8",
           "",
           "# 0: the lean loops run their Cython form even where lowsimd.h's is compiled in (the",
           "# tests compare the two; the bench measures one against the other)",
           "cdef int _simd_on = 1",
           "",
           "cdef enum:",
           f"    ZERO_SIGNED = {mod_zero(True)}",
           f"    ZERO_UNSIGNED = {mod_zero(False)}",
           ""]
    table = []
    for rule in rules:
        for k, lv in enumerate(LOW_VARIANTS):
            if generated(rule.name, lv):
                pyx.append(render_low_kernel(rule, common, lv, functions, simd.get((rule.name, lv.name))))
                table.append((index[rule.name], k, f"{rule.name}_{lv.name}"))
    pyx += [f"cdef RangeFn _LOW[{len(mod.RULES)}][{len(LOW_VARIANTS)}]",
            f"for _r in range({len(mod.RULES)}):",
            f"    for _v in range({len(LOW_VARIANTS)}):",
            "        _LOW[_r][_v] = NULL"]
    pyx += [f"_LOW[{r}][{v}] = {name}" for r, v, name in table]
    pyx += ["",
            "LOW_VARIANTS = (" + ", ".join(repr(v.name) for v in LOW_VARIANTS) + ",)",
            "#: True when the lean loops of lowsimd.h were compiled in (AVX-512 with BF16)",
            "LOW_SIMD = FO_SIMD != 0",
            "LOW_GENERATED = {" + ", ".join(f"({rules_name(mod, r)!r}, {LOW_VARIANTS[v].name!r})"
                                            for r, v, _ in table) + "}",
            "",
            "",
            "cdef RangeFn low_kernel(int rule, int variant) noexcept nogil:",
            f"    if rule < 0 or rule >= {len(mod.RULES)} or variant < 0 or variant >= {len(LOW_VARIANTS)}:",
            "        return NULL",
            "    return _LOW[rule][variant]",
            "",
            "",
            "def use_simd(on):",
            '    """Run the lean loops in lowsimd.h\'s AVX-512 form (True, the default where it is',
            '    compiled in) or in their Cython form; returns the previous setting."""',
            "    global _simd_on",
            "    prev = _simd_on != 0",
            "    _simd_on = 1 if on else 0",
            "    return prev",
            "",
            "",
            "def _load_q8_tables():",
            '    """Hand the 8-bit maps and search tables (fastopt.lowprec.q8) to the kernels."""',
            "    cdef float[::1] mp",
            "    cdef uint32_t[::1] packed",
            "    for m, signed in ((0, True), (1, False)):",
            "        mp = _np.ascontiguousarray(_q8.dynamic_map(signed), dtype=_np.float32)",
            "        packed = _np.ascontiguousarray(_q8.packed_table(signed), dtype=_np.uint32)",
            "        fo_q8_set(m, &mp[0], &packed[0])",
            "",
            "",
            "_load_q8_tables()",
            ""]
    pxd = [HEADER, "from fastopt._kernels._types cimport RangeFn", "",
           "# The low-precision kernel of rule ``rule`` (index of rules.RULE_INDEX) in variant",
           "# ``variant`` (index of LOW_VARIANTS); NULL where that combination is not generated.",
           "cdef RangeFn low_kernel(int rule, int variant) noexcept nogil", ""]
    return "\n".join(pyx) + "\n", "\n".join(pxd) + "\n"


def render_simd(mod):
    """``(lowsimd.h, {(rule, variant): (declaration, call arguments)})`` of the generated
    kernels' AVX-512 lean loops (fastopt/_kernels/_codegen_simd.py)."""
    rules = [r for r in mod.RULES if r.name in LOW_RULES]
    return _codegen_simd.render(rules, [lv for lv in LOW_VARIANTS if lv.state != Q8])


def rules_name(mod, r):
    return mod.RULES[r].name


def mod_zero(signed):
    # the code of 0.0 in bitsandbytes' maps: 127 signed (127 negative values below it), 0 unsigned
    return 127 if signed else 0


def main(mod, outdir):
    """Write lowrules.pyx and lowrules.pxd into ``outdir``."""
    pyx, pxd = render(mod)
    write_if_changed(os.path.join(outdir, "lowsimd.h"), render_simd(mod)[0])
    write_if_changed(os.path.join(outdir, "lowrules.pyx"), pyx)
    write_if_changed(os.path.join(outdir, "lowrules.pxd"), pxd)
