"""Run under mpiexec with a mode (argv[1]); prints one JSON line per rank saying what
it caught. Modes that must end the job (raise, die, hang) do not print."""
import json
import os
import sys
import time

import numpy as np

import fastopt
from fastopt.distributed import DistributedError, ShardedOptimizer
from mpi4py import MPI

mode = sys.argv[1]
comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()


def report(**kw):
    print(json.dumps(dict(rank=rank, **kw)), flush=True)


def params(n=20_000, dtype=np.float32):
    return [np.ones(n, dtype), np.ones((3, 4), np.float64)]


try:
    if mode == "shape":
        ShardedOptimizer(fastopt.Adam, params(20_000 + (rank == 1)), lr=0.1)
    elif mode == "dtype":
        ShardedOptimizer(fastopt.Adam, params(dtype=np.float64 if rank == P - 1 else np.float32), lr=0.1)
    elif mode == "hyper":
        ShardedOptimizer(fastopt.Adam, params(), lr=0.1 * (1 + (rank == 1)))
    elif mode == "easgd_shape":
        from fastopt.distributed import EASGD
        EASGD(fastopt.SGD, params(20_000 + (rank == 1)), lr=0.1)
    elif mode == "downpour_shape":
        from fastopt.distributed import Downpour
        Downpour(fastopt.Adagrad, params(dtype=np.float64 if rank == 2 else np.float32), lr=0.1)
    elif mode == "comm":
        ShardedOptimizer(fastopt.Adam, params(), comm=[MPI.COMM_WORLD], lr=0.1)
    elif mode == "comm_one":
        # one rank passes a wrong communicator: it raises at once, the others time out
        ShardedOptimizer(fastopt.Adam, params(), comm="world" if rank == 1 else None, lr=0.1, timeout=3,
                         abort_on_error=False)
    elif mode == "grad":
        opt = ShardedOptimizer(fastopt.Adam, params(), lr=0.1)
        g = [np.ones(20_000, np.float32), np.ones((3, 4), np.float64)]
        if rank == 1:
            g[1] = np.ones((4, 3), np.float64)
        before = [p.copy() for p in opt.params]
        try:
            opt.step(g)
        finally:
            assert all(np.array_equal(a, b) for a, b in zip(before, opt.params))
    elif mode in ("checkpoint", "save"):
        root = sys.argv[2]
        opt = ShardedOptimizer(fastopt.Adam, params(), lr=0.1)
        opt.step([np.full(20_000, 0.5, np.float32), np.ones((3, 4))])
        before = opt.state_dict()
        if mode == "save":
            opt.save_sharded(os.path.join(root, "missing-dir"))
        other = ShardedOptimizer(fastopt.Adam, params(20_001), lr=0.1)
        other.save_sharded(root)
        try:
            opt.load_sharded(root)
        finally:
            after = opt.state_dict()
            if rank == 0:
                assert all(np.array_equal(before["state"][k]["exp_avg"], after["state"][k]["exp_avg"])
                           for k in range(2)), "state changed"
    elif mode == "mixed_saves":
        # a checkpoint directory whose rank-1 file comes from a later save of the same job
        import shutil
        root = sys.argv[2]
        a, b = os.path.join(root, "a"), os.path.join(root, "b")
        if rank == 0:
            os.makedirs(a)
            os.makedirs(b)
        comm.Barrier()
        opt = ShardedOptimizer(fastopt.Adam, params(), lr=0.1)
        opt.step([np.full(20_000, 0.5, np.float32), np.ones((3, 4))])
        opt.save_sharded(a)
        opt.step([np.full(20_000, 0.5, np.float32), np.ones((3, 4))])
        opt.save_sharded(b)
        if rank == 0:
            shutil.copy(os.path.join(b, f"shard-1-of-{P}.npz"), os.path.join(a, f"shard-1-of-{P}.npz"))
        comm.Barrier()
        before = opt.state_dict()
        try:
            opt.load_sharded(a)
        finally:
            after = opt.state_dict()
            if rank == 0:
                assert all(np.array_equal(before["state"][k]["exp_avg"], after["state"][k]["exp_avg"])
                           for k in range(2)), "state changed"
        opt.load_sharded(b)       # one save's files load
    elif mode in ("easgd_raise", "downpour_raise"):
        from fastopt.distributed import EASGD, Downpour
        w = [np.ones(1000)]
        if mode == "easgd_raise":
            opt = EASGD(fastopt.SGD, w, tau=2, lr=0.1, timeout=20)
        else:
            opt = Downpour(fastopt.Adagrad, w, lr=0.1, timeout=20)
        if mode == "downpour_raise" and opt.is_server:
            opt.serve()
        else:
            for t in range(20):
                if rank == 2 and t == 3:
                    raise RuntimeError("boom on rank 2")
                opt.step([np.ones(1000)])
                time.sleep(0.01)
    elif mode in ("raise", "die", "hang"):
        opt = ShardedOptimizer(fastopt.Adam, params(), lr=0.1, timeout=5)
        for t in range(5):
            if rank == 1 and t == 2:
                if mode == "raise":
                    raise RuntimeError("boom on rank 1")
                if mode == "die":
                    os._exit(7)
                time.sleep(120)
            opt.step([np.ones(20_000, np.float32), np.ones((3, 4))])
        report(caught=None)
    else:
        raise SystemExit(f"unknown mode {mode}")
    report(caught=None)
except (DistributedError, TypeError, ValueError) as exc:
    if mode == "hang":
        raise       # uncaught: the abort hook ends the job
    report(caught=type(exc).__name__, message=str(exc))
