"""``python -m fastopt bench --mpi``: the sharded step against its parts and against
plain data parallelism, side by side in one run, for each rank count.

For every P in ``--ranks`` the bench starts ``mpiexec -n P`` on this module; each rank
holds ``--mpi-size`` float32 parameters (default 10M) and a fixed random gradient, and
the variants below take turns step by step (rotating order, so the machine's drift
reaches all alike), each started after a barrier and timed as the slowest rank:

* ``zero1`` / ``zero2``: :class:`ShardedOptimizer` (Adam) stage 1 / 2, split into the
  gradient exchange and mean (``comm``: reduce-scatter), the local fused step
  (``update``) and the parameter all-gather (``comm``);
* ``bound``: MPI's own ``Reduce_scatter_block`` + ``Allgather`` of the same bytes plus
  fastopt's Adam on N/P elements — what the sharded step may cost at best;
* ``allreduce``: MPI ``Allreduce`` of the gradient + fastopt's Adam on all N elements
  (every rank holds the full state: P× the memory).

Memory per rank: the optimizer state and the other buffers each variant holds.
"""
import argparse
import json
import sys
import time

import numpy as np

__all__ = ["run", "lines", "main"]


def _worker(size, repeat, warmup):
    from mpi4py import MPI

    import fastopt
    from fastopt.distributed import ShardedOptimizer
    from fastopt.distributed.comm import agree

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(rank)
    grad = rng.standard_normal(size).astype(np.float32)
    n_local = -(-size // P)
    params = {name: np.zeros(size, np.float32) for name in ("zero1", "zero2", "bound", "allreduce")}
    opts = {"zero1": ShardedOptimizer(fastopt.Adam, [params["zero1"]], stage=1, lr=1e-3),
            "zero2": ShardedOptimizer(fastopt.Adam, [params["zero2"]], stage=2, lr=1e-3)}
    shard = np.zeros(n_local, np.float32)
    bound_opt = fastopt.Adam([shard], lr=1e-3)
    full_opt = fastopt.Adam([params["allreduce"]], lr=1e-3)
    padded = np.zeros(n_local * P, np.float32)
    padded[:size] = grad
    rs_out = np.empty(n_local, np.float32)
    gathered = np.empty(n_local * P, np.float32)
    reduced = np.empty(size, np.float32)

    def clock(times, key, t0):
        now = time.perf_counter()
        times[key] = times.get(key, 0.0) + now - t0
        return now

    def zero(name):
        opt, t = opts[name], {}
        t0 = time.perf_counter()
        # the step, split into its parts to time them
        agree(comm, opt._check_grads([grad]), opt.timeout, "the step's gradient check")
        opt.reduce_scatter([grad])
        t0 = clock(t, "comm", t0)
        opt.inner.step(opt._gviews)
        t0 = clock(t, "update", t0)
        opt.allgather_params()
        clock(t, "comm", t0)
        return t

    def bound():
        t = {}
        t0 = time.perf_counter()
        comm.Reduce_scatter_block(padded, rs_out, op=MPI.SUM)
        np.multiply(rs_out, np.float32(1.0 / P), out=rs_out)
        t0 = clock(t, "comm", t0)
        bound_opt.step([rs_out])
        t0 = clock(t, "update", t0)
        comm.Allgather(shard, gathered)
        clock(t, "comm", t0)
        return t

    def allreduce():
        t = {}
        t0 = time.perf_counter()
        comm.Allreduce(grad, reduced, op=MPI.SUM)
        np.multiply(reduced, np.float32(1.0 / P), out=reduced)
        t0 = clock(t, "comm", t0)
        full_opt.step([reduced])
        clock(t, "update", t0)
        return t

    variants = {"zero1": lambda: zero("zero1"), "zero2": lambda: zero("zero2"), "bound": bound,
                "allreduce": allreduce}
    names = list(variants)
    samples = {n: [] for n in names}
    for i in range(warmup + repeat):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            comm.Barrier()
            t = variants[name]()
            t["total"] = sum(t.values())
            # the slowest rank's times: the step is done when every rank is
            worst = {k: comm.allreduce(v, op=MPI.MAX) for k, v in sorted(t.items())}
            if i >= warmup:
                samples[name].append(worst)
    mem = {name: opts[name].memory() for name in ("zero1", "zero2")}
    state_bytes = lambda o: sum(v.nbytes for e in o.state for v in e.values() if isinstance(v, np.ndarray))  # noqa
    mem["bound"] = {"state": state_bytes(bound_opt), "grad_buffer": rs_out.nbytes + gathered.nbytes + padded.nbytes}
    mem["allreduce"] = {"state": state_bytes(full_opt), "grad_buffer": reduced.nbytes}
    mems = comm.gather(mem, root=0)
    if rank == 0:
        med = {n: {k: float(np.median([s[k] for s in samples[n]])) for k in samples[n][0]} for n in names}
        print(json.dumps({"ranks": P, "size": size, "repeat": repeat, "median": med,
                          "memory": {n: max(m[n]["state"] for m in mems) for n in names},
                          "memory_detail": mems[0]}), flush=True)


def run(ranks=(2, 3, 4), size=10_000_000, repeat=7, warmup=2, timeout=900):
    """Start the bench for each rank count; a list of result dicts (rank 0's JSON)."""
    from fastopt.distributed.launch import run_mpi
    out = []
    for P in ranks:
        # -P: the ranks import the installed package even when started from a source tree
        # (whose fastopt has no compiled kernels)
        safe = ["-P"] if sys.version_info >= (3, 11) else []
        r = run_mpi(P, safe + ["-m", "fastopt.distributed.bench", "--worker", "--size", size, "--repeat", repeat,
                               "--warmup", warmup], timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"mpiexec -n {P} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        out.append(json.loads(next(x for x in r.stdout.splitlines() if x.startswith("{"))))
    return out


def lines(results):
    """The table: per rank count, each variant's median step split into comm and update
    (ms), its ratio to ``bound`` and the optimizer state per rank (MB)."""
    text = ["MPI: Adam, float32, median step of the slowest rank (ms); state = optimizer state per rank",
            f"{'P':>2} {'variant':<10} {'total':>8} {'comm':>8} {'update':>8} {'/bound':>7} {'state MB':>9}"]
    for res in results:
        b = res["median"]["bound"]["total"]
        for name, m in res["median"].items():
            text.append(f"{res['ranks']:>2} {name:<10} {m['total'] * 1e3:8.1f} {m['comm'] * 1e3:8.1f} "
                        f"{m['update'] * 1e3:8.1f} {m['total'] / b:7.2f} {res['memory'][name] / 1e6:9.1f}")
    return text


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastopt.distributed.bench")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ranks", default="2,3,4")
    p.add_argument("--size", type=float, default=1e7)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    if args.worker:
        _worker(int(args.size), args.repeat, args.warmup)
        return 0
    res = run([int(x) for x in args.ranks.split(",")], int(args.size), args.repeat, args.warmup)
    print("\n".join(lines(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
