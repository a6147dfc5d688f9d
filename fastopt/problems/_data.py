"""Problems on a data set: L2-regularised logistic and softmax regression, and a
two-layer ReLU network (NumPy forward, backward and Hessian-vector product).

Each keeps its examples (``X``, ``y``) and evaluates on all of them or on the rows
``idx`` (``value(w, idx)``, ``grad(w, idx)``, ``fun_and_grad(w, idx)``): the mini-batch
of :func:`fastopt.training.minibatches`. Parameters are one flat float vector."""
import numpy as np

from fastopt.problems._base import Problem

__all__ = ["LogisticRegression", "SoftmaxRegression", "TwoLayerMLP", "load_digits", "synthetic_classification"]


def synthetic_classification(n=400, dim=20, classes=2, noise=0.5, seed=0):
    """``(X, y)``: ``n`` Gaussian examples in ``dim`` dimensions, labels ``0..classes-1``
    from the arg-max of random linear scores plus Gaussian ``noise``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim))
    W = rng.standard_normal((dim, classes if classes > 2 else 1))
    scores = X @ W + noise * rng.standard_normal((n, W.shape[1]))
    y = (scores[:, 0] > 0).astype(np.int64) if classes == 2 else np.argmax(scores, axis=1)
    return X, y


def _sklearn_data_file(name):
    """The path of a data file bundled with scikit-learn, found without importing it
    (importing sklearn loads its own vendored libgomp, which would then sit beside the
    one fastopt and torch share)."""
    import importlib.util
    import os
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits data set comes with scikit-learn: pip install scikit-learn "
                          "(or fastopt[data])")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", name)
    if not os.path.exists(path):
        raise ImportError(f"scikit-learn is installed but has no {name} (at {path})")
    return path


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's bundled 8×8 ``digits`` (1797 images, 10 classes; no download; the
    same arrays as ``sklearn.datasets.load_digits``, read from its data file), scaled to
    [0, 1] and split at random (``seed``) into ``(X_train, y_train, X_test, y_test)``."""
    raw = np.loadtxt(_sklearn_data_file("digits.csv.gz"), delimiter=",")
    X, y = raw[:, :-1] / 16.0, raw[:, -1].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1.0 - test_fraction)))
    tr, te = order[:cut], order[cut:]
    return X[tr], y[tr], X[te], y[te]


class _DataProblem(Problem):
    def _data(self, X, y, classes):
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or X.dtype.kind not in "fiu":
            raise ValueError(f"X must be a 2-D numeric array, got shape {X.shape} dtype {X.dtype}")
        if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
            raise ValueError(f"y must be {X.shape[0]} integer labels, got shape {y.shape} dtype {y.dtype}")
        if not np.isfinite(X).all():
            raise ValueError("X holds inf or NaN")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"y must hold labels in 0..{classes - 1}")
        # a bias column: the intercept is one more weight (and, as usual, also decayed by λ)
        self.X = np.hstack([X.astype(np.float64), np.ones((X.shape[0], 1))])
        self.y = y
        self.n = X.shape[0]

    def _rows(self, idx):
        if idx is None:
            return self.X, self.y
        return self.X[idx], self.y[idx]

    def fun_and_grad(self, w, idx=None):
        return float(self.value(w, idx)), self.grad(w, idx)

    def accuracy(self, w, X=None, y=None):
        """Fraction of examples (the training set, or ``X``, ``y``) classified right."""
        if X is None:
            X, y = self.X[:, :-1], self.y
        return float(np.mean(self.predict(w, X) == np.asarray(y)))


