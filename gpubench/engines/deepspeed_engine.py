"""The DeepSpeed engine: ZeRO stages and CPU offload, on the torch engine's loop.

:meth:`DeepSpeedEngine.run` builds the case's model with
:func:`~gpubench.models.build_model`, hands it to ``deepspeed.initialize``
with a config made from the Case (:func:`deepspeed_config`), and gives one
optimizer step to the torch engine's :func:`~gpubench.engines.torch_engine.training_loop`;
warm-up detection, timing, the series, progress, divergence, metrics, OOM
classification and the parameter-count check are the torch engine's, shared,
not copied. One optimizer step is ``grad_accum`` micro-batches of
``engine(x)`` -> loss -> ``engine.backward(loss)`` -> ``engine.step()``
(DeepSpeed divides the loss by ``grad_accum`` and steps the optimizer on the
last micro-batch).

How the flags map onto DeepSpeed (see :func:`deepspeed_config`):

- ``precision``: ``bf16`` -> ``"bf16": {"enabled": true}``, ``fp16`` ->
  ``"fp16": {"enabled": true, "loss_scale": 0}`` (dynamic loss scaling). Unlike
  the torch engine's autocast (fp32 weights, bf16/fp16 matmuls), DeepSpeed
  keeps the model's weights in bf16/fp16 and fp32 master weights in the
  optimizer: the usual DeepSpeed set-up, and what its memory figures assume.
- ``zero_stage`` -> ``zero_optimization.stage``; ``offload_optimizer`` /
  ``offload_params`` -> ``offload_optimizer`` / ``offload_param`` with
  ``device: cpu`` (``pin_memory`` on CUDA only: pinned host memory serves
  copies to a GPU).
- The optimizer is AdamW with the torch engine's lr, betas and weight decay.
  Without optimizer offload it is ``torch.optim.AdamW`` (DeepSpeed's
  ``torch_adam``; ``fused_adamw`` passes ``fused=True``), so a DeepSpeed case
  and a torch case differ by ZeRO, not by the optimizer; DeepSpeed's own
  ``FusedAdam`` would need its op compiled (with nvcc on CUDA). With
  optimizer offload DeepSpeed uses its ``DeepSpeedCPUAdam``, a compiled op
  (``cpu_adam``); ``fused_adamw`` is refused with it (Flags).
- ``grad_ckpt`` and ``attention`` are the model's own (``build_model``),
  ``tf32`` as in the torch engine, ``compile`` -> ``engine.compile()``.
- ``grad_clip`` -> ``gradient_clipping`` (``0.0``, DeepSpeed's "no clipping", for
  ``grad_clip=None``), except for fp32 without ZeRO, where the engine clips
  itself (below) and DeepSpeed's ``gradient_clipping`` is ``0.0``.
- ZeRO's ``reduce_bucket_size`` and ``allgather_bucket_size`` are DeepSpeed's
  default (5e8 elements) or the model's parameter count, whichever is
  smaller. DeepSpeed allocates the whole reduce bucket up front (2 GB in
  fp32), and a bucket at least as big as all the gradients is only ever
  filled up to them: one reduction per step either way, so the smaller
  bucket changes the memory, not the communication. (Found on CPU: gpt-tiny
  with ZeRO-2 failed to allocate its 2 GB bucket under ``cpu:512MiB``.)

The recorded gradient norm is the unclipped global norm DeepSpeed computed
for the step, ``engine.get_global_grad_norm()``: DeepSpeed copies it from its
optimizer wrapper, and every wrapper keeps one (ZeRO 1-3, the bf16 and fp16
optimizers; ``inf`` on an fp16 overflow step, which DeepSpeed skips), whether
or not it clips. Plain fp32 without ZeRO has no wrapper
(:func:`engine_clips`: DeepSpeed 0.19.8's ``_do_optimizer_sanity_check``
picks none when ZeRO is off and the model and gradient-accumulation dtypes
are both fp32): DeepSpeed steps the bare torch AdamW, clips in
``clip_fp32_gradients`` without keeping the norm, and reports ``None``.
Computing the norm beside that would cost such a case two norm passes a step
where the torch engine pays one; so there DeepSpeed's clipping is off
(``gradient_clipping: 0.0``) and the engine clips itself, with
``torch.nn.utils.clip_grad_norm_`` (``max_norm=inf`` for ``grad_clip=None``)
over the module's parameters after the last backward (whose all-reduce has
run) and before ``engine.step()``, inside the step's time as the torch
engine's clip is, recording the unclipped norm it returns.

Before the worker caps the process's memory it calls :meth:`prepare`, which
sets up what is DeepSpeed's rather than the case's: ``DS_ACCELERATOR`` from
the profile (``cpu`` or ``cuda``; a cpu profile on a machine with a GPU must
not pick the GPU), a single-process rendezvous when no launcher set one
(:func:`gpubench.runner.launchers.single_process_rendezvous`),
``TORCH_EXTENSIONS_DIR`` when unset, the ``deepspeed`` import, and the ops the
case will load, compiled on first use (tens of seconds) and cached under
``TORCH_EXTENSIONS_DIR``: the compiler runs in child processes, which would
inherit the cap and could fail under it. Last it starts the process group
(:func:`start_deepspeed_group`), whose gloo set-up maps tens of MiB and starts
threads that are the runtime's, not the case's.

Not supported: models too big to build whole on one device (ZeRO-3 here
partitions a model built whole by ``build_model``, not one built under
``deepspeed.zero.Init``), NVMe offload, pipeline parallelism.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

from gpubench.case import Case
from gpubench.engines.torch_engine import (
    ADAMW_BETAS,
    ADAMW_WEIGHT_DECAY,
    Ranks,
    Record,
    count_and_check_parameters,
    run_training,
    training_device,
    training_loop,
)
from gpubench.profiles import HardwareProfile
from gpubench.result import Result
from gpubench.runner.launchers import default_torch_extensions_dir, single_process_rendezvous
from gpubench.runner.protocol import ProgressWriter
from gpubench.trackers.memory import DeviceMemoryTracker

if TYPE_CHECKING:
    import torch

STEPS_PER_PRINT = 2**31 - 1  # DeepSpeed prints a progress line every this many steps: never
SHM_COMM_OP = "ShareMemCommBuilder"  # the CPU accelerator's shared-memory collectives
CPU_ADAM_OP = "CPUAdamBuilder"  # DeepSpeedCPUAdam, the optimizer of optimizer offload
ZERO_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default bucket sizes (runtime/zero/config.py)


def accelerator_name(profile: HardwareProfile) -> str:
    """The ``DS_ACCELERATOR`` a profile runs on: ``cpu`` (gloo) or ``cuda`` (NCCL)."""
    return "cuda" if profile.kind == "cuda" else "cpu"


def deepspeed_config(
    case: Case, profile: HardwareProfile, n_params: int | None = None
) -> dict[str, Any]:
    """The ``deepspeed.initialize`` config that runs ``case`` as its flags say.

    ``n_params`` (the built model's) caps ZeRO's bucket sizes (see the module doc).
    """
    flags = case.flags
    pin_memory = profile.kind == "cuda"
    zero: dict[str, Any] = {"stage": flags.zero_stage}
    if flags.zero_stage and n_params is not None:
        bucket = min(ZERO_BUCKET_ELEMENTS, max(1, n_params))
        zero["reduce_bucket_size"] = bucket
        zero["allgather_bucket_size"] = bucket
    if flags.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if flags.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    adamw: dict[str, Any] = {
        "lr": case.lr,
        "betas": list(ADAMW_BETAS),
        "weight_decay": ADAMW_WEIGHT_DECAY,
    }
    if not flags.offload_optimizer:
        adamw["torch_adam"] = True  # torch.optim.AdamW, as the torch engine uses
        if flags.fused_adamw:
            adamw["fused"] = True
    # 0.0: DeepSpeed does not clip (grad_clip=None, or the engine clips: engine_clips)
    clipping = 0.0 if case.grad_clip is None or engine_clips(case) else float(case.grad_clip)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": case.batch_size,
        "gradient_accumulation_steps": flags.grad_accum,
        "gradient_clipping": clipping,
        "optimizer": {"type": "AdamW", "params": adamw},
        "zero_optimization": zero,
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
    if flags.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif flags.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0}  # 0: dynamic loss scaling
    return config


def engine_clips(case: Case) -> bool:
    """Whether the engine, not DeepSpeed, clips ``case``'s gradients and takes their norm.

    True for fp32 without ZeRO: DeepSpeed then steps the bare torch optimizer, which keeps
    no gradient norm (see the module doc).
    """
    return case.flags.precision == "fp32" and case.flags.zero_stage == 0


def ops_for(case: Case, accelerator: str) -> list[str]:
    """The compiled ops (DeepSpeed op builder names) a case loads, so they are built early."""
    ops = [SHM_COMM_OP] if accelerator == "cpu" else []  # loaded by init_distributed
    if case.flags.offload_optimizer:
        ops.append(CPU_ADAM_OP)
    return ops


def load_ops(names: list[str]) -> None:
    """Build (once, into ``TORCH_EXTENSIONS_DIR``) and load each op DeepSpeed can build here.

    DeepSpeed keeps a loaded op for the process, so its later ``load()`` of the
    same op (in ``init_distributed`` or ``DeepSpeedCPUAdam``) costs nothing.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    # the same test DeepSpeed applies before it loads an op; reading it probes every op
    # builder once (compiler checks in subprocesses), which is best done before the cap too
    compatible = deepspeed.ops.__compatible_ops__
    for name in names:
        builder = get_accelerator().create_op_builder(name)
        if builder is not None and compatible.get(builder.NAME, False):
            builder.load()


def start_deepspeed_group() -> Ranks:
    """DeepSpeed's process group, started before the memory cap, as :class:`Ranks`.

    ``deepspeed.init_distributed`` starts it on the accelerator's backend (gloo on
    CPU, NCCL on CUDA) from the rendezvous in the environment (torchrun's, or the
    world of one :meth:`DeepSpeedEngine.prepare` set), or adopts one already
    started. :func:`~gpubench.engines.torch_engine.run_training` closes it.
    """
    import deepspeed
    import torch.distributed as dist

    ranks = Ranks.from_env()
    started_here = not dist.is_initialized()
    deepspeed.init_distributed()
    ranks.owns_group = started_here
    return ranks


class DeepSpeedEngine:
    """DeepSpeed training: ZeRO 0-3, optimizer and parameter offload, bf16/fp16."""

    name = "deepspeed"

    def __init__(self) -> None:
        self._ranks: Ranks | None = None  # set by prepare(), taken by run()

    def prepare(self, case: Case, profile: HardwareProfile) -> None:
        """DeepSpeed's own set-up, before the memory cap: environment, import, compiled ops."""
        os.environ["DS_ACCELERATOR"] = accelerator_name(profile)
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default_torch_extensions_dir()))
        if os.environ.get("WORLD_SIZE", "1") == "1":  # no torchrun: a world of one
            for key, value in single_process_rendezvous().items():
                os.environ.setdefault(key, value)
        import deepspeed  # noqa: F401 - imported here so it counts as the runtime's
        from deepspeed.accelerator import get_accelerator

        chosen = get_accelerator().device_name()
        if chosen != accelerator_name(profile):
            raise RuntimeError(
                f"DeepSpeed runs on accelerator {chosen!r}, but profile {profile.name!r} needs "
                f"{accelerator_name(profile)!r} (deepspeed was imported before "
                "DS_ACCELERATOR could be set)"
            )
        load_ops(ops_for(case, accelerator_name(profile)))
        self._ranks = start_deepspeed_group()

    def run(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> Result:
        if self._ranks is None:  # called in process, without the worker
            self.prepare(case, profile)
        assert self._ranks is not None
        ranks, self._ranks = self._ranks, None
        try:
            device = training_device(case, profile, ranks)
        except BaseException:
            ranks.close()  # run_training, which would, does not run
            raise

        def train(record: Record, device_memory: DeviceMemoryTracker) -> str:
            return self._train(case, profile, device, ranks, progress, record, device_memory)

        return run_training(case, profile, progress, device, ranks, train)

    def _train(
        self,
        case: Case,
        profile: HardwareProfile,
        device: torch.device,
        ranks: Ranks,
        progress: ProgressWriter,
        record: Record,
        device_memory: DeviceMemoryTracker,
    ) -> str:
        """Build, initialise DeepSpeed, warm up and measure; returns ``ok`` or ``diverged``."""
        import deepspeed
        import torch

        from gpubench.data.synthetic import TokenStream
        from gpubench.models import build_model

        flags = case.flags
        progress.emit("building")
        record.t_build = time.perf_counter()
        built = build_model(case, device)
        count_and_check_parameters(record, built)  # before ZeRO-3 partitions the parameters
        built.module.train()
        engine, *_ = deepspeed.initialize(
            model=built.module,
            model_parameters=[p for p in built.module.parameters() if p.requires_grad],
            config=deepspeed_config(case, profile, record.n_params),
        )
        if flags.compile:
            engine.compile()
        built.module = engine  # BuiltModel.logits calls engine(x): DeepSpeed's forward
        stream = TokenStream(
            case.data,
            built.vocab_size,
            case.batch_size,
            case.seq_len,
            case.seed,
            device,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )
        # DeepSpeed reports the norm its optimizer wrapper keeps (ZeRO, bf16, fp16 all do);
        # a bare torch optimizer (fp32 without ZeRO) keeps none: the engine clips and
        # takes the norm itself, DeepSpeed's gradient_clipping being 0 (deepspeed_config)
        own_norm = engine_clips(case)
        if not own_norm and not hasattr(engine.optimizer, "_global_grad_norm"):
            raise RuntimeError(
                f"DeepSpeed's optimizer {type(engine.optimizer).__name__} keeps no gradient "
                f"norm for case {case.id!r}; gpubench expects a norm-keeping wrapper for "
                f"precision={flags.precision!r}, zero_stage={flags.zero_stage}"
            )
        max_norm = math.inf if case.grad_clip is None else case.grad_clip
        accum = flags.grad_accum

        def train_step() -> tuple[torch.Tensor, torch.Tensor | float]:
            """One optimizer step; returns (mean micro-batch loss, unclipped grad norm)."""
            loss_sum = torch.zeros((), device=device)
            grad_norm: torch.Tensor | float = math.nan
            for micro in range(accum):
                x, y = stream.next_batch()  # [B, T] each
                logits = built.logits(x)  # [B, T, V]
                loss = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.size(-1)), y.reshape(-1)
                )
                loss_sum += loss.detach()
                engine.backward(loss)  # DeepSpeed scales by 1 / grad_accum
                del logits
                if own_norm and micro == accum - 1:  # clip; the norm is the unclipped one
                    grad_norm = torch.nn.utils.clip_grad_norm_(engine.module.parameters(), max_norm)
                engine.step()  # the optimizer steps on the last micro-batch only
                del loss
            if not own_norm:
                reported = engine.get_global_grad_norm()
                grad_norm = math.nan if reported is None else reported
            return loss_sum / accum, grad_norm

        return training_loop(case, device, ranks, progress, record, device_memory, train_step)
