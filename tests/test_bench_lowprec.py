"""The judged target lines of ``bench --lowprec`` (fastopt.bench.lowprec.target_lines):
each verdict follows the figures it is given."""
from fastopt.bench.lowprec import target_lines


def _rows(q8_ratio=2.0, bf_ms=4.0, torch_bf_ms=4.3, ds_bf_ms=3.5, pct=95.0):
    base = {"bytes_per_elem": 0, "state_bytes": None, "pct_stream": None}
    rows = [dict(base, name="fp32 Adam", ms=5.0, vs_fp32=1.0, pct_stream=100.0, state_bytes=1000),
            dict(base, name="8-bit state, fp32 params", ms=5.0 * q8_ratio, vs_fp32=q8_ratio, pct_stream=pct,
                 state_bytes=254),
            dict(base, name="bf16 state, fp32 params", ms=3.8, vs_fp32=0.76, pct_stream=100.0, state_bytes=500),
            dict(base, name="all bf16 (params, grads, state)", ms=bf_ms, vs_fp32=bf_ms / 5.0, pct_stream=pct,
                 state_bytes=500),
            dict(base, name="torch fused Adam bf16", ms=torch_bf_ms, vs_fp32=torch_bf_ms / 5.0),
            dict(base, name="bitsandbytes Adam8bit (CPU)", ms=160.0, vs_fp32=32.0)]
    if ds_bf_ms is not None:
        rows.append(dict(base, name="DeepSpeed CPU Adam all-bf16", ms=ds_bf_ms, vs_fp32=ds_bf_ms / 5.0))
    return rows


LOSSES = {"MLP": {"fp32": 1.0, "8bit": 0.999, "bfloat16": 1.0168, "bfloat16 SR": 0.9957}}
DEV = {"8-bit state": 0.0219, "bitsandbytes Adam8bit": 0.0219}


def _verdicts(lines):
    return {line.split(": ", 1)[1].split(":")[0]: "NOT met" not in line for line in lines}


def test_verdicts_follow_the_figures():
    got = _verdicts(target_lines(_rows(), DEV, LOSSES))
    assert got["8-bit Adam (fp32 params) <= 0.65x fp32 Adam's time"] is False
    assert got["8-bit Adam >= 30x faster than bitsandbytes Adam8bit (CPU)"] is False     # 160 / 10 = 16x
    assert got["all-bf16 Adam faster than torch fused Adam bf16"] is True
    assert got["all-bf16 Adam faster than DeepSpeed CPU Adam all-bf16"] is False
    assert got["every variant >= 90% of a stream moving its bytes"] is True
    assert got["state memory 8-bit <= 26% (25.4%), bf16 50% (50.0%)"] is True
    assert got["8-bit and bf16-state (nearest rounding) final losses within 1% of fp32 (worst 1.68%, "
               "MLP bfloat16)"] is False
    assert got["8-bit and bf16-state (stochastic state rounding) final losses within 1% of fp32 (worst 0.43%, "
               "MLP bfloat16 SR)"] is True
    good = _verdicts(target_lines(_rows(q8_ratio=0.6, bf_ms=3.0, pct=80.0), DEV, {"MLP": {"fp32": 1.0, "8bit": 1.0}}))
    assert good["8-bit Adam (fp32 params) <= 0.65x fp32 Adam's time"] is True
    assert good["8-bit Adam >= 30x faster than bitsandbytes Adam8bit (CPU)"] is True      # 160 / 3 = 53x
    assert good["all-bf16 Adam faster than DeepSpeed CPU Adam all-bf16"] is True
    assert [v for k, v in good.items() if k.startswith("every variant")] == [False]      # 80% < 90%
    assert any("below: 8-bit state, fp32 params 80%" in line for line in target_lines(_rows(pct=80.0), DEV, LOSSES))


def test_a_peer_that_is_absent_gives_no_line():
    lines = target_lines(_rows(ds_bf_ms=None), DEV, LOSSES)
    assert not any("DeepSpeed" in line for line in lines)