class LogisticRegression(_DataProblem):
    """``f(w) = mean_i [log(1 + e^{z_i}) − y_i z_i] + ½ λ ‖w‖²`` with ``z = [X 1] w``,
    labels ``y ∈ {0, 1}``; gradient ``[X 1]ᵀ (σ(z) − y) / n + λ w``, Hessian
    ``[X 1]ᵀ diag(σ(1−σ)) [X 1] / n + λ I``."""

    name = "logistic"

    def __init__(self, X=None, y=None, lam=1e-2):
        if X is None:
            X, y = synthetic_classification()
        self._data(X, y, 2)
        self.lam = float(lam)
        self.dim = self.X.shape[1]
        self.x0 = np.zeros(self.dim)

    def value(self, w, idx=None):
        X, y = self._rows(idx)
        z = X @ w
        return np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * self.lam * (w @ w)

    def grad(self, w, idx=None):
        X, y = self._rows(idx)
        s = 1.0 / (1.0 + np.exp(-(X @ w)))
        return X.T @ (s - y) / len(y) + self.lam * w

    def hvp(self, w, v, idx=None):
        X, _ = self._rows(idx)
        s = 1.0 / (1.0 + np.exp(-(X @ w)))
        return X.T @ (s * (1.0 - s) * (X @ v)) / X.shape[0] + self.lam * v

    def predict(self, w, X):
        return (np.asarray(X, np.float64) @ w[:-1] + w[-1] > 0).astype(np.int64)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(z, y):
    z = z - z.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y])


class SoftmaxRegression(_DataProblem):
    """``f(W) = mean_i [logsumexp(z_i) − z_{i,y_i}] + ½ λ ‖W‖²`` with ``Z = [X 1] W``
    (``W`` of shape (features + 1, classes), flattened); gradient
    ``[X 1]ᵀ (P − Y) / n + λ W`` with ``P = softmax(Z)``, ``Y`` one-hot."""

    name = "softmax"

    def __init__(self, X=None, y=None, classes=None, lam=1e-3):
        if X is None:
            X, y = synthetic_classification(classes=3)
        classes = int(np.max(y)) + 1 if classes is None else int(classes)
        self._data(X, y, classes)
        self.classes, self.lam = classes, float(lam)
        self.dim = self.X.shape[1] * classes
        self.x0 = np.zeros(self.dim)

    def _W(self, w):
        return np.asarray(w, np.float64).reshape(self.X.shape[1], self.classes)

    def value(self, w, idx=None):
        X, y = self._rows(idx)
        return _cross_entropy(X @ self._W(w), y) + 0.5 * self.lam * (w @ w)

    def grad(self, w, idx=None):
        X, y = self._rows(idx)
        P = _softmax(X @ self._W(w))
        P[np.arange(len(y)), y] -= 1.0
        return (X.T @ P / len(y)).ravel() + self.lam * w

    def hvp(self, w, v, idx=None):
        X, _ = self._rows(idx)
        P = _softmax(X @ self._W(w))
        R = X @ self._W(v)
        RP = P * R - P * np.sum(P * R, axis=1, keepdims=True)
        return (X.T @ RP / X.shape[0]).ravel() + self.lam * v

    def predict(self, w, X):
        X = np.asarray(X, np.float64)
        return np.argmax(X @ self._W(w)[:-1] + self._W(w)[-1], axis=1)


