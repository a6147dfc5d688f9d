"""Failure cases of fastopt.distributed found by review, each under ``mpiexec`` with a
timeout (the harness of tests/test_distributed.py)."""
import pytest

pytest.importorskip("mpi4py")
from fastopt.distributed.launch import mpiexec_path  # noqa: E402

if mpiexec_path() is None:
    pytest.skip("no mpiexec (pip install 'fastopt[mpi]')", allow_module_level=True)

from test_distributed import mpi  # noqa: E402


@pytest.mark.parametrize("mode", ["bad_group_lr", "bad_group_lr_clip"])
def test_error_seen_by_some_ranks_only_is_raised_on_every_rank_at_once(mode):
    """A group's lr made invalid between steps: only the rank holding a piece of that
    group refuses it in its inner step. Every rank must raise the same error at once
    (not after ``timeout``), no shard may change, and the optimizer stays usable."""
    lines = mpi(3, "faults.py", mode)
    assert sorted(x["rank"] for x in lines) == [0, 1, 2]
    assert sum(x["holds_group1"] for x in lines) == 1       # the case needs ranks without the group
    for x in lines:
        assert x["caught"] == "DistributedError", x
        assert "rank 2: ValueError: invalid param_groups[1]['lr'] -1.0" in x["message"], x
        assert x["seconds"] < 10, x                          # timeout is 20 s
        assert x["changed"] is False, x
    assert len({tuple(x["after"]) for x in lines}) == 1


@pytest.mark.parametrize("mode", ["full_groups", "sharded_groups"])
def test_checkpoint_of_another_group_layout_is_refused(tmp_path, mode):
    """Same parameter shapes and dtypes, but the groups hold other parameters (3 params
    as [2, 1] saved, [1, 2] loading): a plain optimizer refuses such a state_dict; the
    gathered and the sharded load must too, on every rank, instead of loading group 0's
    step count and hyper-parameters into the other parameters."""
    lines = mpi(2, "faults.py", mode, tmp_path)
    assert sorted(x["rank"] for x in lines) == [0, 1]
    for x in lines:
        assert x["caught"] == "DistributedError" and "another layout" in x["message"], x
        assert "groups" in x["message"], x


def test_two_threads_stepping_one_rank_are_serialized():
    """Two threads per rank each take 6 steps of one ShardedOptimizer (Adam, clipping) on
    the same gradient: the 12 steps must run one after another on each rank (before:
    the threads' collectives paired with the wrong calls on the other rank and the job
    hung until the timeout), giving the bits of 12 single-process steps."""
    lines = mpi(2, "faults.py", "threads", timeout=90)
    assert sorted(x["rank"] for x in lines) == [0, 1]
    for x in lines:
        assert x["errors"] == [] and x["alive"] is False and x["same"] is True, x


def test_numpy_scalar_hyper_parameters_that_differ_are_refused():
    """lr=np.float32(0.1) on rank 0 and np.float32(0.2) on rank 1: before, the settings
    check compared NumPy scalars by type name only and each rank stepped its shard with
    its own lr."""
    lines = mpi(2, "faults.py", "hyper_numpy")
    assert sorted(x["rank"] for x in lines) == [0, 1]
    for x in lines:
        assert x["caught"] == "DistributedError" and "rank 1's options" in x["message"], x


def test_exchange_buffers_follow_the_shard_not_the_chunk_size():
    """520 bytes of parameters over 3 ranks: each rank's receive buffers were
    2 · P · chunk_bytes = 12 MiB whatever the model (and grew with P); they are now sized
    for the rank's largest round, and the step is still the single process's bits."""
    lines = mpi(3, "faults.py", "small_exchange")
    assert sorted(x["rank"] for x in lines) == [0, 1, 2]
    for x in lines:
        assert x["same"] is True, x
        assert x["memory"]["exchange"] <= 2 * 3 * x["memory"]["params"], x
