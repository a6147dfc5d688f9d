"""Hogwild! trainers: an epoch of logistic regression on the RCV1-shaped set for every
thread count and scikit-learn's ``SGDClassifier`` on the same data, and an epoch of
matrix factorisation on the Netflix-shaped set.

Accuracy, held-out RMSE and throughput go into ``extra_info`` (printed with ``-s``).
Run: ``python -m pytest benchmarks/test_bench_hogwild.py --benchmark-only -s``. The data
sets are made once per session (RCV1-shaped: 10,000 x 800,000 at 0.15%, about a minute
to make; Netflix-shaped: 50,000 x 5,000 at 1%).
"""
import os

import numpy as np
import pytest

from fastopt.hogwild import LinearSGD, MatrixFactorization, make_netflix_like, make_rcv1_like

COUNTS = list(range(1, (os.cpu_count() or 1) + 1))


@pytest.fixture(scope="session")
def rcv1():
    X, y, _ = make_rcv1_like(10_000, 800_000, 0.0015, seed=0)
    ntr = 8000
    return X.rows(np.arange(ntr)), y[:ntr], X.rows(np.arange(ntr, 10_000)), y[ntr:]


@pytest.fixture(scope="session")
def netflix():
    d = make_netflix_like(50_000, 5_000, 0.01, seed=0)
    held = np.random.default_rng(0).random(d.users.size) < 0.1
    return ((d.users[~held], d.items[~held], d.ratings[~held]), (d.users[held], d.items[held], d.ratings[held]),
            d.n_users, d.n_items)


@pytest.mark.parametrize("nthreads", COUNTS, ids=[f"t{t}" for t in COUNTS])
def test_logistic_fastopt(benchmark, rcv1, nthreads):
    Xtr, ytr, Xte, yte = rcv1
    model = benchmark.pedantic(lambda: LinearSGD(alpha=1e-5, epochs=5, threads=nthreads).fit(Xtr, ytr),
                               rounds=3, iterations=1)
    benchmark.extra_info.update({"accuracy": model.score(Xte, yte),
                                 "examples_per_second": Xtr.shape[0] * 5 / benchmark.stats.stats.median})


def test_logistic_sklearn(benchmark, rcv1):
    sk = pytest.importorskip("sklearn.linear_model")
    Xtr, ytr, Xte, yte = rcv1
    S, T = Xtr.to_scipy(), Xte.to_scipy()
    model = benchmark.pedantic(lambda: sk.SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=5, tol=None,
                                                        random_state=0).fit(S, ytr), rounds=3, iterations=1)
    benchmark.extra_info.update({"accuracy": model.score(T, yte),
                                 "examples_per_second": Xtr.shape[0] * 5 / benchmark.stats.stats.median})


@pytest.mark.parametrize("nthreads", COUNTS, ids=[f"t{t}" for t in COUNTS])
def test_matrix_factorisation(benchmark, netflix, nthreads):
    tr, te, nu, ni = netflix
    model = benchmark.pedantic(lambda: MatrixFactorization(32, lr=0.02, reg=0.05, epochs=5, threads=nthreads)
                               .fit(*tr, n_users=nu, n_items=ni, eval_set=te), rounds=2, iterations=1)
    rmse = [h["eval_rmse"] for h in model.history_]
    benchmark.extra_info.update({"held_out_rmse": rmse, "monotone": all(b < a for a, b in zip(rmse, rmse[1:])),
                                 "ratings_per_second": tr[0].size * 5 / benchmark.stats.stats.median})
