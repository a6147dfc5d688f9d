"""``bench --lowprec``: Adam with low-precision storage (issue 12) against float32 Adam,
the memory bus and the peers that are installed (torch fused Adam in float32 and
bfloat16, bitsandbytes' and torchao's 8-bit Adam on the CPU, DeepSpeed's CPU Adam in
float32 and all-bfloat16), plus the state memory and the quality
of the updates.

Times are medians over interleaved rounds (every variant once per round, the order
rotating), so a machine's drift reaches all alike; only ratios within one run mean
anything. "% stream" compares each variant with a streaming pass (read one float32
array, read and write another) sized to move the same number of bytes.
"""
import time

import numpy as np

import fastopt
from fastopt import Precision
from fastopt.problems import logistic_regression
from fastopt._kernels.stream import stream

N = 10_240_000
#: (name, parameter dtype, Precision arguments or None): the fastopt rows
VARIANTS = (
    ("fp32 Adam", "float32", None),
    ("8-bit state, fp32 params", "float32", {"state": "8bit"}),
    ("bf16 state, fp32 params", "float32", {"state": "bfloat16"}),
    ("all bf16 (params, grads, state)", "bfloat16", {}),
    ("all bf16, 8-bit state", "bfloat16", {"state": "8bit"}),
    ("mixed bf16: fp32 master+state", "bfloat16", {"master_weights": True}),
    ("mixed bf16, 8-bit state", "bfloat16", {"state": "8bit", "master_weights": True}),
    ("mixed fp16, 8-bit state", "float16", {"state": "8bit", "master_weights": True}),
    ("AdEMAMix fp32", "float32", None, "AdEMAMix"),
    ("AdEMAMix 8-bit state", "float32", {"state": "8bit"}, "AdEMAMix"),
)


def _dtype(name):
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise RuntimeError("bench --lowprec needs ml_dtypes for its bfloat16 rows: "
                               "pip install 'fastopt[lowprec]'") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _fastopt_job(n, dtype, prec, rng, cls="Adam"):
    w = rng.standard_normal(n).astype(np.float32).astype(_dtype(dtype))
    opt = getattr(fastopt, cls)([w], lr=1e-3, precision=None if prec is None else Precision(**prec))
    lp = opt._low[0]
    gdtype = lp.slot.grad_dtypes[0] if lp is not None else w.dtype
    g = (rng.standard_normal(n) * 1e-2).astype(np.float32).astype(gdtype)
    n_state = sum(isinstance(v, np.ndarray) for v in opt.state[0].values())
    bpe = lp.slot.bpe if lp is not None else 4 * (3 + 2 * n_state)     # p read+written, g, each state
    state = sum(v.nbytes for k, v in opt.state[0].items() if isinstance(v, np.ndarray) and k != "master")
    return (lambda: opt.step([g])), bpe, state, opt


def _stream_job(n, bpe, rng):
    m = int(round(n * bpe / 12))           # grad read + one array read and written: 12 bytes an element
    g = rng.standard_normal(m).astype(np.float32)
    w = np.zeros(m, np.float32)
    return lambda: stream(g, [w])


def _torch_jobs(torch, n):
    jobs = {}
    for name, dt in (("torch fused Adam fp32", torch.float32), ("torch fused Adam bf16", torch.bfloat16)):
        p = torch.nn.Parameter(torch.randn(n).to(dt))
        p.grad = (torch.randn(n) * 1e-2).to(dt)
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
        opt.step()
        jobs[name] = (opt.step, 28 if dt == torch.float32 else 14)
    return jobs


def _bnb_jobs(torch, n):
    """bitsandbytes' 8-bit Adam and AdEMAMix on the CPU, or a note saying why there are none."""
    try:
        import bitsandbytes as bnb
    except Exception as exc:                # noqa: BLE001 - any import failure means "not available"
        return {}, f"bitsandbytes not usable ({type(exc).__name__}: {exc})"
    jobs = {}
    for name, cls, bpe in (("bitsandbytes Adam8bit (CPU)", bnb.optim.Adam8bit, 16),
                           ("bitsandbytes AdEMAMix8bit (CPU)", bnb.optim.AdEMAMix8bit, 18)):
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n) * 1e-2
        opt = cls([p], lr=1e-3)
        opt.step()
        jobs[name] = (opt.step, bpe)
    return jobs, f"bitsandbytes {bnb.__version__}"


