"""The benchmarked optimizers: each fastopt class, the rule it runs and its torch twin."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastopt.rules import BY_NAME, bench_rows

__all__ = ["Algo", "ALGOS", "ALGO_BY_KEY"]


@dataclass(frozen=True)
class Algo:
    """One benchmarked optimizer: the fastopt/reference class and its arguments, the
    kernel (rule) it runs, and the matching ``torch.optim`` class (None: no equivalent)."""
    key: str
    cls: str
    rule: str
    kwargs: dict = field(default_factory=dict)
    torch_cls: str | None = None
    torch_kwargs: dict = field(default_factory=dict)

    @property
    def accesses(self):
        """Array accesses per element of one step (param r+w, grad r, each state r+w)."""
        return BY_NAME[self.rule].accesses_per_element

    @property
    def nstate(self):
        """Number of per-element state buffers."""
        return len(BY_NAME[self.rule].state)


# one row per optimizer class, as its rule file declares it (fastopt.rules)
ALGOS = tuple(Algo(**row) for row in bench_rows())
ALGO_BY_KEY = {a.key: a for a in ALGOS}
