"""Run under mpiexec. ``save DIR``: P ranks take 4 steps, then write the gathered
state_dict (rank 0, DIR/full.npz), the sharded files (DIR/shards/) and the parameters.
``load DIR``: Q ranks load the parameters and (a) the gathered state_dict, (b) the
sharded files; both continue 3 steps, bit for bit equal to a plain optimizer that
loaded full.npz and steps on the mean gradient; and both gather the same state."""
import json
import os
import sys

import numpy as np

import fastopt
from fastopt.distributed import ShardedOptimizer, mean_gradient
from fastopt.schedules import CosineAnnealing
from mpi4py import MPI

mode, root = sys.argv[1], sys.argv[2]
comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
shapes = [(30_000,), (7, 9), (20_000,)]
dtypes = [np.float32, np.float64, np.float32]
rng = np.random.default_rng(5)
init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def make(params, sharded=True):
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": CosineAnnealing(0.02, 50), "betas": (0.8, 0.9)}]
    kw = dict(lr=0.01, weight_decay=0.01, amsgrad=True, clip_norm=3.0)
    return ShardedOptimizer(fastopt.Adam, groups, chunk_bytes=4096, **kw) if sharded else fastopt.Adam(groups, **kw)


def grads(t, nranks):
    return [[np.random.default_rng([t, r, k]).standard_normal(s).astype(d)
             for k, (s, d) in enumerate(zip(shapes, dtypes))] for r in range(nranks)]


if mode == "save":
    params = [x.copy() for x in init]
    opt = make(params)
    for t in range(4):
        opt.step(grads(t, P)[rank])
    sd = opt.state_dict()
    os.makedirs(os.path.join(root, "shards"), exist_ok=True)
    comm.Barrier()
    opt.save_sharded(os.path.join(root, "shards"))
    if rank == 0:
        np.savez(os.path.join(root, "full.npz"), **fastopt.flatten_state_dict(sd))
        np.savez(os.path.join(root, "params.npz"), *params)
    print(json.dumps({"rank": rank, "saved": True}), flush=True)
else:
    with np.load(os.path.join(root, "params.npz")) as z:
        saved = [z[f"arr_{k}"] for k in range(len(shapes))]
    with np.load(os.path.join(root, "full.npz")) as z:
        full = fastopt.unflatten_state_dict(z)
    runs = {}
    for how in ("gathered", "sharded"):
        params = [x.copy() for x in saved]
        opt = make(params)
        if how == "gathered":
            opt.load_state_dict(full if rank == 0 else None)
        else:
            opt.load_sharded(os.path.join(root, "shards"))
        after_load = opt.state_dict()
        for t in range(4, 7):
            opt.step(grads(t, P)[rank])
        runs[how] = (params, after_load)
    ref_params = [x.copy() for x in saved]
    ref = make(ref_params, sharded=False)
    ref.load_state_dict(full)
    for t in range(4, 7):
        g = grads(t, P)
        ref.step([mean_gradient([g[r][k] for r in range(P)]) for k in range(len(shapes))])
    for how, (params, sd) in runs.items():
        for k in range(len(shapes)):
            assert np.array_equal(params[k], ref_params[k]), (rank, how, k)
        if rank == 0:
            for k, entry in full["state"].items():
                for n, v in entry.items():
                    got = sd["state"][int(k)][n]
                    assert np.array_equal(got, v) if isinstance(v, np.ndarray) else got == v, (how, k, n)
            assert [g["group_step"] for g in sd["param_groups"]] == [g["group_step"] for g in full["param_groups"]]
    print(json.dumps({"rank": rank, "loaded": True}), flush=True)
