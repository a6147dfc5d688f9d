"""Sparse (row-wise) gradients: step only the rows of a 2-D parameter that a batch touched.

A parameter ``(rows, dim)`` — an embedding table — is stepped with
``opt.step([..., SparseGrad(indices, values), ...])``: gradient row ``k`` is
``values[k]`` for row ``indices[k]`` of the parameter, every other row is zero. Dense
and sparse gradients mix freely in one ``step`` call (one parallel region). A
``scipy.sparse`` matrix of the parameter's shape and a torch sparse COO tensor (what
``nn.Embedding(sparse=True)`` produces) are accepted in its place and converted with
:meth:`SparseGrad.from_scipy` / :meth:`SparseGrad.from_torch`.

Only the touched rows of the parameter and of its state are read or written: the row
kernels (``fastopt/_kernels/rows.pyx``) run the rule's own body on those rows.

Duplicates: equal indices are coalesced (their rows summed) deterministically, with the
same bits for any thread count and any order of the equal indices: a row given twice
is ``a + b``; three or more times, each column's values are split on two grids fixed by
the column's largest magnitude ``2^e`` and the count ``m`` (``L = bit_length(m)``),
each grid's parts are summed exactly in double, and the total is rounded once to the
parameter's precision: "binned" reproducible summation,
:func:`fastopt.reference.sparse.binned_sum`. What lies below the second grid
(``2^(e + 2L - 105)``) is dropped, so the error is at most ``m · 2^(e + 2L - 106)``:
relative to the column's largest value, far below float32's and float64's rounding
(float32 values a few dozen binades apart sum to the exactly rounded result but for a
rare double rounding). A sum that cancels down to far below its largest terms keeps
only what the grids hold, as with any summation in fixed precision. Already
coalesced input (strictly increasing indices, as a coalesced torch tensor or a
canonical CSR matrix has) is used in place, without a copy; otherwise the indices are
radix-sorted (not at all when already non-decreasing) and only the duplicated rows'
sums are materialised (rows given once are read from the caller's values in place), in
parallel over the groups of equal indices (a power-law batch's hot rows in column
blocks), into buffers the optimizer keeps from step to step (see
``fastopt/_kernels/sparse.pyx``).

Semantics (the optimizer's ``sparse=`` option):

* ``"lazy"`` (default): the step is the rule's dense step on the touched rows; the
  state of untouched rows is left alone, as PyTorch's ``SparseAdam`` and TensorFlow's
  lazy Adam do. The parameter's step count ``t`` (bias corrections, AdaGrad's
  ``lr_decay``) counts the steps that gave it a gradient. Options act on touched rows
  only: coupled weight decay adds ``λ p`` to the touched rows, decoupled decay scales
  only them, gradient noise is drawn for their elements (the values a dense step
  would draw there). AdaGrad's lazy step is ``torch.optim.Adagrad``'s sparse step: the
  accumulator bit for bit, the parameter to an ulp (torch 2.13's float32 ``sqrt`` is not
  correctly rounded on AVX-512, its sparse update is a BLAS axpy, i.e. a fused
  multiply-add, and its ``clr`` float32 tensor arithmetic; fastopt rounds every
  operation once, as its NumPy reference). AdaGrad with a zero gradient changes
  nothing, so lazy is also exact for it.
* ``"exact"``: the result equals the dense step with zero gradient rows, for the rules
  where a zero gradient leaves ``p`` alone and only multiplies state by a constant:
  SGD, AdaGrad, RMSprop (plain and centered, no momentum), Adadelta
  (``Rule.sparse_decay``). Each row remembers the step it was last updated at; when
  touched again after ``k`` skipped steps its decayed state is first multiplied by
  ``d^k`` (closed form; ``d^k`` is computed in double and rounded once, so it agrees
  with ``k`` repeated multiplications to a few ulps, not bit for bit). Reading
  ``opt.state`` first brings every row up to date. ``state_dict`` does not: it saves
  the rows as they are and, per parameter, ``row_steps`` (int64, one per row: the step
  each row was last brought up to; checked on load), because a catch-up rounds
  (``d^a d^b`` is not ``d^(a+b)``) and a save mid-run would change the run's bits. Refused
  (ValueError at construction) for the momentum and Adam-style rules: there a zero
  gradient still moves ``p`` (``p -= lr·b``, ``p -= lr·m/(√v+ε)``), and the sum of the
  skipped steps' moves has no closed form (ε, per-step learning rates). Exact mode
  also needs ``weight_decay=0`` and no ``grad_noise`` (both change untouched rows every
  step); a step that breaks this is refused, nothing written.

Global-norm clipping and the non-finite policy see the coalesced rows (the norm of the
dense gradient they stand for).
"""
import sys

import numpy as np

from fastopt._validate import as_array

__all__ = ["SparseGrad", "MODES", "is_sparse_input", "as_sparse_grad", "checked_rows"]

MODES = ("lazy", "exact")
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


