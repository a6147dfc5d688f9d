"""The kernels' element loops must vectorise: regenerate them, compile with the build's
flags and GCC's vectorisation report, and check every kernel."""
import shutil

import pytest

pytest.importorskip("Cython")
if shutil.which("gcc") is None:
    pytest.skip("gcc is needed for the vectorisation report", allow_module_level=True)

from fastopt._kernels import vecreport  # noqa: E402
from fastopt.rules import RULES  # noqa: E402


def test_every_kernel_loop_vectorises():
    status = vecreport.report()
    assert set(status) == {f"{r.name}_{p}{v}" for r in RULES for p in ("f32", "f64") for v in ("", "+l1")}
    assert [name for name, ok in status.items() if not ok] == []


def test_report_detects_scalar_loops():
    # -O1 does not vectorise: the report must say so rather than pass everything
    status = vecreport.report(flags="-O1 -fno-math-errno -ffp-contract=off")
    assert not any(status.values())


def test_every_row_kernel_loop_vectorises():
    # the sparse row kernels (fastopt/_kernels/rows.pyx): the loop over a touched row's elements
    status = vecreport.report(module="rows")
    assert set(status) == {f"{r.name}_rows_{p}{l1}" for r in RULES for p in ("f32", "f64") for l1 in ("", "+l1")}
    assert [name for name, ok in status.items() if not ok] == []


def test_hogwild_factor_loops_vectorise():
    status = vecreport.hogwild_report()
    lines = sorted({line for line, _ in status})
    # the dot product, the SGD update and the Adagrad update, each for float32 and float64;
    # the dot is an in-order float64 sum (the reference's order): only the updates must vectorise
    assert len(lines) == 3 and len(status) == 6
    assert [k for k, ok in status.items() if k[0] != lines[0] and not ok] == []


RULES_LOW = ("adam", "lion", "ademamix")


def test_low_precision_kernels_vectorise():
    # every low-precision variant (Adam has them all, Lion's sign select is the odd body,
    # AdEMAMix three states: three 8-bit blocks a pass)
    # and the 8-bit block functions' loops
    from fastopt._kernels.lowrules import LOW_GENERATED
    status = vecreport.report_low(RULES_LOW)
    # bfloat16 parameter or working-copy stores have a stochastic-rounding loop (:sr),
    # bfloat16 state stores one more (:ssr, state_rounding="stochastic")
    sr = {"bf16", "bf16_q8", "mx_bf16", "mx_bf16_sbf16", "mx_bf16_q8"}
    ssr = {"f32_sbf16", "bf16", "mx_bf16_sbf16", "mx_f16_sbf16"}
    want = {f"{r}_{v}{loop}" for r, v in LOW_GENERATED if r in RULES_LOW
            for loop in ("", ":lean") + ((":sr",) if v in sr else ()) + ((":ssr",) if v in ssr else ())}
    assert {n for n in status if not n.startswith("fo_q8")} == want
    assert len([n for n in status if n.startswith("fo_q8")]) == 3
    assert [name for name, ok in status.items() if not ok] == []


def test_coalescing_loops_vectorise():
    # the two-row sum (GCC's vectoriser) and the binned sums' line helpers (explicit
    # vectors, not lowered to scalars), float32 and float64
    status = vecreport.sparse_report()
    assert set(status) == {"pair_f32", "pair_f64", "binsum_f32", "binsum_f64"}
    assert [k for k, ok in status.items() if not ok] == []


def test_coalescing_report_detects_scalar_loops():
    # at -O1 (the build's other flags kept) GCC vectorises no loop; the explicit-vector
    # helpers stay vector code
    status = vecreport.sparse_report(flags=vecreport._build_flags().replace("-O3", "-O1"))
    assert status == {"pair_f32": False, "pair_f64": False, "binsum_f32": True, "binsum_f64": True}


def test_packed_arithmetic_tells_vector_from_scalar_code():
    # the helpers' check reads instructions: packed adds on any width pass (AVX-512, and
    # the two 256-bit halves an AVX2 target makes of the same code), one scalar add fails
    head, tail = "\t.type\tfo_bs_line_f, @function\nfo_bs_line_f:\n", "\t.size\tfo_bs_line_f, .-fo_bs_line_f\n"
    zmm = head + "\tvaddpd\t%zmm1, %zmm2, %zmm3\n\tvsubpd\t%zmm3, %zmm2, %zmm2\n" + tail
    ymm = head + "\tvaddpd\t%ymm1, %ymm2, %ymm3\n\tvsubpd\t%ymm3, %ymm2, %ymm2\n" + tail
    scalar = head + "\tvaddpd\t%ymm1, %ymm2, %ymm3\n\tvaddsd\t%xmm1, %xmm2, %xmm3\n" + tail
    clone = zmm.replace("fo_bs_line_f:", "fo_bs_line_f.constprop.0:")
    assert vecreport.packed_arithmetic(zmm, "fo_bs_line_f") and vecreport.packed_arithmetic(ymm, "fo_bs_line_f")
    assert vecreport.packed_arithmetic(clone, "fo_bs_line_f")
    assert not vecreport.packed_arithmetic(scalar, "fo_bs_line_f")
    assert not vecreport.packed_arithmetic(zmm, "fo_bs_line_d")


VECOPS_LOOPS = {"dot", "hub_lanes", "stats", "copy", "scale", "axpy", "xpby", "axpby", "combine_first", "combine_add4",
                "combine_add", "combine_store", "combine_save_x0", "combine_trial"}
# written as explicit GCC vectors: vector code at any optimisation level
VECOPS_HELPERS = {"dot", "hub_lanes", "stats", "combine_add4"}


def test_second_order_vector_kernels_vectorise():
    # fastopt/_kernels/vecops.pyx (L-BFGS, Newton-CG): every loop marked `# vec:` — the
    # blocked dot products, the stats lanes, each form of the pass's write, the compact
    # recursion's chunked dots and combination — in float32 and float64
    status = vecreport.vecops_report()
    assert set(status) == {f"{name}_{p}" for name in VECOPS_LOOPS for p in ("f32", "f64")}
    assert [name for name, ok in status.items() if not ok] == []


def test_vecops_report_detects_scalar_loops():
    # at -O1 nothing is auto-vectorised; only the helpers written as explicit GCC vectors
    # (stats, dot lanes, hub dots, four-term combination) stay vector code
    status = vecreport.vecops_report(flags="-O1 -fno-math-errno -ffp-contract=off -fopenmp")
    assert {name for name, ok in status.items() if ok} == {f"{h}_{p}" for h in VECOPS_HELPERS for p in ("f32", "f64")}


@pytest.mark.parametrize("module, loops", [("meanred", {"first", "add", "store"}),
                                           ("rowwise", {"mean_square", "mean_square_wd", "update"})])
def test_marked_loops_vectorise(module, loops):
    # the distributed mean (meanred.pyx) and row-wise Adagrad (rowwise.pyx): every loop
    # marked `# vec:`, float32 and float64
    status = vecreport.marked_report(module)
    assert set(status) == {f"{name}_{p}" for name in loops for p in ("f32", "f64")}
    assert [k for k, ok in status.items() if not ok] == []
    control = vecreport.marked_report(module, flags="-O1 -fno-math-errno -ffp-contract=off -fopenmp")
    assert set(control) == set(status) and not any(control.values())     # the report can fail
