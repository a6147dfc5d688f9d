"""fastopt.hogwild refuses bad input with an error naming the argument, before anything is written."""
import numpy as np
import pytest

from fastopt.hogwild import CSR, LinearSGD, MatrixFactorization
from fastopt.schedules import Schedule
from subproc import assert_ok, run_snippet


class NanRate(Schedule):
    """A schedule gone wrong from its second epoch on."""

    def _value(self, s):
        return 0.1 if s == 0 else float("nan")


def good(n=6, d=5):
    data = np.array([1.0, 2.0, 0.5, -1.0, 0.25, 3.0, 1.5])
    indices = np.array([0, 3, 1, 2, 4, 0, 4], np.int32)
    indptr = np.array([0, 2, 3, 5, 5, 6, 7], np.int64)
    return CSR(data, indices, indptr, (n, d)), np.array([1.0, -1, 1, -1, 1, -1])


def snapshot(X, y):
    return [np.array(a, copy=True) for a in (X.data, X.indices, X.indptr, y)]


def unchanged(X, y, before):
    for a, b in zip((X.data, X.indices, X.indptr, y), before):
        np.testing.assert_array_equal(a, b)


def bad_csr(kind):
    X, y = good()
    if kind == "unsorted":
        X.indices[0], X.indices[1] = 3, 0
    elif kind == "duplicate":
        X.indices[1] = 0
    elif kind == "range":
        X.indices[4] = 5
    elif kind == "negative":
        X.indices[4] = -1
    elif kind == "nan":
        X.data[2] = np.nan
    elif kind == "inf":
        X.data[2] = np.inf
    elif kind == "indptr":
        X.indptr[3] = 2
    return X, y


@pytest.mark.parametrize("kind,match", [
    ("unsorted", r"X has unsorted column indices in row 0"),
    ("duplicate", r"X has duplicate column indices in row 0"),
    ("range", r"X.indices must lie in \[0, 5\), found 5"),
    ("negative", r"X.indices must lie in \[0, 5\), found -1"),
    ("nan", r"X.data must be finite"),
    ("inf", r"X.data must be finite"),
    ("indptr", r"X.indptr must start at 0, never decrease"),
])
def test_bad_csr(kind, match):
    X, y = bad_csr(kind)
    before = snapshot(X, y)
    m = LinearSGD(threads=1)
    with pytest.raises(ValueError, match=match):
        m.fit(X, y)
    unchanged(X, y, before)
    assert m.coef_ is None


def test_scipy_matrices():
    sp = pytest.importorskip("scipy.sparse")
    X, y = good()
    S = X.to_scipy()
    a = LinearSGD(threads=1, epochs=2).fit(S, y)
    b = LinearSGD(threads=1, epochs=2).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    with pytest.raises(TypeError, match=r"X must be in CSR format, got 'csc'"):
        LinearSGD().fit(sp.csc_matrix(S), y)
    unsorted = sp.csr_matrix((np.array([1.0, 2.0]), np.array([3, 1]), np.array([0, 2])), shape=(1, 5))
    with pytest.raises(ValueError, match="unsorted"):
        LinearSGD().fit(unsorted, [1.0])


@pytest.mark.parametrize("X,err,match", [
    (np.ones((6, 5)), TypeError, "X must be a CSR matrix"),
    ("x", TypeError, "X must be a CSR matrix"),
])
def test_not_csr(X, err, match):
    with pytest.raises(err, match=match):
        LinearSGD().fit(X, np.ones(6))


def test_wrong_dtypes_and_shapes():
    X, y = good()
    with pytest.raises(TypeError, match=r"X.data must be a 1-D float32 or float64 array, got int64"):
        LinearSGD().fit(CSR(X.data.astype(np.int64), X.indices, X.indptr, X.shape), y)
    with pytest.raises(TypeError, match=r"X.indices must be a 1-D integer array"):
        LinearSGD().fit(CSR(X.data, X.indices.astype(np.float64), X.indptr, X.shape), y)
    with pytest.raises(ValueError, match=r"X.indptr must have 7 entries"):
        LinearSGD().fit(CSR(X.data, X.indices, X.indptr[:-1], X.shape), y)
    with pytest.raises(ValueError, match=r"y must have shape \(6,\)"):
        LinearSGD().fit(X, y[:5])
    with pytest.raises(TypeError, match=r"y must hold numbers"):
        LinearSGD().fit(X, np.array(["a"] * 6))


@pytest.mark.parametrize("loss", ["log", "hinge"])
@pytest.mark.parametrize("labels,found", [([0, 1, 0, 1, 0, 1], "0.0"), ([1, -1, 1, -1, 2, -1], "2.0")])
def test_labels_outside_the_loss_domain(loss, labels, found):
    X, _ = good()
    with pytest.raises(ValueError, match=rf"y must hold only -1 and \+1 for loss='{loss}', found {found}"):
        LinearSGD(loss).fit(X, np.array(labels, float))


