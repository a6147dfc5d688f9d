"""A whole CPU training step of a PyTorch model: ``python -m fastopt bench --torch-training``.

The model is an embedding bag (100,000 x 128) feeding a 3-layer MLP (128 -> 2048 ->
2048 -> 1000), about 19.6M float32 parameters, on batches of 64 bags of 16 tokens
with a cross-entropy loss. The embedding's gradient is dense (the whole table), as
with ``nn.EmbeddingBag(sparse=False)``. For each optimizer it times the
forward+backward, the ``opt.step()`` and their sum (medians over the timed steps,
after one warm-up step) for ``fastopt.torch`` and ``torch.optim`` with
``foreach=True`` and, where PyTorch has a fused CPU kernel, ``fused=True``. The
optimizers share the model; each run starts from the same parameter values.
"""
from __future__ import annotations

import statistics
import time

#: (row label, class name, keyword arguments) of the optimizers compared
OPTIMIZERS = (
    ("SGD (momentum 0.9)", "SGD", {"lr": 1e-3, "momentum": 0.9}),
    ("Adam", "Adam", {"lr": 1e-3}),
    ("AdamW", "AdamW", {"lr": 1e-3}),
    ("Adagrad", "Adagrad", {"lr": 1e-2}),
    ("RMSprop", "RMSprop", {"lr": 1e-3}),
    ("Adadelta", "Adadelta", {}),
    ("NAdam", "NAdam", {"lr": 1e-3}),
    ("Adamax", "Adamax", {"lr": 1e-3}),
    ("RAdam", "RAdam", {"lr": 1e-3}),
)
#: the torch.optim classes with a fused CPU kernel (torch >= 2.4)
FUSED = ("SGD", "Adam", "AdamW", "Adagrad")

VOCAB, DIM, HIDDEN, CLASSES, BATCH, BAG = 100_000, 128, 2048, 1000, 64, 16


def build_model(torch, vocab=VOCAB, dim=DIM, hidden=HIDDEN, classes=CLASSES):
    """The embedding+MLP model (float32, dense embedding gradient)."""
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.EmbeddingBag(vocab, dim, mode="mean")
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, classes))

        def forward(self, tokens):
            return self.mlp(self.emb(tokens))

    torch.manual_seed(0)
    return Model()


def _run(torch, model, makers, batches, steps):
    """``{mode: (median fwd+bwd seconds, median optimizer-step seconds)}`` over ``steps``.

    The modes' optimizers are built over the same model and take turns step by step
    (in a rotating order), so that drift of the machine (other load, the bus's speed
    swinging between minutes) reaches every mode alike: only same-run ratios count."""
    opts = {mode: make(model.parameters()) for mode, make in makers.items()}
    loss_fn = torch.nn.CrossEntropyLoss()
    fb = {mode: [] for mode in opts}
    st = {mode: [] for mode in opts}
    order = list(opts)
    for i in range(steps + 1):
        tokens, labels = batches[i % len(batches)]
        for mode in order[i % len(order):] + order[:i % len(order)]:
            opt = opts[mode]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tokens), labels)
            loss.backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if i:                    # the first step allocates the state
                fb[mode].append(t1 - t0)
                st[mode].append(t2 - t1)
    return {mode: (statistics.median(fb[mode]), statistics.median(st[mode])) for mode in opts}


def measure(torch, steps=5, optimizers=OPTIMIZERS, model_kwargs=None, batch=BATCH, bag=BAG):
    """Rows ``{"label", "cls", "params", "runs": {mode: {"fwd_bwd", "step"}}}`` for the
    modes "fastopt", "foreach" and (where torch has one) "fused"."""
    import fastopt.torch as ft

    model = build_model(torch, **(model_kwargs or {}))
    start = [p.detach().clone() for p in model.parameters()]
    nparams = sum(p.numel() for p in start)
    vocab = model.emb.num_embeddings
    classes = model.mlp[-1].out_features
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, vocab, (batch, bag), generator=gen),
                torch.randint(0, classes, (batch,), generator=gen)) for _ in range(4)]
    rows = []
    for label, name, kwargs in optimizers:
        modes = {"fastopt": lambda ps, n=name, kw=kwargs: getattr(ft, n)(ps, **kw),
                 "foreach": lambda ps, n=name, kw=kwargs: getattr(torch.optim, n)(ps, foreach=True, **kw)}
        if name in FUSED:
            modes["fused"] = lambda ps, n=name, kw=kwargs: getattr(torch.optim, n)(ps, fused=True, **kw)
        with torch.no_grad():
            for p, s in zip(model.parameters(), start):
                p.copy_(s)
        runs = {mode: {"fwd_bwd": fwd_bwd, "step": step}
                for mode, (fwd_bwd, step) in _run(torch, model, modes, batches, steps).items()}
        rows.append({"label": label, "cls": name, "params": nparams, "runs": runs})
    return rows


def lines(rows, threads=None):
    """The table: per optimizer and mode, forward+backward, step, total, and torch's
    best step over fastopt's."""
    if not rows:
        return []
    from fastopt.bench.table import fmt_ratio, fmt_time
    out = [f"CPU training step, embedding+MLP, {rows[0]['params'] / 1e6:.1f}M float32 parameters"
           + (f", {threads} threads" if threads else "") + " (median per step):",
           f"{'optimizer':<20}{'mode':>9}{'fwd+bwd':>11}{'opt step':>11}{'total':>11}{'step vs fastopt':>17}"]
    for r in rows:
        mine = r["runs"]["fastopt"]["step"]
        for mode, run in r["runs"].items():
            ratio = "" if mode == "fastopt" else fmt_ratio(run["step"] / mine)
            out.append(f"{r['label'] if mode == 'fastopt' else '':<20}{mode:>9}{fmt_time(run['fwd_bwd']):>11}"
                       f"{fmt_time(run['step']):>11}{fmt_time(run['fwd_bwd'] + run['step']):>11}{ratio:>17}")
    return out
