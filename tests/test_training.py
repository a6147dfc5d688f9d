"""fastopt.training: the data loop, early stopping (with the fused copy), optimizer paths."""
import importlib.util
import time

import numpy as np
import pytest

import fastopt
from fastopt.problems import LogisticRegression, SoftmaxRegression, TwoLayerMLP
from fastopt.schedules import ReduceOnPlateau
from fastopt.training import ALGOS, EarlyStopping, make_optimizer, minibatches, optimizer_path, train


def test_minibatches_sizes_cover_every_example_once():
    rng = np.random.default_rng(0)
    for b, sizes in ((None, [10]), (10, [10]), (1, [1] * 10), (4, [4, 4, 2])):
        batches = minibatches(10, b, rng=rng)
        assert [len(x) for x in batches] == sizes
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(10))


def test_minibatches_are_reshuffled_every_epoch_and_curriculum_keeps_its_order():
    rng = np.random.default_rng(0)
    e1, e2 = np.concatenate(minibatches(50, 5, rng=rng)), np.concatenate(minibatches(50, 5, rng=rng))
    assert not np.array_equal(e1, e2) and not np.array_equal(e1, np.arange(50))
    np.testing.assert_array_equal(np.concatenate(minibatches(50, 5, shuffle=False)), np.arange(50))
    order = np.arange(50)[::-1]
    np.testing.assert_array_equal(np.concatenate(minibatches(50, 5, rng=rng, order=order)), order)
    with pytest.raises(ValueError, match="order must be a permutation"):
        minibatches(5, 2, order=[0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="batch_size must be an int"):
        minibatches(5, 0)


def test_train_counts_steps_per_batch_size_and_curriculum_order_is_used():
    prob = LogisticRegression()
    seen = []

    class Spy:
        n = prob.n

        def fun_and_grad(self, w, idx):
            seen.append(np.array(idx))
            return prob.fun_and_grad(w, idx)

        def value(self, w):
            return prob.value(w)
    for b, steps in ((None, 1), (32, 13), (1, 400)):
        w = prob.x0.copy()
        h = train(prob, fastopt.SGD([w], lr=0.1), epochs=2, batch_size=b)
        assert len(h.step_loss) == 2 * steps and h.examples == [400, 800]
    order = np.argsort(np.abs(prob.X[:, :-1] @ np.ones(20)))
    w = prob.x0.copy()
    train(Spy(), fastopt.SGD([w], lr=0.1), epochs=2, batch_size=100, curriculum=order, curriculum_epochs=1)
    np.testing.assert_array_equal(np.concatenate(seen[:4]), order)
    assert not np.array_equal(np.concatenate(seen[4:]), order)


def test_early_stopping_patience_min_delta_and_best_epoch():
    w = np.zeros(3)
    es = EarlyStopping([w], patience=2, min_delta=0.1)
    metrics = [1.0, 0.5, 0.45, 0.3, 0.35, 0.31, 0.2]
    stops = []
    for k, m in enumerate(metrics):
        w[:] = k
        stops.append(es.update(m))
    # 0.45 is no improvement (min_delta 0.1); 0.3 is; then two epochs without: stop
    assert stops == [False, False, False, False, False, True, False][:6] + [stops[6]]
    assert stops.index(True) == 5 and es.best_epoch == 3 and es.best == 0.3
    assert es.restore() and np.array_equal(w, [3.0, 3.0, 3.0])


def test_early_stopping_max_mode_and_no_restore():
    w = np.zeros(2, np.float32)
    es = EarlyStopping(w, patience=1, mode="max", restore_best_weights=False)
    assert not es.update(0.5) and es.update(0.4)
    assert es.best_epoch == 0 and not es.restore()


def test_restore_best_weights_copies_bits_with_the_fused_kernel():
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(100_003).astype(np.float32), rng.standard_normal(7)]
    es = EarlyStopping(ps, patience=3)
    es.update(1.0)
    best = [p.copy() for p in ps]
    for p in ps:
        p += 1.0
    assert not es.update(2.0)
    for a, b in zip(es.best_params, best):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    es.restore()
    for a, b in zip(ps, best):
        assert a.tobytes() == b.tobytes()


def test_early_stopping_bad_input():
    with pytest.raises(TypeError, match="params must be"):
        EarlyStopping([np.arange(3)])
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping([np.zeros(2)], patience=-1)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping([np.zeros(2)], min_delta=-1.0)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping([np.zeros(2)], mode="up")
    with pytest.raises(ValueError, match="metric"):
        EarlyStopping([np.zeros(2)]).update(float("nan"))