def _torchao_job(torch, n):
    try:
        import torchao
        from torchao.optim import AdamW8bit
    except Exception as exc:                # noqa: BLE001 - any import failure means "not available"
        return None, f"torchao not usable ({type(exc).__name__}: {exc})"
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n) * 1e-2
    opt = AdamW8bit([p], lr=1e-3, weight_decay=0.0)
    t = time.perf_counter()
    opt.step()                              # compiles (torch.compile): minutes on a busy machine
    return (opt.step, 16), f"torchao {torchao.__version__} (first step, compiling: {time.perf_counter() - t:.0f} s)"


def _deepspeed_jobs(torch, n):
    """DeepSpeed's fused CPU Adam on float32 tensors (28 bytes an element) and on all-bfloat16
    tensors with bfloat16 state (``fp32_optimizer_states=False``: 14 bytes, the all-bf16 row's
    bytes), or a note saying why there are none."""
    try:
        import deepspeed
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:                # noqa: BLE001 - any import failure means "not available"
        return {}, f"DeepSpeed CPU Adam not usable ({type(exc).__name__}: {exc})"
    jobs = {}
    t = time.perf_counter()
    try:
        for name, dt, fp32_state, bpe in (("DeepSpeed CPU Adam fp32", torch.float32, True, 28),
                                          ("DeepSpeed CPU Adam all-bf16", torch.bfloat16, False, 14)):
            p = torch.nn.Parameter(torch.randn(n).to(dt))
            p.grad = (torch.randn(n) * 1e-2).to(dt)
            opt = DeepSpeedCPUAdam([p], lr=1e-3, adamw_mode=False, fp32_optimizer_states=fp32_state)
            opt.step()                      # the first one builds its C++ extension
            jobs[name] = (opt.step, bpe)
    except Exception as exc:                # noqa: BLE001 - its JIT build needs a compiler and ninja
        return {}, f"DeepSpeed CPU Adam not usable ({type(exc).__name__}: {exc})"
    built = time.perf_counter() - t
    return jobs, f"deepspeed {deepspeed.__version__} (first steps, building its CPU Adam: {built:.0f} s)"


def measure_speed(n=N, rounds=7, torch=None, slow_rounds=3):
    """Median step times of every variant and peer, interleaved; returns rows."""
    rng = np.random.default_rng(0)
    jobs, notes = {}, []
    for name, dtype, prec, *cls in VARIANTS:
        fn, bpe, state, _ = _fastopt_job(n, dtype, prec, rng, *cls)
        jobs[name] = (fn, bpe, state)
    streams = {bpe: _stream_job(n, bpe, rng) for _, bpe, _ in jobs.values()}
    peers = {}
    if torch is not None:
        peers.update(_torch_jobs(torch, n))
        more, note = _bnb_jobs(torch, n)
        notes.append(note)
        peers.update(more)
        job, note = _torchao_job(torch, n)
        notes.append(note)
        if job is not None:
            peers["torchao AdamW8bit (CPU)"] = job
        more, note = _deepspeed_jobs(torch, n)
        notes.append(note)
        peers.update(more)
    else:
        notes.append("torch not importable: no torch, bitsandbytes, torchao or DeepSpeed rows")
    times = {k: [] for k in list(jobs) + list(peers) + [f"stream {b}" for b in streams]}
    for fn in [j[0] for j in jobs.values()] + [p[0] for p in peers.values()] + list(streams.values()):
        fn()                                  # warm up: page faults, team start
    order = list(jobs) + list(peers) + [f"stream {b}" for b in streams]
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            if k in peers and ("bitsandbytes" in k or "torchao" in k) and r >= slow_rounds:
                continue                      # ~0.1-0.2 s a step: a few rounds tell
            fn = jobs[k][0] if k in jobs else peers[k][0] if k in peers else streams[int(k.split()[1])]
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    base = med["fp32 Adam"]
    rows = []
    for k, (fn, bpe, state) in jobs.items():
        rows.append({"name": k, "ms": med[k] * 1e3, "vs_fp32": med[k] / base, "bytes_per_elem": bpe,
                     "pct_stream": 100.0 * med[f"stream {bpe}"] / med[k], "state_bytes": state})
    for k, (fn, bpe) in peers.items():
        rows.append({"name": k, "ms": med[k] * 1e3, "vs_fp32": med[k] / base, "bytes_per_elem": bpe,
                     "pct_stream": None, "state_bytes": None})
    return rows, notes


