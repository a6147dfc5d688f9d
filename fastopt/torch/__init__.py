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
``fastopt/rules/``). float32 and float64 CPU tensors; sparse parameters are refused
with a message.

bfloat16/float16 parameters run fastopt's low-precision kernels (:mod:`fastopt.lowprec`)
on zero-copy views (bfloat16 as uint16 bit patterns), bit for bit ``fastopt.X(...,
precision=...)``. An optimizer given bfloat16 parameters and no ``precision=`` uses
``Precision()`` (bfloat16 state, the storage and memory ``torch.optim`` keeps for them), so
swapping the import is enough for a bfloat16 model. float16 parameters need an explicit
``precision=`` (``Precision()`` keeps float32 state for them, twice torch's memory, and
float16 training wants the loss-scale choice made on purpose):

* ``Precision(master_weights=True)``: float32 master weights and float32 state kept by
  the optimizer; each step reads the half gradient, updates the master weights and
  writes the half parameter in the same pass (ZeRO-Offload / DeepSpeed's CPU Adam).
  ``state="bfloat16"`` or ``state="8bit"`` (block-wise, arrays of at least
  ``min_8bit_size`` elements) shrink the state.
* ``Precision()`` (or ``state="8bit"``) without master weights: bfloat16 parameters
  keep bfloat16 state, as ``torch.optim.Adam`` does; float16 parameters float32 state.
  fastopt computes in float32 and rounds the stored values once (``rounding=
  "stochastic"`` for bfloat16 stores); torch's bfloat16 Adam rounds every
  intermediate, so the bits differ from torch's (the trajectories stay close: see
  tests/test_torch_lowprec.py).
* float16: ``set_loss_scale(s)`` divides the gradients by ``s`` inside the step; with
  ``nonfinite="skip"`` a step with an inf/NaN gradient changes nothing and
  ``last_step_skipped`` is True.

The state_dict of such a parameter has torch's keys (``step``, ``exp_avg``, ...: bfloat16
tensors for bfloat16 state, float32 for float32 state, 8-bit state dequantised to
float32), so ``torch.optim`` loads it, and extra keys for a bitwise fastopt.torch round
trip: ``master`` (float32 master weights), ``<state>_q8`` (uint8 codes) and
``<state>_absmax`` (float32 per 256-element block). Loading a ``torch.optim`` state_dict
takes the master weights from the parameter; see :mod:`fastopt.torch._lowprec`.

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
