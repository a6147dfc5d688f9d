"""Run under mpiexec: EASGD (sync/async) or Downpour on the logistic regression of
fastopt.problems (argv[3] ``mlp``: a one-hidden-layer tanh MLP fitting a teacher MLP)
with noisy gradients (N(0, sigma²) per element, seeded by rank and step). Every rank
prints the distributed run's and a serial run's gap to the optimum (MLP: the loss)."""
import json
import sys

import numpy as np

import fastopt
from fastopt.distributed import Downpour, EASGD
from fastopt.problems import logistic_regression
from mpi4py import MPI

mode, steps = sys.argv[1], int(sys.argv[2])
problem = sys.argv[3] if len(sys.argv) > 3 else "logreg"
comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
SIGMA = 0.1
if problem == "mlp":
    IN, HID, N = 8, 16, 256
    X = np.random.default_rng(11).standard_normal((N, IN))
    teacher = np.random.default_rng(12).standard_normal(HID * IN + 2 * HID + 1) * 0.5

    def unpack(w):
        W1 = w[:HID * IN].reshape(HID, IN)
        b1 = w[HID * IN:HID * IN + HID]
        w2 = w[HID * IN + HID:HID * IN + 2 * HID]
        return W1, b1, w2, w[-1]

    def forward(w):
        W1, b1, w2, b2 = unpack(w)
        h = np.tanh(X @ W1.T + b1)
        return h, h @ w2 + b2

    Y = forward(teacher)[1]

    def fg(w):
        """½ mean squared error and its gradient (backpropagation)."""
        W1, b1, w2, b2 = unpack(w)
        h, out = forward(w)
        r = (out - Y) / N
        dh = np.outer(r, w2) * (1 - h * h)
        g = np.concatenate([(dh.T @ X).ravel(), dh.sum(0), h.T @ r, [r.sum()]])
        return 0.5 * float(np.mean((out - Y) ** 2)), g

    dim = teacher.size
    x0 = np.random.default_rng(13).standard_normal(dim) * 0.3
    f_star = 0.0
else:
    fg, _, dim = logistic_regression(n=400, dim=30, seed=0)
    f_star = fastopt.minimize(fg, np.zeros(dim), method="lbfgs").fun
    x0 = np.zeros(dim)


def noisy(w, who, t):
    return (fg(w)[1] + SIGMA * np.random.default_rng([who, t]).standard_normal(dim)).astype(w.dtype)


def serial(cls, steps, **kw):
    w = x0.copy()
    opt = cls([w], **kw)
    for t in range(steps):
        opt.step([noisy(w, 999, t)])
    return fg(w)[0] - f_star


if mode == "downpour-quad":
    # 20,000 parameters over two servers (three reduction blocks): a separable quadratic
    dim = 20_000
    d = np.random.default_rng(7).uniform(0.5, 2.0, dim)
    c = np.random.default_rng(8).standard_normal(dim)
    f_star = 0.0
    x0 = np.zeros(dim)

    def fg(w):
        return 0.5 * float(np.sum(d * (w - c) ** 2)) / dim, d * (w - c)

w = x0.copy()
if mode.startswith("easgd"):
    kw = dict(lr=0.02, momentum=0.9)
    dist = EASGD(fastopt.SGD, [w], tau=4, mode=mode.split("-")[1], **kw)
    for t in range(steps):
        dist.step([noisy(w, rank, t)])
    dist.close()
    final = dist.center[0]
    centers = comm.gather(final.copy(), root=0)
    ref = serial(fastopt.SGD, steps, **kw)
    extra = {"centers_equal": all(np.array_equal(c, centers[0]) for c in centers) if rank == 0 else None,
             "rounds": dist.rounds}
else:
    kw = dict(lr=0.1)
    dist = Downpour(fastopt.Adagrad, [w], n_servers=2 if mode == "downpour-quad" else 1, n_fetch=2, n_push=2,
                    **kw)
    if dist.is_server:
        updates = dist.serve()
    else:
        for t in range(steps):
            dist.step([noisy(w, rank, t)])
        dist.close()
        updates = None
    dist.gather_params()
    final = w
    ref = serial(fastopt.Adagrad, steps, **kw)
    extra = {"updates": updates, "servers": dist.n_servers,
             "shards": [len(dist.layout.pieces[s]) for s in range(dist.n_servers)]}
gap = fg(final)[0] - f_star
print(json.dumps({"rank": rank, "gap": gap, "serial_gap": ref, "start_gap": fg(x0)[0] - f_star, **extra}),
      flush=True)