def test_squared_loss_takes_any_finite_target_but_not_nan():
    X, _ = good()
    LinearSGD("squared", lr="constant", eta0=0.01, epochs=1).fit(X, np.arange(6.0))
    with pytest.raises(ValueError, match="y must be finite"):
        LinearSGD("squared").fit(X, np.array([0, 1, np.nan, 1, 2, 3.0]))


@pytest.mark.parametrize("kw,err,match", [
    ({"loss": "squared_hinge"}, ValueError, "loss must be one of"),
    ({"penalty": "l3"}, ValueError, "penalty must be one of"),
    ({"alpha": -1.0}, ValueError, "alpha must be >= 0"),
    ({"alpha": float("nan")}, ValueError, "alpha must be finite"),
    ({"l1_ratio": 1.5}, ValueError, "l1_ratio must be <= 1"),
    ({"lr": "adaptive"}, ValueError, "lr must be one of"),
    ({"lr": -0.1}, ValueError, "lr must be > 0"),
    ({"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({"epochs": 2.5}, TypeError, "epochs must be an integer"),
    ({"threads": -1}, ValueError, "invalid threads -1"),
    ({"threads": 10 ** 6}, ValueError, "invalid threads"),
    ({"seed": -3}, ValueError, "seed must be an integer"),
    ({"rule": "adam"}, ValueError, "rule must be one of"),
    ({"rule": "adagrad", "penalty": "l1"}, ValueError, "rule='adagrad' supports penalty 'l2' or 'none'"),
    ({"validation_fraction": 1.0}, ValueError, "validation_fraction must be < 1"),
])
def test_bad_options(kw, err, match):
    kw = dict(kw)
    loss = kw.pop("loss", "log")
    with pytest.raises(err, match=match):
        LinearSGD(loss, **kw)


@pytest.mark.parametrize("kw,match", [
    ({"lr": "constant"}, r"lr='constant' needs eta0 > 0"),
    ({"lr": "constant", "eta0": 2.0, "alpha": 1.0}, r"the L2 shrink 1 - lr alpha \(1 - l1_ratio\) must stay"),
    ({"lr": NanRate(), "epochs": 3}, r"lr must give finite rates >= 0, epoch 1 got nan"),
    ({"lr": "optimal", "alpha": 0.0, "penalty": "none"}, r"lr='optimal' needs alpha > 0"),
])
def test_bad_rate_plans_refused_before_training(kw, match):
    X, y = good()
    m = LinearSGD(**kw)
    with pytest.raises(ValueError, match=match):
        m.fit(X, y)
    assert m.coef_ is None


def test_divergence_is_reported():
    X, y = good()
    X32 = CSR(X.data.astype(np.float32), X.indices, X.indptr, X.shape)
    with pytest.raises(FloatingPointError, match="the weights became non-finite in epoch 0"):
        LinearSGD("squared", penalty="none", lr="constant", eta0=1e30, epochs=3).fit(X32, y * 1e30)


def test_mf_bad_input():
    u, i, r = np.array([0, 1, 2]), np.array([0, 1, 1]), np.array([3.0, 4.0, 5.0])
    m = MatrixFactorization(4, threads=1)
    with pytest.raises(ValueError, match=r"items must lie in \[0, 1\), found 1"):
        m.fit(u, i, r, n_items=1)
    with pytest.raises(ValueError, match=r"users must lie in >= 0, found -1"):
        m.fit(np.array([0, -1, 2]), i, r)
    with pytest.raises(TypeError, match=r"users must be a 1-D integer array, got float64"):
        m.fit(u.astype(float), i, r)
    with pytest.raises(ValueError, match=r"ratings must be finite"):
        m.fit(u, i, np.array([3.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"must have one equal length"):
        m.fit(u, i[:2], r)
    with pytest.raises(ValueError, match=r"eval_set items must lie in"):
        m.fit(u, i, r, eval_set=(u, i + 5, r))
    with pytest.raises(ValueError, match=r"lr must give finite rates"):
        MatrixFactorization(4, lr=NanRate(), epochs=2).fit(u, i, r)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        MatrixFactorization(4, dtype=np.int32)
    assert m.P is None


def test_optimal_rate_without_penalty_uses_alpha():
    X, y = good()
    m = LinearSGD(penalty="none", alpha=1e-3, epochs=1).fit(X, y)
    assert m.history_[0]["lr"] > 0.0 and np.any(m.coef_ != 0)


@pytest.mark.parametrize("case", ["rewrite_indices", "negative_rate"])
def test_schedule_runs_only_before_training(case):
    # a schedule used to be called again at each epoch, after X and its rates were
    # checked: it could rewrite X.indices (the kernel wrote out of range: segfault) or
    # give a negative rate that trained silently
    from fastopt.schedules import Constant
    n, d = 50, 20
    indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    indices = np.tile(np.array([1, 5], np.int64), n)
    X = CSR(np.ones(2 * n), indices, indptr, (n, d))
    y = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)
    calls = []

    class Evil(Constant):
        def __call__(self, s):
            calls.append(s)
            if len(calls) > 2:
                if case == "rewrite_indices":
                    indices[1] = 10 ** 9
                else:
                    return -1e6
            return super().__call__(s)

    evil = LinearSGD(lr=Evil(0.01), epochs=2, threads=1, shuffle=False).fit(X, y)
    indices[1] = 5
    plain = LinearSGD(lr=Constant(0.01), epochs=2, threads=1, shuffle=False).fit(X, y)
    assert np.array_equal(evil.coef_, plain.coef_) and evil.intercept_ == plain.intercept_
    assert calls == [0, 1]


def test_mf_uint64_ids_beyond_int64_are_refused():
    # 2**64 - 1 wrapped to -1 in the int64 conversion after the range check: a negative
    # row count, and the kernel read out of bounds
    with pytest.raises(ValueError, match="users must lie in"):
        MatrixFactorization(epochs=1, threads=1).fit(np.array([0, 2 ** 64 - 1], np.uint64), np.array([0, 1]),
                                                     np.array([1.0, 2.0]))


def test_mf_schedule_cannot_rewrite_checked_ids():
    # the schedule ran after users/items (used in place) were checked: it could put an
    # id out of range before the kernel indexed with it (segfault)
    from fastopt.schedules import Constant
    u, i, r = np.array([0, 1, 2, 0]), np.array([0, 1, 0, 2]), np.array([1.0, 2.0, 3.0, 4.0])

    class Evil(Constant):
        def __call__(self, s):
            u[1] = 10 ** 9
            return super().__call__(s)

    with pytest.raises(ValueError, match=r"users must lie in \[0, 3\)"):
        MatrixFactorization(lr=Evil(0.01), epochs=2, threads=1).fit(u, i, r, n_users=3, n_items=3)


# X (and the ratings' ids) are read in place by kernels that run without the GIL for the
# whole fit. The progress line is printed between epochs: a stderr that attacks the
# arrays at that point acts exactly as another Python thread could during an epoch.
_ATTACK = """
    import sys, numpy as np
    from fastopt.hogwild import LinearSGD, MatrixFactorization, make_rcv1_like, make_netflix_like
    tried = []
    class Attack:
        def __init__(self, arrays):
            self.arrays = arrays
        def write(self, text):
            for a in self.arrays:
                try:
                    a.resize(a.size * 4, refcheck=False)      # would free the block the kernels read
                    tried.append("resized")
                except ValueError as exc:
                    tried.append(str(exc))
                a[:] = np.iinfo(a.dtype).max if a.dtype.kind == "i" else a   # out-of-range ids
        def flush(self):
            pass
"""


def test_hogwild_linear_inputs_cannot_be_freed_or_sent_out_of_range_during_fit():
    r = run_snippet(_ATTACK + """
    X, y, _ = make_rcv1_like(n_samples=3000, n_features=50_000, seed=1)
    assert X.indices.dtype == np.int32
    real = sys.stderr
    sys.stderr = Attack([X.indices, X.data])
    m = LinearSGD(loss="hinge", epochs=3, progress=True, threads=2, seed=0).fit(X, y)
    sys.stderr = real
    assert tried and all("cannot resize" in t for t in tried), tried
    assert m.coef_.shape == (50_000,)
    X.indices.resize(X.indices.size * 2, refcheck=False)      # released when fit returned
    print("OK")
    """)
    assert_ok(r)


def test_hogwild_mf_ids_cannot_be_freed_or_sent_out_of_range_during_fit():
    r = run_snippet(_ATTACK + """
    data = make_netflix_like(n_users=2000, n_items=300, seed=2)
    u, i, rating = data.users.astype(np.int64), data.items.astype(np.int64), data.ratings
    real = sys.stderr
    sys.stderr = Attack([u, i])
    m = MatrixFactorization(n_factors=8, epochs=3, progress=True, threads=2, seed=0).fit(u, i, rating)
    sys.stderr = real
    assert tried and all("cannot resize" in t for t in tried), tried
    assert m.P.shape == (2000, 8)
    print("OK")
    """)
    assert_ok(r)
