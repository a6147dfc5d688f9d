"""The optimizer classes on the reference engine: same constructor, groups, options
and state_dict as :mod:`fastopt.optim`, with every step in plain NumPy."""
from fastopt import optim as _fast
from fastopt.reference.engine import ReferenceEngine

__all__ = []
for _cls in _fast.ALL:
    globals()[_cls.__name__] = type(_cls.__name__, (_cls,), {
        "_engine_class": ReferenceEngine,
        "__doc__": f"Reference (plain NumPy) {_cls.__name__}.\n\n{_cls.__doc__}",
        "__module__": __name__,
    })
    __all__.append(_cls.__name__)
