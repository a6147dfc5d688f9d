"""Build-time generator of ``lowsimd.h``: each low-precision kernel's option-free
("lean") element loop written in AVX-512 intrinsics, from the rule's one body, for the
variants whose buffers are float32 or bfloat16 (no 8-bit state, no float16).

Why: GCC vectorises the generated Cython loops, but it cannot use the one instruction
that rounds float32 to bfloat16 (``vcvtneps2bf16``) from scalar code, and the integer
rounding it emits instead costs ~1 cycle per element in each all-bf16 kernel, which is
what keeps them below the memory bus (a simd-clone call was measured too: 8% faster,
the call's spills eat the rest). The instruction rounds to nearest even and quiets NaN
as ``fo_bf16_store`` does, but flushes subnormal inputs to zero: lanes holding one take
the integer rounding (``fo_bf16_16``). Every operation is the IEEE float32 operation the
scalar loop does, in the same order (no contraction, selects as blends), so the bits
are the scalar loop's; tests/test_lowprec.py checks them against the NumPy reference.
One exception, as between any two compilers: where two NaNs meet in one operation, x86
keeps the first operand's, and C leaves the operand order of + and * to the compiler,
so which NaN's sign and payload survive may differ (the result is NaN either way).

``FO_SIMD`` is 1 where the compiler targets AVX-512 with BF16 (and ``FO_NO_SIMD`` is not
defined); elsewhere the functions are empty and the kernels run their Cython loops.
"""
import ast

from _lowvariants import BF16, Q8
from _variants import F32

_BIN = {ast.Add: "_mm512_add_ps", ast.Sub: "_mm512_sub_ps", ast.Mult: "_mm512_mul_ps", ast.Div: "_mm512_div_ps"}
# C's comparison semantics: ordered and quiet, except != (true when unordered)
_CMP = {ast.Gt: "_CMP_GT_OQ", ast.Lt: "_CMP_LT_OQ", ast.GtE: "_CMP_GE_OQ", ast.LtE: "_CMP_LE_OQ",
        ast.Eq: "_CMP_EQ_OQ", ast.NotEq: "_CMP_NEQ_UQ"}
_CALL = {"sqrt": "_mm512_sqrt_ps", "fabs": "_mm512_abs_ps"}


class Unsupported(Exception):
    """The body uses something the translation does not cover (that kernel keeps its loop)."""


def supported(lv):
    """True when variant ``lv`` gets a SIMD lean loop."""
    return (lv.state != Q8 and lv.param in (F32, BF16) and lv.grad in (F32, BF16) and lv.state in (F32, BF16)
            and lv.copy in (None, BF16) and BF16 in (lv.param, lv.grad, lv.state, lv.copy))


def _vec(node, vectors, scalars, flags):
    if isinstance(node, ast.Name):
        if node.id in vectors:
            return node.id
        if node.id in flags:
            raise Unsupported(f"flag {node.id} used as a value")
        scalars.add(node.id)
        return f"_v_{node.id}"
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return f"_mm512_set1_ps((float){float(node.value)!r})"
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return (f"{_BIN[type(node.op)]}({_vec(node.left, vectors, scalars, flags)}, "
                f"{_vec(node.right, vectors, scalars, flags)})")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        # -x flips the sign bit (0 - x would turn -0.0 into +0.0)
        return f"_mm512_xor_ps({_vec(node.operand, vectors, scalars, flags)}, _mm512_set1_ps(-0.0f))"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALL and \
            len(node.args) == 1 and not node.keywords:
        return f"{_CALL[node.func.id]}({_vec(node.args[0], vectors, scalars, flags)})"
    if isinstance(node, ast.IfExp):
        yes = _vec(node.body, vectors, scalars, flags)
        no = _vec(node.orelse, vectors, scalars, flags)
        test = node.test
        if isinstance(test, ast.Name) and test.id in flags:
            scalars.add(test.id)
            return f"({test.id} ? {yes} : {no})"
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _CMP:
            left = _vec(test.left, vectors, scalars, flags)
            right = _vec(test.comparators[0], vectors, scalars, flags)
            return f"_mm512_mask_blend_ps(_mm512_cmp_ps_mask({left}, {right}, {_CMP[type(test.ops[0])]}), {no}, {yes})"
    raise Unsupported(ast.dump(node))


def _load(storage, ptr):
    return f"FO_LD_{'BF16' if storage == BF16 else 'F32'}(_k, {ptr} + _i)"


def _store(storage, ptr, value):
    return f"FO_ST_{'BF16' if storage == BF16 else 'F32'}(_k, {ptr} + _i, {value});"


def _ptr(storage, const=False):
    c = "const " if const else ""
    return f"{c}{'uint16_t' if storage == BF16 else 'float'}* __restrict"


def function_name(rule, lv):
    return f"fo_simd_{rule.name}_{lv.name}"