class SparseGrad:
    """A row-sparse gradient of a 2-D parameter ``(rows, dim)``.

    ``indices``: 1-D int32/int64 row numbers (any order, duplicates allowed: they are
    summed); ``values``: ``(len(indices), dim)`` C-contiguous array of the parameter's
    dtype, row ``k`` the gradient of parameter row ``indices[k]``. Rows not listed have
    a zero gradient. Nothing is checked or copied here; the step checks everything
    before it writes anything."""
    __slots__ = ("indices", "values")

    def __init__(self, indices, values):
        self.indices = indices
        self.values = values

    def __repr__(self):
        shape = getattr(self.values, "shape", "?")
        return f"SparseGrad({len(self.indices) if hasattr(self.indices, '__len__') else '?'} rows, values {shape})"

    @classmethod
    def from_scipy(cls, matrix, name="matrix"):
        """The touched rows (those with a stored entry) of a ``scipy.sparse`` matrix or
        array of the parameter's shape ``(rows, dim)``. Without a copy when every
        touched row stores all ``dim`` columns in order (a dense row block in CSR);
        else those rows are densified (a copy of ``touched × dim`` elements)."""
        sp = sys.modules.get("scipy.sparse")
        if sp is None or not sp.issparse(matrix):
            raise TypeError(f"{name} is not a scipy.sparse matrix")
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, dim), got shape {matrix.shape}")
        csr = matrix.tocsr()
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()          # scipy's canonical form: sorted columns, duplicates summed
        counts = np.diff(csr.indptr)
        touched = np.flatnonzero(counts).astype(np.int64)
        dim = csr.shape[1]
        if touched.size and np.all(counts[touched] == dim) and csr.data.size == touched.size * dim:
            # every touched row is full: the data array is the values block as it is
            return cls(touched, csr.data.reshape(touched.size, dim))
        return cls(touched, csr[touched].toarray())

    @classmethod
    def from_torch(cls, tensor, name="tensor"):
        """A torch sparse COO tensor ``(rows, dim)`` with one sparse dimension (what
        ``nn.Embedding(sparse=True)`` gives): its index and value arrays, shared with
        the tensor (no copy; an uncoalesced tensor is coalesced here by fastopt's
        deterministic rule, not torch's)."""
        if getattr(tensor, "layout", None) is None or str(tensor.layout) != "torch.sparse_coo":
            raise TypeError(f"{name} is not a torch sparse COO tensor")
        if tensor.sparse_dim() != 1 or tensor.dense_dim() != 1:
            raise ValueError(f"{name} must have one sparse and one dense dimension (rows, dim), got "
                             f"sparse_dim={tensor.sparse_dim()}, dense_dim={tensor.dense_dim()}")
        if tensor.device.type != "cpu":
            raise ValueError(f"{name} is on {tensor.device}; fastopt steps CPU tensors")
        return cls(tensor._indices()[0].numpy(), tensor._values().detach().numpy())


def is_sparse_input(obj):
    """Whether ``obj`` is a sparse gradient: a :class:`SparseGrad`, a scipy.sparse
    matrix or a torch sparse COO tensor (the libraries are not imported for this)."""
    if type(obj) is SparseGrad:
        return True
    sp = sys.modules.get("scipy.sparse")
    if sp is not None and sp.issparse(obj):
        return True
    return type(obj).__module__.startswith("torch") and getattr(obj, "is_sparse", False) is True


def as_sparse_grad(obj, name):
    """``obj`` as a :class:`SparseGrad` (see :func:`is_sparse_input`)."""
    if type(obj) is SparseGrad:
        return obj
    if type(obj).__module__.startswith("torch"):
        return SparseGrad.from_torch(obj, name)
    return SparseGrad.from_scipy(obj, name)


def checked_rows(obj, name, param):
    """``(indices, values, ordered)`` of the sparse gradient ``obj`` for ``param``,
    checked: int64 1-D indices in range (always a private copy of the caller's),
    values ``(len(indices), dim)`` of ``param``'s dtype. ``ordered``: the indices are
    strictly increasing. Raises TypeError/ValueError naming ``name``; writes nothing."""
    from fastopt._kernels.sparse import check_indices

    sg = as_sparse_grad(obj, name)
    if param.ndim != 2:
        raise ValueError(f"{name} is a sparse gradient, but its parameter has shape {param.shape}: sparse "
                         "(row-wise) steps need a 2-D parameter (rows, dim)")
    idx = sg.indices
    if isinstance(idx, (list, tuple)):
        idx = np.asarray(idx, dtype=np.int64) if len(idx) == 0 else np.asarray(idx)
    if not isinstance(idx, np.ndarray):
        idx = np.asarray(idx)
    if idx.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name}.indices has dtype {idx.dtype}; row indices must be int32 or int64")
    if idx.ndim != 1:
        raise ValueError(f"{name}.indices must be 1-D, got shape {idx.shape}")
    # a private copy, checked after it is made: the kernels address rows with these
    # indices without the GIL, while another thread could rewrite the caller's array
    idx = np.array(idx, dtype=np.int64, order="C", copy=True)
    vals = as_array(sg.values, f"{name}.values", writeable=False)
    if vals.dtype != param.dtype:
        raise TypeError(f"{name}.values has dtype {vals.dtype}, but its parameter is {param.dtype}")
    if vals.shape != (idx.size, param.shape[1]):
        raise ValueError(f"{name}.values has shape {vals.shape}, expected ({idx.size}, {param.shape[1]}): one "
                         f"row of the parameter's width per index")
    ordered = check_indices(idx, param.shape[0], f"{name}.indices")
    return idx, vals, ordered


def catch_up(states, decays, last, step, dtype):
    """Exact mode: bring every row of ``states`` (``{name: (rows, dim) array}``) up to
    step ``step``: a row last updated at step ``last[r]`` missed ``k = step - last[r]``
    zero-gradient steps, each multiplying ``states[name]`` by ``decays[name]`` (the
    hyper-parameter's value), so it is multiplied by ``d^k`` (``d`` rounded to
    ``dtype``, the power in double, rounded once), as the row kernels do. Sets
    ``last[:] = step``."""
    import math
    missed = step - last
    for k in np.unique(missed):
        if k <= 0:
            continue
        sel = missed == k
        for name, d in decays.items():
            f = dtype.type(math.pow(float(dtype.type(d)), float(k)))
            states[name][sel] = states[name][sel] * f
    last[...] = step
