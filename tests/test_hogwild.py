"""fastopt.hogwild: the one-thread epoch kernels against the NumPy reference bit for bit,
reproducibility from a seed, the lock-free runs judged by the loss they reach, and the
linear models against scikit-learn's SGDClassifier."""
import importlib.util
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastopt._kernels import hogwild as K
from fastopt.hogwild import CSR, LinearSGD, MatrixFactorization, make_netflix_like, make_rcv1_like
from fastopt.hogwild import linear as linear_mod
from fastopt.hogwild import mf as mf_mod
from fastopt.reference import hogwild as R
from fastopt.schedules import CosineAnnealing, StepDecay
from subproc import assert_ok, run_snippet


def small_csr(n, d, per_row, seed, dtype=np.float64, index=np.int32, empty_rows=()):
    rng = np.random.default_rng(seed)
    indptr = [0]
    cols, vals = [], []
    for r in range(n):
        k = 0 if r in empty_rows else int(rng.integers(1, per_row + 1))
        c = np.sort(rng.choice(d, min(k, d), replace=False))
        cols.append(c)
        vals.append(rng.standard_normal(c.size) / np.sqrt(max(c.size, 1)))
        indptr.append(indptr[-1] + c.size)
    return CSR(np.concatenate(vals).astype(dtype), np.concatenate(cols).astype(index), np.array(indptr, np.int64),
               (n, d))


def labels_for(X, loss, seed):
    rng = np.random.default_rng(seed + 1)
    w = rng.standard_normal(X.shape[1])
    p = linear_mod.csr_dot(X.indptr, X.indices, X.data, w)
    if loss == "squared":
        return p + 0.1 * rng.standard_normal(p.size)
    return np.where(p + 0.3 * rng.standard_normal(p.size) > 0, 1.0, -1.0)


def with_reference(monkeypatch):
    """Run fit's epochs through the NumPy reference instead of the kernel."""
    def lin(*args, threads, **kw):
        return R.linear_epoch(*args, **kw)

    def mf(*args, threads, **kw):
        return R.mf_epoch(*args, **kw)
    monkeypatch.setattr(linear_mod._k, "linear_epoch", lin)
    monkeypatch.setattr(mf_mod._k, "mf_epoch", mf)


def fit_both(monkeypatch, make, *fit_args, **fit_kw):
    kernel = make().fit(*fit_args, **fit_kw)
    with monkeypatch.context() as m:
        with_reference(m)
        ref = make().fit(*fit_args, **fit_kw)
    return kernel, ref


def assert_same_linear(a, b):
    assert a.coef_.dtype == b.coef_.dtype
    np.testing.assert_array_equal(a.coef_.view(np.uint8), b.coef_.view(np.uint8))
    assert np.float64(a.intercept_).tobytes() == np.float64(b.intercept_).tobytes()
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]


CASES = [
    # loss, penalty, rule, lr, extra
    ("log", "l2", "sgd", "optimal", {}),
    ("log", "l1", "sgd", "optimal", {}),
    ("log", "elasticnet", "sgd", "optimal", {"l1_ratio": 0.3}),
    ("hinge", "l2", "sgd", "invscaling", {"eta0": 0.05, "power_t": 0.4}),
    ("hinge", "elasticnet", "sgd", "constant", {"eta0": 0.02}),
    ("squared", "l2", "sgd", "invscaling", {"eta0": 0.01}),
    ("squared", "l1", "sgd", StepDecay(0.02, 2, 0.5), {}),
    ("log", "none", "sgd", CosineAnnealing(0.1, 4), {"fit_intercept": False}),
    ("log", "l2", "adagrad", 0.1, {}),
    ("squared", "none", "adagrad", 0.05, {}),
    ("hinge", "l2", "adagrad", 0.05, {"fit_intercept": False}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss,penalty,rule,lr,extra", CASES)
def test_linear_kernel_matches_reference_bitwise(monkeypatch, dtype, loss, penalty, rule, lr, extra):
    X = small_csr(97, 41, 13, seed=3, dtype=dtype, empty_rows=(5,))
    y = labels_for(X, loss, 3)
    kw = dict(penalty=penalty, alpha=1e-3, rule=rule, lr=lr, epochs=3, threads=1, seed=11, **extra)
    a, b = fit_both(monkeypatch, lambda: LinearSGD(loss, **kw), X, y)
    assert_same_linear(a, b)
    assert np.any(a.coef_ != 0)


def test_linear_reference_folds_the_scale_mid_epoch(monkeypatch):
    # a shrink of 0.5 per example takes the scale below 1e-9 after 30 examples: the
    # kernel folds it between blocks, many times per epoch, exactly where the reference does
    X = small_csr(200, 30, 9, seed=5, index=np.int64)
    y = labels_for(X, "log", 5)
    kw = dict(penalty="elasticnet", l1_ratio=0.5, alpha=1.0, lr="constant", eta0=1.0, epochs=2, threads=1)
    a, b = fit_both(monkeypatch, lambda: LinearSGD("log", **kw), X, y)
    assert_same_linear(a, b)


def test_linear_kernel_folds_between_blocks_directly():
    X = small_csr(120, 20, 7, seed=8)
    y = labels_for(X, "hinge", 8)
    n = 120
    perm = np.arange(n, dtype=np.int64)
    eta = np.full(n, 0.5)
    shrink = np.full(n, 0.45)
    out = []
    for run in (K.linear_epoch, R.linear_epoch):
        w = np.zeros(20)
        shared = np.array([1.0, 0.0, 0.0])
        kw = dict(loss=1, rule=0, fit_intercept=True, intercept_decay=0.01, alpha_l2=0.0, eps=1e-10)
        if run is K.linear_epoch:
            kw["threads"] = 1
        total = run(w, None, None, shared, X.indptr, X.indices, X.data, y, perm, eta, shrink, None, **kw)
        out.append((w, shared, total))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    assert out[0][1][0] == 1.0 and out[0][2] == out[1][2]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 30), per_row=st.integers(1, 19), seed=st.integers(0, 2 ** 20),
       loss=st.sampled_from(["log", "hinge", "squared"]), penalty=st.sampled_from(["l2", "l1", "elasticnet", "none"]),
       alpha=st.floats(1e-6, 1e-1), l1_ratio=st.floats(0.0, 1.0), eta0=st.floats(1e-4, 0.5),
       lr=st.sampled_from(["constant", "invscaling"]), dtype=st.sampled_from([np.float32, np.float64]),
       shuffle=st.booleans())
