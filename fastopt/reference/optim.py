"""The optimizer classes on the reference engine: same constructor, groups, options
and state_dict as :mod:`fastopt.optim`, with every step in plain NumPy."""
from fastopt import optim as _fast
from fastopt.optim.rowwise import RowwiseAdagrad as _RowwiseAdagrad
from fastopt.reference.engine import ReferenceEngine
from fastopt.reference.sparse import rowwise_adagrad as _rowwise_reference

__all__ = []
for _cls in _fast.ALL:
    globals()[_cls.__name__] = type(_cls.__name__, (_cls,), {
        "_engine_class": ReferenceEngine,
        "__doc__": f"Reference (plain NumPy) {_cls.__name__}.\n\n{_cls.__doc__}",
        "__module__": __name__,
    })
    __all__.append(_cls.__name__)



class RowwiseAdagrad(_RowwiseAdagrad):
    __doc__ = "Reference (plain NumPy) RowwiseAdagrad.\n\n" + (_RowwiseAdagrad.__doc__ or "")
    __module__ = __name__
    _kernel = staticmethod(_rowwise_reference)


__all__.append("RowwiseAdagrad")
