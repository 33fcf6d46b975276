"""FSDP2: torch's ``fully_shard``, one unit per transformer block and the root, stepping in
every engine's loop.

The model is built whole on the device (every engine's build and size check), then each
transformer block is sharded with ``torch.distributed.fsdp.fully_shard`` and the root last
(the remaining parameters: embeddings, final norm, head), as torchtitan does. Each rank
keeps ``1/W`` of every parameter (a ``DTensor`` sharded on dim 0), its gradient and its
AdamW states; a unit's parameters are all-gathered before its forward and backward and
freed after (the root keeps its own from forward to backward, FSDP2's default for the
root), and its gradients are reduce-scattered after its backward.

The case's flags, as the torch engine takes them where they apply:

- ``precision``: ``MixedPrecisionPolicy``, not autocast. bf16 and fp16 gather and compute
  in that dtype (``param_dtype``) and reduce gradients in fp32 (``reduce_dtype``); the
  sharded parameters the optimizer steps on stay fp32. fp16 steps through
  ``ShardedGradScaler``, which agrees the inf check over the ranks (each sees only its
  shard); collection refuses fp16 on a cpu profile. bf16-pure: the model is cast to bf16
  before it is sharded (every engine's build, :func:`~gpubench.worker.engines.recipe.cast_model`),
  so the sharded parameters, their gradients and AdamW's states are bf16, and the policy
  casts nothing (its defaults): gathers and compute in bf16, and gradients reduce-scattered
  in bf16, their own dtype, as DDP all-reduces a bf16 model's gradients. An fp32
  ``reduce_dtype`` would only round the sum back into a bf16 gradient, at twice the traffic.
- ``grad_ckpt``: the model's own checkpointing (the built-in GPT checkpoints each block,
  :mod:`gpubench.worker.models.gpt`); FSDP gathers the block again for its recomputation.
- ``grad_accum``: ``set_requires_gradient_sync(False)`` on all but the last micro-batch,
  so the reduce-scatter runs once per optimizer step (FSDP then accumulates unsharded
  gradients, in fp32, until it).
- ``offload_params``: ``CPUOffloadPolicy``: sharded parameters, their gradients and the
  optimizer step on the CPU (pinned host memory on CUDA), copied to the device per unit.
- ``compile``: each block is compiled (``nn.Module.compile``) before it is sharded, as
  torchtitan does, so the FSDP hooks stay outside the compiled graphs.
- ``attention``, ``fused_adamw``, ``tf32``: as the torch engine.

The step is the torch engine's (:class:`~gpubench.worker.engines.torch_engine.TorchTrainStep`),
phases and all: ``data``, ``forward`` (with the units' all-gathers), ``backward`` (with the
re-gathers and reduce-scatters), ``clip``, ``optimizer`` and ``rest``. ``clip_grad_norm_``
over DTensor gradients all-reduces the shards' partial norms (inside ``clip``) and returns
the global norm as a replicated DTensor, by which it scales every shard;
tests/test_fsdp_engine.py checks it against the same step computed unsharded.

One process (``nproc=1``, no torchrun): ``fully_shard`` needs a device mesh, and torch
2.13's default mesh calls ``init_process_group()`` with the ``env://`` rendezvous, which
fails without torchrun's ``MASTER_ADDR``/``MASTER_PORT``; so :func:`start_fsdp_group`
starts a one-rank group on an in-memory ``HashStore`` (gloo on CPU, NCCL on CUDA) and the
engine builds the mesh itself. FSDP then "shards" over one rank: the same gathers and
casts run, without communication.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.worker.engines.base import TrainingEngine
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.device import device_for
from gpubench.worker.engines.distributed import Ranks, start_process_group
from gpubench.worker.engines.loop import TrainStep
from gpubench.worker.engines.recipe import AUTOCAST_DTYPES, adamw
from gpubench.worker.engines.torch_engine import TorchTrainStep

if TYPE_CHECKING:
    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel


class FSDPEngine(TrainingEngine):
    """FSDP2 training: ``fully_shard`` per block, mixed precision policy, CPU offload."""

    name = "fsdp"

    def set_up_framework(
        self, case: Case, profile: HardwareProfile, progress: ProgressWriter
    ) -> Ranks:
        return start_fsdp_group(profile)

    def build_step(self, ctx: TrainingContext, model: BuiltModel, stream: DataStream) -> TrainStep:
        """Shard ``model`` block by block, then the root; AdamW over the sharded parameters."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        case, device = ctx.case, ctx.device
        mesh = init_device_mesh(device.type, (ctx.ranks.world_size,))
        options: dict[str, Any] = {"mesh": mesh, "mp_policy": mixed_precision(case)}
        if case.flags.offload_params:
            from torch.distributed.fsdp import CPUOffloadPolicy

            options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
        for block in transformer_blocks(model.module):
            if case.flags.compile:
                block.compile()
            fully_shard(block, **options)
        root = fully_shard(model.module, **options)  # the same module, now an FSDPModule
        params = [p for p in model.module.parameters() if p.requires_grad]  # DTensor shards
        return FSDPTrainStep(ctx, model, stream, adamw(case, params), params, root)