def test_linear_hypothesis(n, d, per_row, seed, loss, penalty, alpha, l1_ratio, eta0, lr, dtype, shuffle):
    X = small_csr(n, d, per_row, seed, dtype=dtype)
    y = labels_for(X, loss, seed)
    kw = dict(penalty=penalty, alpha=alpha, l1_ratio=l1_ratio, lr=lr, eta0=eta0, epochs=2, threads=1, seed=seed,
              shuffle=shuffle)
    with pytest.MonkeyPatch.context() as mp:
        a, b = fit_both(mp, lambda: LinearSGD(loss, **kw), X, y)
    assert_same_linear(a, b)


def test_linear_threads1_reproducible_and_seeded():
    X = small_csr(600, 300, 20, seed=1)
    y = labels_for(X, "log", 1)
    a = LinearSGD(epochs=3, threads=1, seed=4).fit(X, y)
    b = LinearSGD(epochs=3, threads=1, seed=4).fit(X, y)
    c = LinearSGD(epochs=3, threads=1, seed=5).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_linear_lock_free_reaches_the_serial_loss(threads):
    X, y, _ = make_rcv1_like(3000, n_features=20_000, density=0.004, informative=0.01, seed=2)
    train, test = X.rows(np.arange(2500)), X.rows(np.arange(2500, 3000))
    def objective(m):
        return np.mean(np.logaddexp(0.0, -y[:2500] * m.decision_function(train)))
    serial = LinearSGD(epochs=4, threads=1).fit(train, y[:2500])
    par = LinearSGD(epochs=4, threads=threads).fit(train, y[:2500])
    # the racing threads visit the examples in another interleaving: the loss they reach
    # is the serial run's up to the spread between shuffles (a few percent here). Reaching
    # it is the point: a lower loss is that spread too (CI once saw 5.2% lower), not a race
    assert objective(par) < 1.05 * objective(serial)
    assert abs(par.score(test, y[2500:]) - serial.score(test, y[2500:])) <= 0.02


def test_l1_gives_truly_sparse_weights():
    X, y, _ = make_rcv1_like(2000, n_features=20_000, density=0.004, informative=0.01, seed=3)
    l1 = LinearSGD(penalty="l1", alpha=1e-4, epochs=3, threads=1).fit(X, y)
    l2 = LinearSGD(penalty="l2", alpha=1e-4, epochs=3, threads=1).fit(X, y)
    touched = np.bincount(X.indices, minlength=X.shape[1]) > 0
    assert np.count_nonzero(l1.coef_[touched]) < 0.5 * np.count_nonzero(l2.coef_[touched])
    assert np.count_nonzero(l2.coef_[touched]) == touched.sum()


def test_mf_kernel_matches_reference_bitwise(monkeypatch):
    data = make_netflix_like(60, 40, 0.2, rank=3, seed=1)
    for dtype in (np.float32, np.float64):
        for rule, lr in (("sgd", 0.05), ("adagrad", 0.1), ("sgd", CosineAnnealing(0.05, 3))):
            def make():
                return MatrixFactorization(5, lr=lr, reg=0.05, epochs=3, threads=1, rule=rule, dtype=dtype, seed=2)
            a, b = fit_both(monkeypatch, make, data.users, data.items, data.ratings)
            np.testing.assert_array_equal(a.P, b.P)
            np.testing.assert_array_equal(a.Q, b.Q)
            assert [h["train_rmse"] for h in a.history_] == [h["train_rmse"] for h in b.history_]


