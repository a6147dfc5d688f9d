"""torch.optim's state_dict format for fastopt's rules.

fastopt's rules took their state names from ``torch.optim`` (``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``, ``sum``, ``square_avg``, ``grad_avg``,
``momentum_buffer``, ``acc_delta``, ``exp_inf``, ``mu_product``), so the tables
below only list where torch 2.13 differs in *shape* of the state, not in names.
"""
import torch

#: (rule, fastopt state name) -> torch's name, where they differ. Empty today: the
#: rules already use torch's names; a rule whose state torch names differently adds
#: its entries here and nothing else changes.
STATE_NAMES = {}

#: rules whose torch twin (``torch.optim.SGD``) keeps no ``step`` in its state: only a
#: ``momentum_buffer`` once a step has been taken (none at all without momentum)
NO_STEP = frozenset({"sgd", "momentum", "nesterov"})

#: torch classes that create every parameter's state in their constructor (torch's
#: Adagrad fills ``sum`` with ``initial_accumulator_value`` at once), so a state_dict
#: taken before the first step already has an entry per parameter
EAGER = frozenset({"Adagrad"})

#: group keys torch.optim classes have and fastopt does not use: implementation
#: choices of torch (fastopt's kernel is always one fused pass)
TORCH_ONLY = ("foreach", "fused", "capturable", "differentiable")

#: group keys torch's lr_scheduler classes (and torch itself) add to param groups
SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "param_names"})


def torch_name(rule, name):
    """torch's key for fastopt state ``name`` of ``rule``."""
    return STATE_NAMES.get((rule.name, name), name)


def scalar_dtype(fused=False):
    """The dtype torch gives ``step`` (and NAdam's ``mu_product``): float32, or float64
    when the default dtype is float64 (fused optimizers: always float32); this is
    ``torch.optim.optimizer._get_scalar_dtype``."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def expected_keys(rule):
    """The keys of a torch-format state entry of a parameter that ``rule`` updates."""
    keys = set() if rule.name in NO_STEP else {"step"}
    keys |= {torch_name(rule, n) for n in rule.state}
    keys |= {torch_name(rule, n) for n, _ in rule.scalar_state}
    return keys


def to_torch_entry(rule, entry, fused, share):
    """A fastopt state entry (``{"step": int, <state>: ndarray, <scalar>: float}``) in
    torch's format. ``share``: the tensors view the arrays (else they copy them)."""
    out = {}
    if rule.name not in NO_STEP:
        out["step"] = torch.tensor(float(entry["step"]), dtype=scalar_dtype(fused))
    for name, _ in rule.scalar_state:
        out[torch_name(rule, name)] = torch.tensor(float(entry[name]), dtype=scalar_dtype(fused))
    for name in rule.state:
        a = entry[name]
        out[torch_name(rule, name)] = torch.from_numpy(a if share else a.copy())
    return out