class FSDPTrainStep(TorchTrainStep):
    """The torch engine's step on a sharded model: no autocast (the mixed precision policy
    casts), a ShardedGradScaler for fp16, gradient sync on the last micro-batch only, and
    the global norm of DTensor gradients."""

    def __init__(
        self,
        ctx: TrainingContext,
        model: BuiltModel,
        stream: DataStream,
        optimizer: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        root: Any,
    ) -> None:
        super().__init__(ctx, model, stream, optimizer, params)
        self.root = root  # the FSDPModule at the top
        self.autocast_dtype = None  # MixedPrecisionPolicy casts the gathered parameters
        if ctx.case.flags.precision == "fp16":
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            self.scaler = ShardedGradScaler(ctx.device.type)

    def _no_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
        """Reduce-scatter gradients once per optimizer step, in the last micro-batch's
        backward; before it FSDP accumulates them unsharded."""
        self.root.set_requires_gradient_sync(last_micro_batch)
        return contextlib.nullcontext()

    def _clip_grad_norm(self) -> torch.Tensor:
        """The global norm, which the clip scales each shard by: ``clip_grad_norm_`` returns
        it as a replicated DTensor, ``full_tensor()`` a plain tensor of it for the loop."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        full = getattr(norm, "full_tensor", None)
        return full() if callable(full) else norm


def mixed_precision(case: Case) -> Any:
    """FSDP2's ``MixedPrecisionPolicy`` for the case: 16-bit gathers and compute with fp32
    gradient reduction for bf16/fp16, none for fp32 and bf16-pure (the policy's defaults:
    a bf16-pure model is bf16 already, reduced in bf16; see the module doc)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = AUTOCAST_DTYPES.get(case.flags.precision)
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)


def transformer_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules to shard one by one: a Hugging Face model's ``_no_split_modules`` classes
    (its transformer blocks), else the children of the ``nn.ModuleList`` holding the most
    parameters (the built-in GPT's ``h``). None found: only the root is sharded."""
    block_names = set(getattr(module, "_no_split_modules", None) or ())
    if block_names:
        found = [m for m in module.modules() if type(m).__name__ in block_names]
        if found:
            return found
    lists = [m for m in module.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        return []
    largest = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
    return list(largest.children())


def start_fsdp_group(profile: HardwareProfile) -> Ranks:
    """This process's Ranks with a process group started: torchrun's, or with one process a
    one-rank group on an in-memory store (``fully_shard`` needs a mesh; see the module
    docstring)."""
    import torch.distributed as dist

    ranks = start_process_group(profile)
    if dist.is_initialized():
        return ranks
    device = device_for(profile, ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        store=dist.HashStore(),
        rank=0,
        world_size=1,
        device_id=device if device.type == "cuda" else None,
    )
    ranks.owns_group = True
    return ranks