def _mf_split(data, frac=0.1, seed=0):
    rng = np.random.default_rng(seed)
    test = rng.random(data.users.size) < frac
    tr = (data.users[~test], data.items[~test], data.ratings[~test])
    te = (data.users[test], data.items[test], data.ratings[test])
    return tr, te


def test_mf_held_out_rmse_decreases_every_epoch_and_matches_serial():
    data = make_netflix_like(3000, 400, 0.05, rank=4, noise=0.3, seed=4)
    tr, te = _mf_split(data)
    kw = dict(lr=0.04, reg=0.05, epochs=10, seed=1)
    serial = MatrixFactorization(16, threads=1, **kw).fit(*tr, n_users=3000, n_items=400, eval_set=te)
    rmses = [h["eval_rmse"] for h in serial.history_]
    assert all(b < a for a, b in zip(rmses, rmses[1:])), rmses
    assert rmses[-1] < 0.6 * np.std(te[2])
    for threads in (2, 3):
        par = MatrixFactorization(16, threads=threads, **kw).fit(*tr, n_users=3000, n_items=400, eval_set=te)
        prm = [h["eval_rmse"] for h in par.history_]
        assert all(b < a for a, b in zip(prm, prm[1:])), prm
        assert abs(prm[-1] - rmses[-1]) <= 0.02 * rmses[-1]


def test_mf_adagrad_learns():
    data = make_netflix_like(1500, 300, 0.04, rank=5, noise=0.3, seed=6)
    tr, te = _mf_split(data)
    m = MatrixFactorization(8, lr=0.05, rule="adagrad", epochs=6, threads=2).fit(*tr, eval_set=te)
    rm = [h["eval_rmse"] for h in m.history_]
    assert rm[-1] < rm[0] and rm[-1] < 0.95 * np.std(te[2])


def test_early_stopping_keeps_the_best_epoch():
    X, y, _ = make_rcv1_like(1500, n_features=5000, density=0.01, informative=0.02, seed=9)
    m = LinearSGD(lr="constant", eta0=0.5, alpha=1e-6, epochs=40, early_stopping=True, n_iter_no_change=2,
                  tol=1e-3, threads=1).fit(X, y)
    assert m.n_iter_ < 40
    scores = [h["score"] for h in m.history_]
    assert all(s is not None for s in scores)
    # the kept weights are the best epoch's: their validation accuracy is the best recorded
    from fastopt.hogwild._run import split_validation
    _, valid = split_validation(1500, 0.1, 0)
    assert m.score(X.rows(valid), y[valid]) == max(scores)


def test_progress_prints_one_line_per_epoch(capsys):
    X = small_csr(50, 20, 5, seed=1)
    LinearSGD(epochs=2, threads=1, progress=True).fit(X, labels_for(X, "log", 1))
    err = capsys.readouterr().err
    assert err.count("hogwild epoch") == 2 and "examples/s" in err


def test_rcv1_like_shape():
    X, y, w = make_rcv1_like(400, seed=7)
    assert X.shape == (400, 800_000)
    density = X.nnz / (400 * 800_000)
    assert 0.0012 < density < 0.0018
    counts = np.bincount(X.indices, minlength=800_000)
    top = np.sort(counts)[::-1]
    # power law: the most frequent feature is in most rows, most features in none
    assert top[0] > 0.5 * 400 and np.count_nonzero(counts) < 0.5 * 800_000
    np.testing.assert_allclose(np.sqrt(np.add.reduceat(X.data ** 2, X.indptr[:-1])), 1.0, rtol=1e-12)
    assert 0.4 < np.mean(y == 1) < 0.6
    X2, y2, _ = make_rcv1_like(400, seed=7)
    np.testing.assert_array_equal(X.indices, X2.indices)
    np.testing.assert_array_equal(y, y2)


def test_netflix_like_shape():
    d = make_netflix_like(2000, 500, 0.01, seed=3)
    assert d.users.size == 10_000
    assert np.unique(d.users * 500 + d.items).size == d.users.size
    per_user = np.bincount(d.users, minlength=2000)
    assert per_user.max() > 10 * np.median(per_user)
    assert 1.0 <= d.ratings.min() and d.ratings.max() <= 5.0