@pytest.mark.parametrize("algo", ["sgd", "adam", "rmsprop", "adagrad"])
def test_early_stopping_with_any_optimizer_and_reduce_on_plateau(algo):
    from fastopt.tour import _overfitting_problem
    tr, va = _overfitting_problem()
    lr = {"sgd": 0.5, "adam": 0.05, "rmsprop": 0.01, "adagrad": 0.5}[algo]
    sched = ReduceOnPlateau(lr, patience=3, factor=0.5)
    w = tr.x0.copy()
    es = EarlyStopping([w], patience=15)
    h = train(tr, make_optimizer(algo, [w], lr=sched), epochs=400, val=va.value, early_stopping=es, plateau=sched)
    assert h.stopped_epoch == h.best_epoch + 15
    assert va.value(w) == pytest.approx(min(h.val_loss), rel=1e-12)
    assert h.val_loss[-1] > min(h.val_loss)
    assert min(h.lrs) < lr                       # the plateau schedule lowered the rate


def test_train_rejects_bad_gradients_and_non_finite_losses():
    prob = LogisticRegression()

    class WrongShape:
        n = prob.n

        def fun_and_grad(self, w, idx):
            return 1.0, np.zeros(3)
    w = prob.x0.copy()
    with pytest.raises(ValueError, match="gradient of shape"):
        train(WrongShape(), fastopt.SGD([w], lr=0.1), epochs=1)

    class NaNGrad(WrongShape):
        def fun_and_grad(self, w, idx):
            return 1.0, np.full_like(w, np.nan)
    with pytest.raises(ValueError, match="non-finite gradient"):
        train(NaNGrad(), fastopt.SGD([w], lr=0.1), epochs=1)
    w = prob.x0.copy()
    with pytest.raises(ValueError, match="not finite"), np.errstate(over="ignore", invalid="ignore"):
        train(prob, fastopt.SGD([w], lr=1e300), epochs=3)
    with pytest.raises(ValueError, match="epochs"):
        train(prob, fastopt.SGD([w], lr=0.1), epochs=0)


def test_mlp_on_digits_reaches_95_percent_with_adam_in_a_minute():
    if importlib.util.find_spec("sklearn") is None:   # found, not imported: it loads its own libgomp
        pytest.skip("needs scikit-learn's bundled digits file")
    t0 = time.perf_counter()
    p = TwoLayerMLP()
    w = p.x0.astype(np.float32)
    h = train(p, fastopt.Adam([w], lr=3e-3), epochs=15, batch_size=32, seed=0)    # ≈ 98% (96% after 10)
    elapsed = time.perf_counter() - t0
    acc = p.accuracy(w, p.X_test, p.y_test)
    assert acc >= 0.95, acc
    assert elapsed < 60.0
    assert h.epoch_loss[-1] < 0.25 * h.epoch_loss[0]
    assert len(p.X_test) == 359 and len(p.X) == 1438


def test_softmax_regression_trains_with_minibatches():
    p = SoftmaxRegression()
    w = p.x0.copy()
    h = train(p, fastopt.Adam([w], lr=0.05), epochs=20, batch_size=16)
    assert h.epoch_loss[-1] < 0.2 * p.value(p.x0) and h.epoch_loss[-1] < h.epoch_loss[0] and p.accuracy(w) > 0.9


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithm_descends_on_rosenbrock_from_the_same_start(algo):
    path = optimizer_path("rosenbrock", algo, steps=500)
    assert not path.diverged
    np.testing.assert_array_equal(path.xs[0], [-1.2, 1.0])
    assert path.losses[-1] < 0.1 * path.losses[0]
    assert path.xs.shape == (len(path.losses), 2)


def test_paths_differ_between_algorithms_and_noise_is_seeded():
    a = optimizer_path("beale", "adam", steps=50)
    b = optimizer_path("beale", "momentum", steps=50)
    assert np.abs(a.xs - b.xs).max() > 0.1
    n1 = optimizer_path("saddle", "sgd", steps=20, noise=0.01, seed=1)
    n2 = optimizer_path("saddle", "sgd", steps=20, noise=0.01, seed=1)
    n3 = optimizer_path("saddle", "sgd", steps=20, noise=0.01, seed=2)
    np.testing.assert_array_equal(n1.xs, n2.xs)
    assert not np.array_equal(n1.xs, n3.xs)


def test_optimizer_path_bad_input():
    with pytest.raises(ValueError, match="problem must be one of"):
        optimizer_path("rosenbrok", "sgd")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        optimizer_path("rosenbrock", "adamm")
    with pytest.raises(ValueError, match="x0 must have 2 coordinates"):
        optimizer_path("rosenbrock", "sgd", x0=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="x0 holds inf"):
        optimizer_path("rosenbrock", "sgd", x0=[1.0, np.inf])
    with pytest.raises(TypeError, match="x0 must be a float array"):
        optimizer_path("rosenbrock", "sgd", x0=np.array([1, 2]))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        make_optimizer("newton", [np.zeros(2)])

    from fastopt.problems import Booth

    class Bad(Booth):
        def grad(self, x):
            return np.zeros(3)
    with pytest.raises(ValueError, match="grad returned shape"):
        optimizer_path(Bad(), "sgd", steps=2)