def render_function(rule, lv):
    """``(C definition, C stub, Cython declaration, call arguments)`` of one kernel's SIMD
    lean loop; raises :class:`Unsupported` when the body cannot be translated."""
    flags = set(rule.flags)
    vectors = {"p", "g", *rule.state}
    lines, scalars = [], set()
    for stmt in ast.parse(rule.body).body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise Unsupported(ast.dump(stmt))
        value = _vec(stmt.value, vectors, scalars, flags)
        name = stmt.targets[0].id
        vectors.add(name)
        lines.append(f"        {name} = {value};")
    temps = sorted(vectors - {"p", "g", *rule.state})
    order = [n for n in ("lr",) + tuple(rule.outputs) if n in scalars]
    order += sorted(scalars - set(order))
    params = [f"{_ptr(lv.param)} _P", f"{_ptr(lv.grad, True)} _G"]
    params += [f"{_ptr(lv.state)} _S_{s}" for s in rule.state]
    if lv.copy is not None:
        params.append(f"{_ptr(lv.copy)} _C")
    params.append("long _n")
    params += [f"{'int' if s in flags else 'float'} {s}" for s in order]
    head = f"static inline void {function_name(rule, lv)}({', '.join(params)})"
    body = [head + " {"]
    body += [f"    const __m512 _v_{s} = _mm512_set1_ps({s});" for s in order if s not in flags]
    body.append("    for (long _i = 0; _i < _n; _i += 16) {")
    body.append("        const __mmask16 _k = _n - _i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (_n - _i)) - 1u);")
    body.append(f"        __m512 p = {_load(lv.param, '_P')};")
    body.append(f"        __m512 g = {_load(lv.grad, '_G')};")
    body += [f"        __m512 {s} = {_load(lv.state, '_S_' + s)};" for s in rule.state]
    if temps:
        body.append(f"        __m512 {', '.join(temps)};")
    body += lines
    body.append(f"        {_store(lv.param, '_P', 'p')}")
    if lv.copy is not None:
        body.append(f"        {_store(lv.copy, '_C', 'p')}")
    body += [f"        {_store(lv.state, '_S_' + s, s)}" for s in rule.state]
    body += ["    }", "}"]
    stub = head + " { (void)_n; }"
    decl_params = [p.replace(" __restrict", "") for p in params]
    cython = f"    void {function_name(rule, lv)}({', '.join(decl_params)}) noexcept nogil"
    args = ["_buf_p + _blk", "_buf_g + _blk"] + [f"_buf_{s} + _blk" for s in rule.state]
    if lv.copy is not None:
        args.append("_buf_c + _blk")
    args += ["_m"] + order
    return "\n".join(body), stub, cython, args


HEADER_TOP = """/* Generated by fastopt/_kernels/_codegen_simd.py from fastopt/rules: do not edit.
   The low-precision kernels' lean loops in AVX-512 (see the generator's docstring). */
#ifndef FO_LOWSIMD_H
#define FO_LOWSIMD_H
#include <stdint.h>
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512F__) \\
    && !defined(FO_NO_SIMD)
#define FO_SIMD 1
#include <immintrin.h>

/* float32 -> bfloat16 bits, 16 lanes: the instruction, then the integer rounding of
   fo_bf16_store for lanes holding a subnormal (which the instruction flushes to zero) */
static inline __m256i fo_bf16_16(__m512 x) {
    __m256i r = (__m256i)_mm512_cvtneps_pbh(x);
    const __m512i u = _mm512_castps_si512(x);
    const __mmask16 sub = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000))
                        & _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x007FFFFF));
    if (__builtin_expect(sub != 0, 0)) {
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        const __m512i s = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
        r = _mm256_mask_blend_epi16(sub, r, _mm512_cvtepi32_epi16(s));
    }
    return r;
}
#define FO_LD_F32(k, ptr) _mm512_maskz_loadu_ps((k), (ptr))
#define FO_ST_F32(k, ptr, x) _mm512_mask_storeu_ps((ptr), (k), (x))
#define FO_LD_BF16(k, ptr) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32( \\
    _mm256_maskz_loadu_epi16((k), (ptr))), 16))
#define FO_ST_BF16(k, ptr, x) _mm256_mask_storeu_epi16((ptr), (k), fo_bf16_16(x))
"""


def render(rules, variants):
    """``(lowsimd.h text, {(rule name, variant name): (Cython declaration, call args)})``."""
    defs, stubs, made = [], [], {}
    for rule in rules:
        for lv in variants:
            if not supported(lv):
                continue
            try:
                code, stub, cython, args = render_function(rule, lv)
            except Unsupported:
                continue
            defs.append(f"/* rule {rule.name}, variant {lv.name} */\n{code}\n")
            stubs.append(stub)
            made[(rule.name, lv.name)] = (cython, args)
    text = (HEADER_TOP + "\n".join(defs) + "#else\n#define FO_SIMD 0\n" + "\n".join(stubs)
            + "\n#endif\n#endif\n")
    return text, made
