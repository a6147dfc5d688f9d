"""Run under mpiexec with a mode (argv[1]): failure cases of ShardedOptimizer found by
review. Prints one JSON line per rank: what it caught, how long it took, and whether its
parameters changed."""
import json
import os
import sys
import threading
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


def two_groups():
    """Group 0: 20,000 float32 (3 blocks); group 1: 12 float64 (1 block, owned by the last
    rank that holds a block): with 3 ranks, some rank holds no piece of group 1."""
    ps = [np.ones(20_000, np.float32), np.ones((3, 4), np.float64)]
    return ps, [{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.1}]


grads = [np.full(20_000, 0.5, np.float32), np.full((3, 4), 0.5)]
t0 = time.monotonic()
try:
    if mode in ("bad_group_lr", "bad_group_lr_clip"):
        # a hyper-parameter made invalid (the same way on every rank) between steps: only
        # the ranks that hold a piece of that group see it in their inner step
        ps, groups = two_groups()
        kw = {"clip_norm": 1.0} if mode.endswith("clip") else {}
        opt = ShardedOptimizer(fastopt.SGD, groups, lr=0.1, timeout=20, abort_on_error=False, **kw)
        opt.step(grads)
        before = [p.copy() for p in ps]
        holds = [opt._group_of[k] for k, _, _ in opt.pieces]
        opt.param_groups[1]["lr"] = -1.0
        try:
            opt.step(grads)
        except DistributedError as exc:
            seconds = time.monotonic() - t0
            changed = any(not np.array_equal(a, b) for a, b in zip(before, ps))
            opt.param_groups[1]["lr"] = 0.05     # the optimizer is still usable, on every rank alike
            opt.step(grads)
            sums = [float(p.astype(np.float64).sum()) for p in ps]
            report(caught="DistributedError", message=str(exc), seconds=seconds, holds_group1=1 in holds,
                   changed=changed, after=sums)
            sys.exit(0)
    elif mode == "full_groups":
        # a gathered state_dict whose groups hold other parameters than the optimizer's
        ps = [np.ones(20_000, np.float32), np.ones(50, np.float32), np.ones(70, np.float32)]
        opt = ShardedOptimizer(fastopt.Adam, [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.2}], lr=0.1,
                               timeout=20)
        other = fastopt.Adam([{"params": [p.copy() for p in ps[:2]]}, {"params": [ps[2].copy()], "lr": 0.2}],
                             lr=0.1)
        other.step([np.ones_like(p) for p in ps])
        opt.load_state_dict(other.state_dict() if rank == 0 else None)
    elif mode == "sharded_groups":
        root = sys.argv[2]
        ps = [np.ones(20_000, np.float32), np.ones(50, np.float32), np.ones(70, np.float32)]
        opt = ShardedOptimizer(fastopt.Adam, [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.2}], lr=0.1,
                               timeout=20)
        opt.step([np.ones_like(p) for p in ps])
        opt.save_sharded(root)
        again = ShardedOptimizer(fastopt.Adam, [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.2}], lr=0.1,
                                 timeout=20)
        again.load_sharded(root)
    elif mode == "hyper_numpy":
        # hyper-parameters given as NumPy scalars (np.float32 is no float subclass) that
        # differ on one rank: refused like Python floats, not compared by type name only
        ShardedOptimizer(fastopt.Adam, [np.ones(20_000, np.float32)], lr=np.float32(0.1 * (1 + (rank == 1))),
                         betas=(np.float32(0.9), 0.999), timeout=20)
    elif mode == "small_exchange":
        # 520 bytes of parameters: the exchange buffers follow the shard, not 2 · P · chunk_bytes
        from fastopt.distributed import mean_gradient
        ps = [np.ones(100, np.float32), np.ones(15)]
        ref = [p.copy() for p in ps]
        opt = ShardedOptimizer(fastopt.Adam, ps, lr=0.1, clip_norm=1.0, timeout=20)
        per = [[np.full(100, r + 0.5, np.float32), np.full(15, 1.0 - r)] for r in range(P)]
        opt.step(per[rank])
        fastopt.Adam(ref, lr=0.1, clip_norm=1.0).step([mean_gradient([g[k] for g in per]) for k in range(2)])
        same = all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(ps, ref))
        report(caught=None, memory=opt.memory(), same=same)
        sys.exit(0)
    elif mode == "threads":
        # two threads of every rank step one ShardedOptimizer at once (the same gradient):
        # the steps must be serialized per rank, as a plain optimizer's are, not their
        # collectives interleaved on one communicator
        ps = [np.ones(100_000, np.float32), np.ones(3000, np.float64)]
        ref = [p.copy() for p in ps]
        opt = ShardedOptimizer(fastopt.Adam, ps, lr=0.01, clip_norm=1.0, timeout=20, chunk_bytes=4096,
                               abort_on_error=False)
        g = [np.linspace(-1, 1, 100_000, dtype=np.float32), np.linspace(2, -2, 3000)]
        errors = []

        def run():
            try:
                for _ in range(6):
                    opt.step(g)
            except Exception as exc:      # noqa: BLE001 - reported
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        single = fastopt.Adam(ref, lr=0.01, clip_norm=1.0)
        for _ in range(12):
            single.step(g)
        same = all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(ps, ref))
        alive = any(t.is_alive() for t in threads)
        report(caught=None, errors=errors, same=same, alive=alive)
        sys.stdout.flush()
        # os._exit skips MPI_Finalize (a hung thread would block it): first every rank has
        # printed, and mpiexec's proxy has read it (else a rank's line could be lost)
        if not alive:
            comm.Barrier()
        from fastopt.distributed.comm import _wait_until_read
        _wait_until_read(sys.stdout, 5.0)
        os._exit(0)
    else:
        raise SystemExit(f"unknown mode {mode}")
    report(caught=None, seconds=time.monotonic() - t0)
except (DistributedError, TypeError, ValueError) as exc:
    report(caught=type(exc).__name__, message=str(exc), seconds=time.monotonic() - t0)
