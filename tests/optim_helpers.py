"""What a failed optimizer call must leave alone: one snapshot, one comparison."""
import numpy as np


def _groups(opt):
    return [{k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in g.items() if k != "params"}
            for g in opt.param_groups]


def snapshot(opt):
    return dict(params=[p.copy() for p in opt.params],
                state=[{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for s in opt.state],
                groups=_groups(opt),
                ids=[[id(p) for p in g["params"]] for g in opt.param_groups],
                gsteps=[g["group_step"] for g in opt.state_dict()["param_groups"]],
                lrs=opt.current_lrs)


def assert_unchanged(opt, snap, groups_too=True):
    """Bit for bit: parameters, state arrays and scalars, steps and (unless the test itself
    edited a group) group settings, schedules and learning rates."""
    assert len(opt.params) == len(snap["params"])
    for x, y in zip(opt.params, snap["params"]):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert len(opt.state) == len(snap["state"])
    for a, b in zip(opt.state, snap["state"]):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], np.ndarray):
                assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
            else:
                assert a[key] == b[key], key
    if groups_too:
        assert _groups(opt) == snap["groups"]
        assert [[id(p) for p in g["params"]] for g in opt.param_groups] == snap["ids"]
        assert opt.current_lrs == snap["lrs"]
    assert [g["group_step"] for g in opt.state_dict()["param_groups"]] == snap["gsteps"]
