"""fastopt inside PyTorch training loops: ``torch.optim`` drop-ins on CPU tensors.

>>> import torch, fastopt.torch
>>> model = torch.nn.Linear(4, 1)
>>> opt = fastopt.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
>>> loss = model(torch.ones(2, 4)).sum(); loss.backward(); opt.step(); opt.zero_grad()

One class per fastopt optimizer class (``fastopt.optim.ALL``), generated from the
rule specs: a ``torch.optim.Optimizer`` whose ``step`` is fastopt's fused kernel over
the parameters' and gradients' memory (no copies). Parameter groups, ``closure``,
``zero_grad``, ``add_param_group``, every ``torch.optim.lr_scheduler`` and
``state_dict``/``load_state_dict`` in torch's format behave as in ``torch.optim``;
the arithmetic is torch's single-tensor path (``foreach=False``; fastopt's rules,
``fastopt/rules/``). float32 and float64 CPU tensors; bfloat16/float16 and sparse
parameters are refused with a message.

Sparse gradients: a sparse COO gradient of a 2-D parameter (``nn.Embedding(sparse=True)``,
``nn.EmbeddingBag(sparse=True)``) takes fastopt's sparse (row-wise) step, its index and
value memory shared: only the rows in the batch and their state are touched
(``sparse="lazy"``, the default, as ``torch.optim.SparseAdam``; ``sparse="exact"`` where
the rule allows it; see :mod:`fastopt.sparse`). Unlike ``torch.optim.Adam``, which
refuses sparse gradients, every class accepts them; ``Adagrad`` gives
``torch.optim.Adagrad``'s sparse step.

Threads: fastopt and torch share one thread budget, ``torch.set_num_threads(n)``
(or ``OMP_NUM_THREADS``). Both use libgomp, and a process has one: torch 2.13's
wheel bundles ``torch/lib/libgomp.so.1`` under the standard soname, so whichever of
the two is imported first brings the libgomp both use (imported after fastopt,
torch shares the system libgomp and fastopt's idle-spin cap, ``GOMP_SPINCOUNT=10000``;
imported first, fastopt uses torch's copy with libgomp's default spin). The
forward/backward's threads and the optimizer's are then the same pool and never
oversubscribe the cores. With a torch built on another OpenMP runtime, each step
sets fastopt's thread count to ``torch.get_num_threads()``.
``fastopt.set_num_threads(n)`` still overrides fastopt's count.
"""
try:
    import torch  # noqa: F401 - the check that PyTorch is there
except ImportError as exc:
    raise ImportError("fastopt.torch needs PyTorch, which is an optional dependency of fastopt: "
                      "pip install torch (the CPU build is enough)") from exc

from fastopt.torch._adapter import ALL, Optimizer

globals().update({cls.__name__: cls for cls in ALL})

__all__ = ["Optimizer", "ALL"] + [cls.__name__ for cls in ALL]