class TwoLayerMLP(_DataProblem):
    """A two-layer ReLU network with softmax cross-entropy:
    ``h = relu(X W1 + b1)``, ``Z = h W2 + b2``,
    ``f = mean_i [logsumexp(z_i) − z_{i,y_i}] + ½ λ (‖W1‖² + ‖W2‖²)``; parameters
    ``[W1, b1, W2, b2]`` flattened into one vector. ``grad`` is backpropagation;
    ``hvp`` is Pearlmutter's R-operator through the same passes (exact: ReLU's second
    derivative is 0 wherever it is defined). ``x0``: He-initialised weights from ``seed``.
    Default data: the digits training split of :func:`load_digits`."""

    name = "mlp"

    def __init__(self, X=None, y=None, hidden=64, classes=None, lam=1e-4, seed=0):
        if X is None:
            X, y, self.X_test, self.y_test = load_digits()
        classes = int(np.max(y)) + 1 if classes is None else int(classes)
        self._data(X, y, classes)
        self.X = self.X[:, :-1]                     # the layers carry their own biases
        d, self.hidden, self.classes, self.lam = self.X.shape[1], int(hidden), classes, float(lam)
        shapes = [(d, self.hidden), (self.hidden,), (self.hidden, classes), (classes,)]
        sizes = [int(np.prod(s)) for s in shapes]
        self._cuts = np.cumsum([0] + sizes)
        self._shapes = shapes
        self.dim = int(self._cuts[-1])
        rng = np.random.default_rng(seed)
        x0 = np.zeros(self.dim)
        W1, _, W2, _ = self.unpack(x0)
        W1[...] = rng.standard_normal(W1.shape) * np.sqrt(2.0 / d)
        W2[...] = rng.standard_normal(W2.shape) * np.sqrt(2.0 / self.hidden)
        self.x0 = x0

    def unpack(self, w):
        """Views ``(W1, b1, W2, b2)`` into the flat vector ``w``."""
        return [w[a:b].reshape(s) for a, b, s in zip(self._cuts[:-1], self._cuts[1:], self._shapes)]

    def _forward(self, w, X):
        W1, b1, W2, b2 = self.unpack(w)
        a1 = X @ W1 + b1
        h = np.maximum(a1, 0.0)
        return a1, h, h @ W2 + b2

    def _l2(self, w):
        W1, _, W2, _ = self.unpack(w)
        return 0.5 * self.lam * (np.sum(W1 * W1) + np.sum(W2 * W2))

    def value(self, w, idx=None):
        X, y = self._rows(idx)
        return _cross_entropy(self._forward(w, X)[2], y) + self._l2(w)

    def _backward(self, w, X, y):
        W1, _, W2, _ = self.unpack(w)
        a1, h, z = self._forward(w, X)
        dz = _softmax(z)
        dz[np.arange(len(y)), y] -= 1.0
        dz /= len(y)
        mask = a1 > 0
        da1 = (dz @ W2.T) * mask
        g = np.empty_like(w, dtype=np.float64)
        gW1, gb1, gW2, gb2 = self.unpack(g)
        gW1[...] = X.T @ da1 + self.lam * W1
        gb1[...] = da1.sum(axis=0)
        gW2[...] = h.T @ dz + self.lam * W2
        gb2[...] = dz.sum(axis=0)
        return g

    def grad(self, w, idx=None):
        X, y = self._rows(idx)
        return self._backward(np.asarray(w, np.float64), X, y)

    def hvp(self, w, v, idx=None):
        X, y = self._rows(idx)
        w, v = np.asarray(w, np.float64), np.asarray(v, np.float64)
        W1, _, W2, _ = self.unpack(w)
        V1, c1, V2, c2 = self.unpack(v)
        a1, h, z = self._forward(w, X)
        mask = a1 > 0
        P = _softmax(z)
        n = len(y)
        # R-forward
        Rh = (X @ V1 + c1) * mask
        Rz = Rh @ W2 + h @ V2 + c2
        RP = P * Rz - P * np.sum(P * Rz, axis=1, keepdims=True)
        # backward and R-backward
        dz = P.copy()
        dz[np.arange(n), y] -= 1.0
        dz /= n
        Rdz = RP / n
        Rda1 = (Rdz @ W2.T + dz @ V2.T) * mask
        out = np.empty_like(v)
        o1, ob1, o2, ob2 = self.unpack(out)
        o1[...] = X.T @ Rda1 + self.lam * V1
        ob1[...] = Rda1.sum(axis=0)
        o2[...] = Rh.T @ dz + h.T @ Rdz + self.lam * V2
        ob2[...] = Rdz.sum(axis=0)
        return out

    def predict(self, w, X):
        return np.argmax(self._forward(np.asarray(w, np.float64), np.asarray(X, np.float64))[2], axis=1)

    def accuracy(self, w, X=None, y=None):
        if X is None:
            X, y = self.X, self.y
        return float(np.mean(self.predict(w, X) == np.asarray(y)))
