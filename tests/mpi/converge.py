"""Run under mpiexec: EASGD (sync/async) or Downpour on the logistic regression of
fastopt.problems with noisy gradients (N(0, sigma²) per element, seeded by rank and
step). Rank 0 prints the distributed run's and a serial run's gap to the optimum."""
import json
import sys

import numpy as np

import fastopt
from fastopt.distributed import Downpour, EASGD
from fastopt.problems import logistic_regression
from mpi4py import MPI

mode, steps = sys.argv[1], int(sys.argv[2])
comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
fg, _, dim = logistic_regression(n=400, dim=30, seed=0)
f_star = fastopt.minimize(fg, np.zeros(dim), method="lbfgs").fun
SIGMA = 0.1


def noisy(w, who, t):
    return (fg(w)[1] + SIGMA * np.random.default_rng([who, t]).standard_normal(dim)).astype(w.dtype)


def serial(cls, steps, **kw):
    w = np.zeros(dim)
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

    def fg(w):
        return 0.5 * float(np.sum(d * (w - c) ** 2)) / dim, d * (w - c)

w = np.zeros(dim)
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
print(json.dumps({"rank": rank, "gap": gap, "serial_gap": ref, **extra}), flush=True)