def _adam_updates(n, steps, variants, torch=None, seed=0):
    """Total update after ``steps`` steps of N(0, 1) gradients, per variant, from one start."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    out = {}
    for name, dtype, prec in variants:
        w = w0.astype(_dtype(dtype))
        start = w.astype(np.float64)            # a half parameter starts from w0 rounded
        opt = fastopt.Adam([w], lr=1e-3, precision=None if prec is None else Precision(**prec))
        lp = opt._low[0]
        gd = lp.slot.grad_dtypes[0] if lp is not None else np.float32
        for g in grads:
            opt.step([g.astype(gd)])
        final = opt.state[0]["master"] if lp is not None and lp.mixed else w.astype(np.float32)
        out[name] = final.astype(np.float64) - start
    if torch is not None:
        try:
            import bitsandbytes as bnb
            p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
            opt = bnb.optim.Adam8bit([p], lr=1e-3)
            for g in grads:
                p.grad = torch.from_numpy(g)
                opt.step()
            out["bitsandbytes Adam8bit"] = p.detach().numpy().astype(np.float64) - w0
        except Exception:                     # noqa: BLE001 - optional peer
            pass
    return out


def _mlp_problem(seed=0, n=4096, d=32, h=32):
    # more examples than weights and label noise 0.1: the loss settles near 0.01, not 0
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = np.tanh(X @ rng.standard_normal((d, 1)).astype(np.float32)) + 0.1 * rng.standard_normal((n, 1))
    y = y.astype(np.float32)
    shapes = [(d, h), (h,), (h, 1), (1,)]

    def init():
        r = np.random.default_rng(seed + 1)
        return [(r.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) if len(s) == 2 else
                np.zeros(s, np.float32) for s in shapes]

    def loss_grad(ws):
        w1, b1, w2, b2 = [np.asarray(w, np.float32) for w in ws]
        a = X @ w1 + b1
        z = np.maximum(a, 0)
        out = z @ w2 + b2
        e = out - y
        loss = float(np.mean(e * e))
        de = 2 * e / n
        gw2, gb2 = z.T @ de, de.sum(0)
        dz = (de @ w2.T) * (a > 0)
        return loss, [X.T @ dz, dz.sum(0), gw2, gb2]
    return init, loss_grad


def _final_loss(problem, prec, steps, lr):
    init, loss_grad = problem
    ws = init()
    opt = fastopt.Adam(ws, lr=lr, precision=None if prec is None else Precision(**prec, min_8bit_size=0))
    for _ in range(steps):
        _, gs = loss_grad(ws)
        opt.step([np.asarray(g, np.float32) for g in gs])
    return loss_grad(ws)[0]


#: the low-precision states whose final losses are compared with fp32 Adam's
QUALITY_VARIANTS = {"8bit": {"state": "8bit"}, "bfloat16": {"state": "bfloat16"},
                    "bfloat16 SR": {"state": "bfloat16", "state_rounding": "stochastic"}}


def measure_quality(torch=None, n=1_000_000, steps=100):
    """Relative deviation of the total update from fp32 Adam, and final losses."""
    variants = [("fp32", "float32", None), ("8-bit state", "float32", {"state": "8bit"}),
                ("bf16 state", "float32", {"state": "bfloat16"}),
                ("mixed bf16, 8-bit state", "bfloat16", {"state": "8bit", "master_weights": True})]
    ups = _adam_updates(n, steps, variants, torch)
    ref = ups["fp32"]
    dev = {k: float(np.linalg.norm(v - ref) / np.linalg.norm(ref)) for k, v in ups.items() if k != "fp32"}
    fun, _, dim = logistic_regression(n=2000, dim=300)

    def logreg():
        return (lambda: [np.zeros(dim, np.float32)],
                lambda ws: (lambda fg: (float(fg[0]), [fg[1].astype(np.float32)]))(fun(ws[0].astype(np.float64))))
    losses = {}
    for label, problem, steps_, lr in (("logistic regression (300 weights)", logreg(), 300, 1e-2),
                                       ("MLP 32-32-1 (1.1k weights)", _mlp_problem(), 600, 1e-2)):
        base = _final_loss(problem, None, steps_, lr)
        losses[label] = {"fp32": base}
        for key, prec in QUALITY_VARIANTS.items():
            losses[label][key] = _final_loss(problem, prec, steps_, lr)
    return dev, losses


def speed_lines(rows, notes):
    """The printed speed table."""
    out = [f"Adam, {N:,} elements, low-precision storage (medians of interleaved rounds; ratios only "
           "compare within this run)",
           f"{'variant':34s} {'ms':>8s} {'vs fp32':>8s} {'B/elem':>7s} {'% stream':>9s} {'state / fp32':>13s}"]
    fp32_state = next(r["state_bytes"] for r in rows if r["name"] == "fp32 Adam")
    for r in rows:
        pct = "" if r["pct_stream"] is None else f"{r['pct_stream']:8.0f}%"
        st = "" if r["state_bytes"] is None else f"{100 * r['state_bytes'] / fp32_state:12.1f}%"
        out.append(f"{r['name']:34s} {r['ms']:8.2f} {r['vs_fp32']:7.2f}x {r['bytes_per_elem']:7d} {pct:>9s} {st:>13s}")
    out += [f"  note: {n}" for n in notes]
    return out


def quality_lines(dev, losses):
    """The printed quality comparison."""
    out = []
    out.append("relative deviation of the total update from fp32 Adam (1M elements, 100 steps of N(0,1) gradients):")
    for k, v in dev.items():
        out.append(f"  {k:32s} {100 * v:6.2f}%")
    out.append("final loss vs fp32 Adam (same steps and learning rate):")
    for label, d in losses.items():
        out.append(f"  {label}: fp32 {d['fp32']:.6f}; " + "; ".join(
            f"{k} {v:.6f} ({100 * (v / d['fp32'] - 1):+.2f}%)" for k, v in d.items() if k != "fp32"))
    return out


def target_lines(rows, dev, losses):
    """Issue 12's targets, each judged "met" / "NOT met" from this run's figures (a peer
    that is not installed gives no line)."""
    by = {r["name"]: r for r in rows}
    fp32_state = by["fp32 Adam"]["state_bytes"]
    out = []

    def judge(ok, text):
        out.append(f"  target {'met' if ok else 'NOT met'}: {text}")

    q8 = by["8-bit state, fp32 params"]
    judge(q8["vs_fp32"] <= 0.65, f"8-bit Adam (fp32 params) <= 0.65x fp32 Adam's time: {q8['vs_fp32']:.2f}x")
    for peer in ("bitsandbytes Adam8bit (CPU)", "torchao AdamW8bit (CPU)"):
        if peer in by:
            x = by[peer]["ms"] / q8["ms"]
            judge(x >= 30, f"8-bit Adam >= 30x faster than {peer}: {x:.1f}x")
    bf = by["all bf16 (params, grads, state)"]
    for peer in ("torch fused Adam bf16", "DeepSpeed CPU Adam all-bf16"):
        if peer in by:
            x = by[peer]["ms"] / bf["ms"]
            judge(x > 1.0, f"all-bf16 Adam faster than {peer}: {x:.2f}x")
    slow = [f"{r['name']} {r['pct_stream']:.0f}%" for r in rows if r["pct_stream"] is not None
            and r["pct_stream"] < 90]
    judge(not slow, "every variant >= 90% of a stream moving its bytes" + (f" (below: {', '.join(slow)})"
                                                                          if slow else ""))
    mem = {r["name"]: r["state_bytes"] / fp32_state for r in rows if r["state_bytes"] is not None}
    judge(mem["8-bit state, fp32 params"] <= 0.26 and abs(mem["bf16 state, fp32 params"] - 0.5) < 0.005,
          f"state memory 8-bit <= 26% ({100 * mem['8-bit state, fp32 params']:.1f}%), bf16 50% "
          f"({100 * mem['bf16 state, fp32 params']:.1f}%)")
    for keys, what in ((("8bit", "bfloat16"), "8-bit and bf16-state (nearest rounding)"),
                       (("8bit", "bfloat16 SR"), "8-bit and bf16-state (stochastic state rounding)")):
        worst = max((abs(v / d["fp32"] - 1), f"{label} {k}") for label, d in losses.items() for k, v in d.items()
                    if k in keys)
        judge(worst[0] <= 0.01, f"{what} final losses within 1% of fp32 (worst {100 * worst[0]:.2f}%, "
              f"{worst[1]})")
    if "bitsandbytes Adam8bit" in dev:
        judge(dev["8-bit state"] <= dev["bitsandbytes Adam8bit"] + 1e-4,
              f"8-bit update deviation no worse than bitsandbytes' ({100 * dev['8-bit state']:.2f}% vs "
              f"{100 * dev['bitsandbytes Adam8bit']:.2f}%)")
    return out


def run(torch=None, rounds=7, out=print):
    """Run the whole part and print it; returns the results as a dict."""
    rows, notes = measure_speed(rounds=rounds, torch=torch)
    for line in speed_lines(rows, notes):
        out(line)
    dev, losses = measure_quality(torch=torch)
    for line in quality_lines(dev, losses):
        out(line)
    targets = target_lines(rows, dev, losses)
    for line in ["targets (issue 12; this run's ratios):"] + targets:
        out(line)
    return {"speed": rows, "notes": notes, "update_deviation": dev, "final_loss": losses, "targets": targets}
