"""Hogwild! against scikit-learn and across thread counts: ``python -m fastopt bench --hogwild``.

* Logistic regression (L2, ``alpha=1e-5``, learning rate ``"optimal"``, 5 epochs) on the
  RCV1-shaped set of :func:`fastopt.hogwild.make_rcv1_like` (80/20 split): test accuracy
  (mean over the rounds' seeds: round k shuffles with seed k in both libraries) and
  training throughput (examples x epochs / seconds of the whole ``fit``; its CPU time too) of
  :class:`fastopt.hogwild.LinearSGD` with one thread and scikit-learn's
  ``SGDClassifier`` (same loss, penalty, alpha, rate and epochs, ``tol=None``), float64
  and float32, then ``LinearSGD`` at every thread count from 1 to the processors.
* Matrix factorisation on the Netflix-shaped set of
  :func:`fastopt.hogwild.make_netflix_like` (90/10 split): held-out RMSE of every epoch
  with one thread and with each larger count, whether it decreased every epoch, and the
  final RMSE relative to the serial run's.

The runs take turns (round-robin, ``repeat`` rounds; medians), so the machine's drift
reaches all alike; a run's throughput is only comparable within one invocation.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from fastopt.bench.load import LoadMeter

LINEAR = dict(loss="log", penalty="l2", alpha=1e-5, epochs=5)


def _sklearn():
    try:
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        return None
    return SGDClassifier


def measure(*, n_samples=20_000, n_features=800_000, density=0.0015, threads=None, repeat=3, n_users=100_000,
            n_items=5_000, mf_density=0.01, mf_epochs=10, seed=0, sklearn=True, emit=print):
    """Run both parts; returns a JSON-ready dict (``linear``, ``mf``, ``meta``). With
    ``sklearn`` (and scikit-learn installed) its ``SGDClassifier`` runs beside: its wheel
    maps a libgomp of its own into the process."""
    from fastopt.hogwild import CSR, LinearSGD, MatrixFactorization, make_netflix_like, make_rcv1_like

    threads = threads or list(range(1, (os.cpu_count() or 1) + 1))
    load = LoadMeter()
    t0 = time.perf_counter()
    X, y, _ = make_rcv1_like(n_samples, n_features, density, seed=seed)
    emit(f"hogwild: RCV1-shaped set {X.shape[0]:,} x {X.shape[1]:,}, {X.nnz / X.shape[0]:.0f} non-zeros per row "
         f"({100 * X.nnz / X.shape[0] / X.shape[1]:.3f}%), made in {time.perf_counter() - t0:.1f} s")
    ntr = int(0.8 * n_samples)
    train, test = X.rows(np.arange(ntr)), X.rows(np.arange(ntr, n_samples))
    ytr, yte = y[:ntr], y[ntr:]
    sets = {"float64": (train, test)}
    sets["float32"] = tuple(CSR(m.data.astype(np.float32), m.indices, m.indptr, m.shape) for m in (train, test))
    SGD = _sklearn() if sklearn else None
    runs = []
    for dt in ("float64", "float32"):
        runs.append(("fastopt", dt, 1))
        if SGD is not None:
            runs.append(("sklearn", dt, 1))
    runs += [("fastopt", "float64", t) for t in threads if t != 1]
    times = {r: [] for r in runs}
    cpu = {r: [] for r in runs}
    acc = {r: [] for r in runs}
    # round k uses seed k for both libraries: one shuffle's accuracy varies by ~0.5 points,
    # so the accuracy reported is the mean over the rounds' seeds
    for rnd in range(repeat):
        for run in runs:
            who, dt, nt = run
            tr, te = sets[dt]
            if who == "fastopt":
                start, c0 = time.perf_counter(), time.process_time()
                m = LinearSGD(threads=nt, seed=rnd, **LINEAR).fit(tr, ytr)
                times[run].append(time.perf_counter() - start)
                cpu[run].append(time.process_time() - c0)
                acc[run].append(m.score(te, yte))
            else:
                Str, Ste = tr.to_scipy(), te.to_scipy()
                clf = SGD(loss="log_loss", penalty=LINEAR["penalty"], alpha=LINEAR["alpha"],
                          max_iter=LINEAR["epochs"], tol=None, random_state=rnd)
                start, c0 = time.perf_counter(), time.process_time()
                clf.fit(Str, ytr)
                times[run].append(time.perf_counter() - start)
                cpu[run].append(time.process_time() - c0)
                acc[run].append(clf.score(Ste, yte))
    work = ntr * LINEAR["epochs"]
    linear = [{"who": who, "dtype": dt, "threads": nt, "seconds": statistics.median(times[(who, dt, nt)]),
               "examples_per_second": work / statistics.median(times[(who, dt, nt)]),
               "cpu_seconds": statistics.median(cpu[(who, dt, nt)]),
               "accuracy": float(np.mean(acc[(who, dt, nt)])), "accuracies": acc[(who, dt, nt)]}
              for who, dt, nt in runs]
    for line in linear_lines(linear):
        emit(line)
    del X, train, test, sets
    data = make_netflix_like(n_users, n_items, mf_density, seed=seed)
    rng = np.random.Generator(np.random.Philox(key=np.array([seed, 3], np.uint64)))
    held = rng.random(data.users.size) < 0.1
    tr = (data.users[~held], data.items[~held], data.ratings[~held])
    te = (data.users[held], data.items[held], data.ratings[held])
    emit(f"hogwild: Netflix-shaped set {n_users:,} users x {n_items:,} items, {data.users.size:,} ratings "
         f"({100 * data.users.size / n_users / n_items:.2f}%)")
    mf = []
    for nt in sorted(set([1] + list(threads))):
        m = MatrixFactorization(32, lr=0.02, reg=0.05, epochs=mf_epochs, threads=nt, seed=0)
        start = time.perf_counter()
        m.fit(*tr, n_users=n_users, n_items=n_items, eval_set=te)
        rm = [h["eval_rmse"] for h in m.history_]
        mf.append({"threads": nt, "rmse": rm, "monotone": all(b < a for a, b in zip(rm, rm[1:])),
                   "seconds": sum(h["seconds"] for h in m.history_),
                   "ratings_per_second": tr[0].size * mf_epochs / sum(h["seconds"] for h in m.history_),
                   "fit_seconds": time.perf_counter() - start})
    for line in mf_lines(mf):
        emit(line)
    other = load.other_cpus()
    meta = {"seconds": time.perf_counter() - t0, "other_load_cpus": other, "cpus": os.cpu_count()}
    if other is not None:
        emit(f"hogwild: other processes used {other:.2f} of {os.cpu_count()} CPUs meanwhile"
             + (" (competing load: the thread-scaling figures are unreliable)" if other > 0.2 else ""))
    return {"linear": linear, "mf": mf, "meta": meta}


def linear_lines(rows):
    """The logistic-regression table: throughput, accuracy and the ratios that matter."""
    out = ["", "Hogwild logistic regression (L2, 5 epochs, lr optimal) on the RCV1-shaped set "
           "(accuracy: mean over the rounds' seeds)",
           "(a busy machine deschedules a process: 'cpu s' (its own CPU time) is the fairer one-thread measure)",
           f"{'run':<28}{'fit s':>9}{'cpu s':>8}{'examples/s':>14}{'accuracy':>10}{'vs sklearn':>12}"
           f"{'(cpu)':>8}{'vs 1 thread':>13}"]
    by = {(r["who"], r["dtype"], r["threads"]): r for r in rows}
    for r in rows:
        sk = by.get(("sklearn", r["dtype"], 1))
        one = by.get((r["who"], r["dtype"], 1))
        vs_sk = f"{r['examples_per_second'] / sk['examples_per_second']:.2f}x" if sk and r["who"] == "fastopt" \
            else ""
        vs_cpu = f"{sk['cpu_seconds'] / r['cpu_seconds']:.2f}x" if sk and r["who"] == "fastopt" \
            and r["threads"] == 1 else ""
        vs_one = f"{r['examples_per_second'] / one['examples_per_second']:.2f}x" if r["who"] == "fastopt" else ""
        name = f"{r['who']} {r['dtype']} {r['threads']} thr"
        out.append(f"{name:<28}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.2f}{r['examples_per_second']:>14,.0f}"
                   f"{100 * r['accuracy']:>9.2f}%{vs_sk:>12}{vs_cpu:>8}{vs_one:>13}")
    ours, sk, two = by.get(("fastopt", "float64", 1)), by.get(("sklearn", "float64", 1)), \
        by.get(("fastopt", "float64", 2))
    if ours and sk:
        out.append(f"targets: accuracy fastopt - sklearn {100 * (ours['accuracy'] - sk['accuracy']):+.2f} points "
                   f"(within 0.5); one-thread throughput {ours['examples_per_second'] / sk['examples_per_second']:.2f}x"
                   f" wall, {sk['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU (>= 5x)")
    if ours and two:
        out.append(f"targets: 2 threads {two['examples_per_second'] / ours['examples_per_second']:.2f}x one thread "
                   f"(>= 1.7x; needs 2 idle cores)")
    return out


def mf_lines(rows):
    """The matrix-factorisation table: held-out RMSE per epoch for each thread count."""
    serial = rows[0]["rmse"][-1]
    out = ["", "Hogwild matrix factorisation (32 factors) on the Netflix-shaped set: held-out RMSE per epoch",
           f"{'threads':>7}{'ratings/s':>13}{'final RMSE':>12}{'vs serial':>11}{'monotone':>10}  RMSE by epoch"]
    for r in rows:
        out.append(f"{r['threads']:>7}{r['ratings_per_second']:>13,.0f}{r['rmse'][-1]:>12.4f}"
                   f"{100 * (r['rmse'][-1] / serial - 1):>+10.2f}%{'yes' if r['monotone'] else 'NO':>10}  "
                   + " ".join(f"{x:.4f}" for x in r["rmse"]))
    return out