def test_sklearn_accuracy_within_half_a_point():
    # same loss, penalty, alpha, learning rate and epochs; the shuffles differ, and one
    # seed's accuracy varies by ~0.5 points, so the mean over three seeds is compared.
    # In a fresh interpreter: scikit-learn's wheel maps a libgomp of its own, which would
    # stay in this process beside the one fastopt shares with torch.
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed")
    result = run_snippet("""
        import json
        import numpy as np
        from sklearn.linear_model import SGDClassifier
        from fastopt.hogwild import LinearSGD, make_rcv1_like
        X, y, _ = make_rcv1_like(12_000, n_features=100_000, density=0.003, informative=0.01, seed=11)
        ntr = 8000
        train, test = X.rows(np.arange(ntr)), X.rows(np.arange(ntr, 12_000))
        strain, stest = train.to_scipy(), test.to_scipy()
        out = {}
        for loss, penalty, skloss in (("log", "l2", "log_loss"), ("hinge", "elasticnet", "hinge")):
            ours, theirs = [], []
            for seed in range(3):
                m = LinearSGD(loss, penalty=penalty, alpha=1e-5, epochs=5, threads=1, seed=seed).fit(train, y[:ntr])
                sk = SGDClassifier(loss=skloss, penalty=penalty, alpha=1e-5, max_iter=5, tol=None,
                                   random_state=seed).fit(strain, y[:ntr])
                ours.append(m.score(test, y[ntr:]))
                theirs.append(sk.score(stest, y[ntr:]))
            out[loss + "-" + penalty] = [ours, theirs]
        print(json.dumps(out))
        print("OK")
    """, timeout=600)
    assert_ok(result)
    for case, (ours, theirs) in json.loads(result.stdout.strip().splitlines()[-2]).items():
        assert np.mean(ours) > 0.75, case
        assert abs(np.mean(ours) - np.mean(theirs)) <= 0.005, (case, ours, theirs)


@pytest.mark.parametrize("penalty", ["l2", "elasticnet"])
def test_feature_reordering_changes_no_bits(penalty):
    X, y, _ = make_rcv1_like(500, n_features=3000, density=0.01, seed=12)
    a = LinearSGD(penalty=penalty, epochs=2, threads=1, reorder=True).fit(X, y)
    b = LinearSGD(penalty=penalty, epochs=2, threads=1, reorder=False).fit(X, y)
    np.testing.assert_array_equal(a.coef_.view(np.uint8), b.coef_.view(np.uint8))
    assert a.intercept_ == b.intercept_


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_every_example_is_visited_once_per_epoch_for_any_thread_count(threads):
    # with a zero learning rate the weights stay put, so each example's loss is fixed and
    # the per-chunk sums (added in chunk order) must be the same bits for any thread count
    X = small_csr(3000, 200, 40, seed=4)
    assert X.nnz > K.PARALLEL_WORK          # large enough for the team
    y = labels_for(X, "squared", 4)
    n = X.shape[0]
    w0 = np.random.default_rng(0).standard_normal(200)
    perm = np.random.default_rng(1).permutation(n).astype(np.int64)
    zero = np.zeros(n)
    totals = []
    for t in (1, threads):
        w = w0.copy()
        shared = np.array([1.0, 0.25, 0.0])
        totals.append(K.linear_epoch(w, None, None, shared, X.indptr, X.indices, X.data, y, perm, zero, None, None,
                                     loss=2, rule=0, fit_intercept=True, intercept_decay=1.0, alpha_l2=0.0,
                                     eps=1e-10, threads=t))
        np.testing.assert_array_equal(w, w0)
    assert totals[0] == totals[1]
    P = np.random.default_rng(2).standard_normal((200, 4))
    Q = np.random.default_rng(3).standard_normal((100, 4))
    d = make_netflix_like(200, 100, 0.9, seed=5)
    assert d.users.size * 4 > 2 * K.PARALLEL_WORK
    mperm = np.arange(d.users.size, dtype=np.int64)
    sse = [K.mf_epoch(P.copy(), Q.copy(), None, None, d.users, d.items, d.ratings, mperm, mu=3.0, eta=0.0, reg=0.0,
                      eps=1e-10, rule=0, threads=t) for t in (1, threads)]
    assert sse[0] == sse[1]


def test_mf_early_stopping_and_progress(capsys):
    data = make_netflix_like(800, 200, 0.05, rank=3, noise=0.3, seed=7)
    # a rate so high that the validation RMSE soon stops improving
    m = MatrixFactorization(8, lr=0.15, reg=0.0, epochs=40, threads=1, early_stopping=True, n_iter_no_change=2,
                            tol=1e-3, progress=True).fit(data.users, data.items, data.ratings)
    assert m.n_iter_ < 40
    from fastopt.hogwild._run import split_validation
    _, valid = split_validation(data.users.size, 0.1, 0)
    best = max(h["score"] for h in m.history_)
    assert -m.rmse(data.users[valid], data.items[valid], data.ratings[valid]) == best
    assert capsys.readouterr().err.count("hogwild MF epoch") == m.n_iter_
