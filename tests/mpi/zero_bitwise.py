"""Run under mpiexec: a ShardedOptimizer's steps equal a single process's on the mean
gradient, bit for bit, on every rank (argv: optimizer name, stage, options as JSON)."""
import json
import sys

import numpy as np

import fastopt
from fastopt.distributed import ShardedOptimizer, mean_gradient
from mpi4py import MPI

name, stage, opts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
steps = int(opts.pop("steps", 5))
comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
if opts.pop("small", False):      # fewer reduction blocks than ranks: some ranks own nothing
    shapes, dtypes = [(100,), (3, 5)], [np.float32, np.float64]
else:
    shapes = [(40_001,), (3, 5), (17, 1000), (8192,)]
    dtypes = [np.float32, np.float64, np.float32, np.float64]
# a different thread count on every rank: the bits must not depend on it
fastopt.set_num_threads(1 + rank % 3)
rng = np.random.default_rng(1)
init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
mine = [x.copy() for x in init]
ref = [x.copy() for x in init]
cls = getattr(fastopt, name)
opt = ShardedOptimizer(cls, mine, stage=stage, chunk_bytes=opts.pop("chunk_bytes", 1 << 16), **opts)
single = cls(ref, **opts)
for t in range(steps):
    # rank r's gradient at step t: the same draws on every rank, so each can build the reference
    per_rank = [[np.random.default_rng([t, r, k]).standard_normal(s).astype(d) * (1 + r)
                 for k, (s, d) in enumerate(zip(shapes, dtypes))] for r in range(P)]
    if opts.get("nonfinite") and t == 2:
        per_rank[P - 1][-1].reshape(-1)[5] = np.inf
    mean = [mean_gradient([g[k] for g in per_rank]) for k in range(len(shapes))]
    if opts.get("nonfinite") == "raise" and t == 2:
        for o, g in ((opt, per_rank[rank]), (single, mean)):
            try:
                o.step(g)
            except fastopt.NonFiniteGradientError:
                pass
            else:
                raise AssertionError(f"rank {rank}: no NonFiniteGradientError from {type(o).__name__}")
        ok = ok_ref = False
    else:
        ok = opt.step(per_rank[rank])
        ok_ref = single.step(mean)
    assert ok == ok_ref, (t, ok, ok_ref)
    for k in range(len(shapes)):
        if not np.array_equal(mine[k].view(np.uint8), ref[k].view(np.uint8)):
            bad = np.flatnonzero(mine[k].reshape(-1) != ref[k].reshape(-1))
            raise AssertionError(f"rank {rank} step {t} param {k}: {bad.size} elements differ, first {bad[:5]}")
    if opts.get("clip_norm"):
        assert opt.last_grad_norm == single.last_grad_norm, (opt.last_grad_norm, single.last_grad_norm)
mem = opt.memory()
print(json.dumps({"rank": rank, "ok": True, "memory": mem}), flush=True)
