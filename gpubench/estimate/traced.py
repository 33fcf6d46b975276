"""The traced memory model: the case's training step run on fake tensors under torch's
memory tracker, to check the formulas of :mod:`gpubench.estimate.analytical`.

What is run is the torch engine's own step, ``TorchTrainStep``
(:mod:`gpubench.worker.engines.torch_engine`, :func:`engine_step`), not a copy of it: the
case's model (built-in GPT, ``hf:<model_type>`` or a factory, with its attention and
grad_ckpt flags) with fp32 parameters; per micro-batch a [B, T] batch of int64 token ids
from the engine's ``TokenStream``, the forward under autocast for bf16/fp16,
``recipe.lm_loss``, the backward of loss/grad_accum; then ``clip_grad_norm_``, the recipe's
AdamW (fused when flagged) and ``zero_grad(set_to_none=True)``. The tracker stands in for
the step's phase clock, which tells it where the step is. Left out: DDP and compile (see
:func:`case_notes`) and the GradScaler. The model is built on ``meta`` (shapes only, no
initialisation cost) and its parameters are then made fake tensors, so a 1B-parameter model
holds no real memory; every op runs under ``FakeTensorMode``, which computes shapes and
dtypes only.

What is measured: torch's ``MemTracker`` (a ``TorchDispatchMode``) sums the bytes of the
live tensor storages after every op; ``peak_bytes`` is the largest sum, and ``breakdown``
files the bytes live at that moment under the parts of :mod:`gpubench.estimate.parts`:

- parameters: parameters and buffers; gradients: ``.grad`` tensors;
- optimizer_states: AdamW's exp_avg, exp_avg_sq and step, once the step has made them;
- logits_and_loss: the model's output logits, every tensor the loss makes from them
  (fp32 copy, log-softmax, loss) and their gradients down to the logits' own;
- activations: the rest of what the forward makes (saved tensors, the token batch,
  checkpointed blocks' recomputation);
- workspace: temporaries of the backward (activation gradients), of the norm clip and of
  the optimizer step (foreach AdamW's sqrt/denominator lists).

The parts are an attribution, the peak is exact: under grad_ckpt, MemTracker may file a
block's recomputed tensors as workspace rather than activations (its documented limit).

One optimizer step is traced, the steady one: AdamW makes its states lazily in the first
step, so they are first made by an untraced step on zero gradients (no forward, no
backward). Every moment of the first step holds at most what the same moment of a later
step holds (the first makes its states in the optimizer step, where a later one already
has them), so the steady step's peak is the run's; the tests check it against a cold
first step.

What is assumed (and differs from the card): the trace runs on a fake *CPU* device. A
fake CUDA tensor needs CUDA's device guard for autograd, which a CPU-only torch build
lacks (the process aborts, it does not raise), so "cuda" is traced on CPU too, and where
CPU's kernels hold other memory than CUDA's, :func:`cuda_kernels` runs CUDA's choice
(figures: gpt2-small, B 8, T 1024, bf16, dropout 0.1, traced for CUDA):

- dropout: CPU's ``dropout`` in training takes the unfused path and saves its scaled noise
  in the input's dtype; CUDA's runs ``native_dropout``, which saves a bool mask. Traced as
  ``native_dropout``: 1 byte a dropped element, as CUDA (with ``math`` attention the
  activations were 14.4 GiB, now 10.8 GiB; the formulas say 10.6);
- SDPA with dropout: CPU has no fused kernel with dropout and takes the math path, which
  saves the [T, T] probabilities, the noise and the dropped probabilities (12 bytes a score
  in fp32); CUDA's flash or memory-efficient kernel (:func:`cuda_sdpa_backend`) saves the
  output, an O(T) fp32 log-sum-exp and a 16-byte RNG seed and offset. Traced as CPU's
  flash kernel without dropout, which saves the same but for those 16 bytes (activations
  were 17.0 GiB, now 2.9 GiB; the formulas say 2.9). Without dropout both pick a flash
  kernel already. Not modelled: CUDA's math fallback, for head sizes the fused kernels
  refuse (none of the built-in models'), where CPU's flash kernel keeps an O(T) log-sum-exp
  and CUDA the [T, T] probabilities; nor the memory-efficient kernel's log-sum-exp padding
  to 32 positions;
- autocast's float32 op list (:data:`CUDA_FP32_OPS`: softmax, log-softmax, norms, ...),
  which CPU autocast runs in half precision: a bf16 ``math`` softmax saves fp32
  probabilities on CUDA, bf16 on the CPU. Kept through the backward's recomputation;
- AdamW: foreach, CUDA's default when ``fused`` is not asked (the CPU's is the per-tensor
  loop): a 4-byte temporary per parameter. Fused AdamW and the foreach code are the same
  Python on both, in-place kernels without temporaries;
- the same on both (checked): autocast caches one 16-bit copy per weight on the CPU as on
  CUDA (the same ``cached_cast``, cleared when the outermost autocast exits); LayerNorm
  saves its input, mean and rstd and GELU its input (the same autograd formulas); with a
  16-bit input CPU's LayerNorm keeps mean and rstd in 16 bits, CUDA's in fp32 (4 bytes a
  row more on CUDA; the torch engine's residual stream is fp32, so its norms are too).

Not modelled: the CUDA caching allocator's rounding of each block up to 512 bytes (well
under 1 MiB for these models); AdamW's ``step`` counts, which CUDA keeps on the host unless
fused (4 bytes a parameter tensor, counted here); kernels' own scratch (flash attention's
fp32 dq accumulator in the backward, ``4 B T h`` bytes for one layer at a time: 24 MiB for
the case above). Not in the trace: the CUDA context and the allocator's fragmentation (the
analytical model's constants), the GradScaler's scalars under fp16 (its inf check reads a
value a fake tensor does not have), DDP's buckets, DeepSpeed's partitioning and buffers,
torch.compile's fusion, and the learnable data stream's token pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from gpubench.contracts.case import Case, Flags
from gpubench.estimate import parts

if TYPE_CHECKING:
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker as _MemTrackerBase

    from gpubench.worker.engines.torch_engine import TorchTrainStep
    from gpubench.worker.models.built import BuiltModel
else:
    _MemTrackerBase = object  # the real base is joined on first use: _step_tracker_class

DEVICE_KINDS = ("cuda", "cpu")
TRACE_DEVICE = "cpu"  # see the module docstring: fake CUDA autograd aborts a CPU-only build
_TOTAL = "Total"  # MemTracker's key for a device's sum over its reference types


class TraceUnavailable(Exception):
    """The case's step cannot be traced; ``str(exc)`` says why, for a note beside the formulas."""


@dataclass(frozen=True)
class TracedStep:
    """What one traced training step held on the device: see the module docstring."""

    peak_bytes: int  # peak of live tensor bytes on the device during the step
    breakdown: dict[str, int]  # part name (gpubench.estimate.parts) -> bytes at the peak
    seconds: float  # how long building and tracing took (when first traced; results are cached)
    engine_equivalent: bool = False  # the torch step standing for another engine's (DeepSpeed)
    notes: tuple[str, ...] = field(default=())  # what the trace assumed for this case


# -- the public entry: cached per step-relevant case -------------------------------------------


def trace_case(case: Case, device_kind: str) -> TracedStep:
    """Trace ``case``'s training step (see the module docstring); raise
    :class:`TraceUnavailable` with the reason when the model cannot be built or run on fake
    tensors. Results are cached on what the step's memory depends on (:func:`step_case`):
    the model, its config, the shape and the memory-relevant flags, never the profile."""
    if device_kind not in DEVICE_KINDS:
        raise ValueError(f"device_kind={device_kind!r}; valid: {', '.join(DEVICE_KINDS)}")
    traced = _cached_trace(step_case(case), device_kind)
    return dataclasses.replace(
        traced,
        engine_equivalent=case.engine != "torch",
        notes=traced.notes + case_notes(case, device_kind),
    )


def step_case(case: Case) -> Case:
    """The case reduced to what one rank's torch step holds in memory: the model and its
    config, batch, sequence, vocabulary, grad_clip and the precision, grad_ckpt,
    grad_accum, attention and fused_adamw flags. Engine, nproc, compile, ZeRO and offload
    are left out (see :func:`case_notes`), and so are steps, seed, data and the name."""
    flags = case.flags
    return Case(
        model=case.model,
        batch_size=case.batch_size,
        seq_len=case.seq_len,
        vocab_size=case.vocab_size,
        model_config=case.model_config,
        grad_clip=case.grad_clip,
        flags=Flags(
            precision=flags.precision,
            grad_ckpt=flags.grad_ckpt,
            grad_accum=flags.grad_accum,
            attention=flags.attention,
            fused_adamw=flags.fused_adamw,
        ),
    )


def case_notes(case: Case, device_kind: str) -> tuple[str, ...]:
    """What the trace of ``case`` stands in for, one sentence each."""
    notes = []
    if device_kind == "cuda":
        notes.append(
            "traced on a fake CPU device with CUDA's foreach AdamW, autocast fp32 ops, "
            "bool dropout masks and fused SDPA under dropout; no 512-byte CUDA block rounding"
        )
    if case.engine != "torch":
        notes.append(
            f"engine={case.engine}: traced the equivalent torch step (fp32 parameters, "
            "unpartitioned AdamW); combine its activations with the formulas' model states"
        )
    if case.nproc > 1:
        collectives = {
            "torch": "DDP buckets",
            "fsdp": "FSDP's all-gathered units (the formulas count them)",
        }.get(case.engine, "ZeRO's partitions (the formulas count them)")
        notes.append(f"one rank of {case.nproc} traced (batch per rank); {collectives} not traced")
    if case.flags.compile:
        notes.append("compile=True: traced eager; torch.compile may fuse away activations")
    if case.flags.precision == "fp16":
        notes.append("fp16: traced without the GradScaler (a few scalars)")
    return tuple(notes)


_CACHE: dict[tuple[Case, str], TracedStep | TraceUnavailable] = {}
_CACHE_LOCK = threading.Lock()


def clear_trace_cache() -> None:
    """Forget every cached trace (a factory's code changed, or a test wants a fresh trace)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _cached_trace(case: Case, device_kind: str) -> TracedStep:
    """A failure is cached too: a model that cannot be traced is not retried per case."""
    with _CACHE_LOCK:
        known = _CACHE.get((case, device_kind))
        if known is None:
            try:
                known = _trace_fake(case, device_kind)
            except TraceUnavailable as exc:
                known = exc
            _CACHE[case, device_kind] = known
    if isinstance(known, TraceUnavailable):
        raise known
    return known


def _trace_fake(case: Case, device_kind: str) -> TracedStep:
    started = time.perf_counter()
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as exc:  # pragma: no cover - torch without FakeTensorMode
        raise TraceUnavailable(f"this torch has no FakeTensorMode ({exc})") from exc
    fake_mode = FakeTensorMode()
    with _reason("building the model on fake tensors"):
        built = build_fake_model(case, fake_mode)
    with fake_mode, _reason("tracing its training step on fake tensors"):
        traced = trace_training_steps(case, built, TRACE_DEVICE, as_cuda=device_kind == "cuda")
    return dataclasses.replace(traced, seconds=time.perf_counter() - started)


@contextlib.contextmanager
def _reason(doing: str) -> Iterator[None]:
    """Turn whatever the model raises into a :class:`TraceUnavailable` that says where."""
    try:
        yield
    except TraceUnavailable:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TraceUnavailable(f"{doing}: {type(exc).__name__}: {message}"[:500]) from exc


# -- the model on fake tensors -----------------------------------------------------------------


def build_fake_model(case: Case, fake_mode: Any) -> BuiltModel:
    """The case's model built on ``meta`` (shapes, no memory, no initialisation), its
    parameters and buffers then replaced by ``fake_mode``'s tensors on the trace device,
    tied weights kept tied. (Built under the fake mode itself, ``module.to`` fails: it
    swaps each fake parameter, and a fake tensor refuses the swap.)"""
    from gpubench.worker.engines.recipe import cast_model
    from gpubench.worker.models import build_model

    built = build_model(case, "meta")
    cast_model(case, built.module)  # bf16-pure: as the engine's build casts it
    with fake_mode:
        _meta_to_fake(built.module, TRACE_DEVICE)
    return built


def _meta_to_fake(module: torch.nn.Module, device: str) -> None:
    import torch

    replaced: dict[int, torch.Tensor] = {}  # id(meta tensor) -> its fake: ties stay tied

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in replaced:
            made = torch.empty(t.shape, dtype=t.dtype, device=device)  # meta is not fake
            if isinstance(t, torch.nn.Parameter):
                made = torch.nn.Parameter(made, requires_grad=t.requires_grad)
            replaced[id(t)] = made
        return replaced[id(t)]

    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                sub._parameters[name] = cast("torch.nn.Parameter", fake(param))
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[name] = fake(buffer)


# -- the step under the tracker ----------------------------------------------------------------


def trace_training_steps(
    case: Case, built: BuiltModel, device: str, as_cuda: bool = False, primed: bool = True
) -> TracedStep:
    """Trace one optimizer step of the torch engine (:func:`engine_step`) on ``built``
    (already on ``device``, fake or real) and return its peak with the breakdown.
    ``seconds`` is the time of the step alone.

    ``primed`` (the default) makes AdamW's states first, untraced, so the step traced is the
    steady one (see the module docstring); ``primed=False`` traces the first step from cold,
    whose breakdown files the new states as workspace until its optimizer step ends.

    ``as_cuda`` takes CUDA's choices where CPU's differ in memory: AdamW's multi-tensor
    (foreach) implementation, whose temporaries span all parameters at once (on CPU torch
    loops per tensor; fused wins when flagged), and the kernels of :func:`cuda_kernels`
    (autocast's float32 ops, dropout's bool mask, SDPA's fused kernels under dropout)."""
    from gpubench.worker.engines.recipe import MODEL_DTYPES, cast_model

    built.module.train()
    if case.flags.precision in MODEL_DTYPES and not _is_fake(built.module):
        cast_model(case, built.module)  # a real model; a fake one was cast on meta
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = _adamw(case, params, foreach=as_cuda)
    if primed:
        _make_optimizer_states(optimizer, params)
    tracker = _step_tracker_class()()
    step = engine_step(case, built, params, optimizer, tracker, device)
    started = time.perf_counter()
    tracker.track_external(built.module, optimizer)
    with tracker, cuda_kernels() if as_cuda else contextlib.nullcontext():
        step()
    peak, breakdown = tracker.peak_breakdown(device)
    return TracedStep(peak_bytes=peak, breakdown=breakdown, seconds=time.perf_counter() - started)


def _is_fake(module: torch.nn.Module) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return any(isinstance(p, FakeTensor) for p in module.parameters())


def engine_step(
    case: Case,
    built: BuiltModel,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    tracker: _StepTracking,
    device: str,
) -> TorchTrainStep:
    """The torch engine's own step (:class:`TorchTrainStep`) on ``built``, as
    ``TorchEngine.build_step`` makes it without DDP or compile: the recipe's AdamW, the
    engine's :class:`TokenStream` of random tokens (under a fake mode its batches are fake
    tensors), and ``tracker`` in the phase clock's place, which tells it where the step is
    (see :meth:`_StepTracking.mark`). The model's logits are filed as the head's as they
    come out (:class:`_HeadFiled`). The GradScaler is left out: its inf check reads a value
    a fake tensor does not have (see :func:`case_notes`)."""
    import torch

    from gpubench.contracts.profiles.builtin import builtin_profiles
    from gpubench.worker.data.synthetic import TokenStream
    from gpubench.worker.engines.context import TrainingContext
    from gpubench.worker.engines.distributed import Ranks
    from gpubench.worker.engines.torch_engine import TorchTrainStep

    ctx = TrainingContext(case, builtin_profiles()["cpu"], torch.device(device), Ranks())
    stream = TokenStream(
        "random", built.vocab_size, case.batch_size, case.seq_len, case.seed, device
    )
    model = cast("BuiltModel", _HeadFiled(built, tracker))
    step = TorchTrainStep(ctx, model, stream, optimizer, params)
    step.mark = tracker.mark
    step.scaler = None
    return step


class _HeadFiled:
    """The built model as the engine's step sees it: ``logits`` files its output, and what
    the loss makes from it, as the head's (:meth:`_StepTracking.file_as_head`)."""

    def __init__(self, built: BuiltModel, tracker: _StepTracking) -> None:
        self.built = built
        self.tracker = tracker

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self.built.logits(idx)
        self.tracker.file_as_head(logits)
        return logits


def _make_optimizer_states(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]
) -> None:
    """One optimizer step on zero gradients: AdamW makes its states as in a first step."""
    import torch

    with torch.no_grad():
        for param in params:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _adamw(case: Case, params: list[torch.nn.Parameter], foreach: bool) -> torch.optim.Optimizer:
    """The recipe's AdamW; with ``foreach``, the implementation torch picks on CUDA."""
    from gpubench.worker.engines.recipe import adamw

    optimizer = adamw(case, params)
    if foreach and not case.flags.fused_adamw:
        for group in optimizer.param_groups:
            group["foreach"] = True
    return optimizer


# -- CUDA's kernels, where CPU's hold other memory ---------------------------------------------

# torch.amp's documentation, "CUDA Ops that can autocast to float32": those a language model
# may call. CPU autocast has no such list for them (its float32 list is losses, linalg, fft).
CUDA_FP32_OPS = frozenset(
    {
        "__pow__", "__rdiv__", "__rpow__", "__rtruediv__", "cross_entropy", "cosine_similarity",
        "cumprod", "cumsum", "exp", "expm1", "group_norm", "kl_div", "l1_loss", "layer_norm",
        "log", "log10", "log1p", "log2", "log_softmax", "mse_loss", "nll_loss", "norm",
        "normalize", "pow", "prod", "reciprocal", "rsqrt", "smooth_l1_loss", "softmax",
        "softmin", "softplus", "sum",
    }
)  # fmt: skip

# F.scaled_dot_product_attention's arguments, in order (a builtin: no inspectable signature)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
FLASH_MAX_HEAD_DIM = 256  # flash attention 2's largest head dimension


def cuda_sdpa_backend(
    dtype: torch.dtype, head_dim: int, value_head_dim: int, has_mask: bool
) -> str:
    """The kernel CUDA's SDPA picks (``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``,
    ``select_sdp_backend``) on an sm80+ card with the default backends enabled, from what
    changes memory: "flash" (16-bit, head dimension a multiple of 8 up to 256, no
    attention mask), else "efficient" (fp32 too, any mask; head dimension a multiple of 8,
    4 in fp32), else "math". Flash and memory-efficient save the output and an O(T) fp32
    log-sum-exp (the memory-efficient one padded to 32 positions) and, under dropout, the
    RNG seed and offset instead of a mask; math saves the [T, T] probabilities."""
    import torch

    half = dtype in (torch.float16, torch.bfloat16)
    same = head_dim == value_head_dim
    if half and same and not has_mask and head_dim % 8 == 0 and head_dim <= FLASH_MAX_HEAD_DIM:
        return "flash"
    if (
        dtype in (torch.float16, torch.bfloat16, torch.float32)
        and head_dim % (8 if half else 4) == 0
    ):
        return "efficient"
    return "math"


def cuda_kernels() -> contextlib.AbstractContextManager[Any]:
    """A torch function mode that runs the step as CUDA's kernels would hold it, on the CPU
    (the module docstring, "What is assumed", has each difference with its figure):

    - while autocast is on, :data:`CUDA_FP32_OPS` run on float32 copies of their
      half-precision inputs, as CUDA autocast does;
    - ``F.dropout`` in training runs as ``native_dropout``, which saves a bool mask: CPU's
      ``dropout`` takes the unfused path and saves its mask in the input's dtype;
    - SDPA with ``dropout_p > 0`` where CUDA picks a fused kernel (:func:`cuda_sdpa_backend`)
      runs CPU's kernel without dropout: CPU has no fused kernel with dropout and falls back
      to the math path's [T, T] probabilities and mask; a fused kernel's dropout keeps only a
      16-byte RNG seed and offset;
    - ``Tensor.backward`` runs with the mode kept on: a mode hands a call to itself with
      itself off, and a checkpointed block would recompute its forward with CPU's kernels
      (checkpoint fails on the dtype change). It calls the engine as
      ``torch.autograd.backward`` does after its dispatch check
      (``torch.autograd.graph._engine_run_backward``, torch 2.2 to 2.13)."""
    return cast("contextlib.AbstractContextManager[Any]", _cuda_kernels_class()())


@functools.cache
def _cuda_kernels_class() -> type[Any]:
    import torch
    import torch.nn.functional as F
    from torch.autograd.graph import _engine_run_backward
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map_only

    def to_fp32(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    def fused_on_cuda(kwargs: dict[str, Any]) -> bool:
        query, value = kwargs["query"], kwargs["value"]
        dtype = query.dtype
        if torch.is_autocast_enabled(TRACE_DEVICE) and dtype == torch.float32:
            dtype = torch.get_autocast_dtype(TRACE_DEVICE)  # SDPA is on autocast's 16-bit list
        has_mask = kwargs.get("attn_mask") is not None
        backend = cuda_sdpa_backend(dtype, query.shape[-1], value.shape[-1], has_mask)
        return backend != "math"

    def _plain_backward(args: Any, kwargs: dict[str, Any]) -> bool:
        """``loss.backward()`` as the engine calls it: no gradient, graph or inputs given."""
        defaults = {"gradient": None, "retain_graph": None, "create_graph": False, "inputs": None}
        return len(args) == 1 and all(kwargs.get(k, v) is v for k, v in defaults.items())

    class CudaKernels(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func is torch.Tensor.backward and _plain_backward(args, kwargs):
                (loss,) = args
                with self:
                    _engine_run_backward(
                        (loss,), (torch.ones_like(loss),), False, False, (),
                        allow_unreachable=True, accumulate_grad=True,
                    )  # fmt: skip
                return None
            if func is F.dropout:
                named = dict(zip(("input", "p", "training", "inplace"), args, strict=False))
                named = {"p": 0.5, "training": True, "inplace": False, **named, **kwargs}
                if named["training"] and not named["inplace"] and 0.0 < named["p"] < 1.0:
                    # aten's dropout on CUDA (is_fused_kernel_acceptable); in place it is not
                    return torch.native_dropout(named["input"], named["p"], True)[0]
            elif func is F.scaled_dot_product_attention:
                named = {**dict(zip(_SDPA_ARGS, args, strict=False)), **kwargs}
                if named.get("dropout_p", 0.0) > 0.0 and fused_on_cuda(named):
                    return func(**{**named, "dropout_p": 0.0})
            name = getattr(func, "__name__", None)
            if name in CUDA_FP32_OPS and torch.is_autocast_enabled(TRACE_DEVICE):
                args, kwargs = tree_map_only(torch.Tensor, to_fp32, (args, kwargs))
            return func(*args, **kwargs)

    return CudaKernels


@functools.cache
def _step_tracker_class() -> type[Any]:
    """:class:`_StepTracking`'s class, made on first use: importing this module costs no
    torch, and a torch built without ``torch.distributed`` gives a reason, not an error."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as exc:
        raise TraceUnavailable(f"this torch has no MemTracker ({exc})") from exc

    class StepTracker(_StepTracking, MemTracker):
        pass

    return StepTracker


class _StepTracking(_MemTrackerBase):
    """torch's MemTracker, filing two kinds of tensors apart from its defaults: those of the
    logits and loss (as its OTH type, unused otherwise) and the temporaries of the clip and
    the optimizer step (as TEMP; MemTracker files them OPT, and files the states OPT anyway
    in its step post-hook). Relies on MemTracker's ``_track`` and
    ``_update_and_maybe_create_winfos`` (torch 2.5 to 2.13)."""

    _PARTS = {
        "Parameter": parts.PARAMETERS,
        "Buffer": parts.PARAMETERS,
        "Gradient": parts.GRADIENTS,
        "Optstate": parts.OPTIMIZER_STATES,
        "Activation": parts.ACTIVATIONS,
        "Temp": parts.WORKSPACE,
        "Other": parts.LOGITS_AND_LOSS,
    }

    def __init__(self) -> None:
        from torch.distributed._tools.mem_tracker import _MemRefType

        super().__init__()  # MemTracker's, next in the StepTracker's MRO
        self._types = _MemRefType
        self._filing: Any = None  # a _MemRefType that overrides MemTracker's choice, or None

    def _track(self, reftype: Any, t: torch.Tensor) -> None:
        super()._track(self._filing or reftype, t)

    def _update_peak_stats(self, peak_state: Any) -> None:
        """The global peak only: MemTracker's own also keeps every module's peak, walking
        all modules after every op (three quarters of the trace's time on gpt-500m)."""
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot[_TOTAL]:
                self._peak_mem[device] = snapshot[_TOTAL]
                self._peak_mem_snap[device] = dict(snapshot)

    def mark(self, phase: str) -> None:
        """The engine step's phase clock (``PhaseClock.mark``): each micro-batch starts
        afresh (MemTracker refuses a second forward of the same module), and the clip and
        the optimizer step are filed as workspace."""
        if phase == "data":
            self.reset_mod_stats()
            self._filing = None
        elif phase in ("clip", "optimizer"):
            self._filing = self._types.TEMP

    def file_as_head(self, logits: torch.Tensor) -> None:
        """File ``logits`` and what is made from them, forward and backward, as the head's,
        until the backward reaches the logits' gradient."""
        head = self._types.OTH
        self._update_and_maybe_create_winfos(logits, head)
        self._filing = head
        if logits.requires_grad:

            def reached(grad: torch.Tensor) -> None:
                self._update_and_maybe_create_winfos(grad, head)
                self._filing = None

            logits.register_hook(reached)

    def peak_breakdown(self, device: str) -> tuple[int, dict[str, int]]:
        """The peak's total bytes on ``device`` and its bytes per part."""
        import torch

        snapshot = self.get_tracker_snapshot("peak").get(torch.device(device), {})
        breakdown: dict[str, int] = {}
        for reftype, nbytes in snapshot.items():
            part = self._PARTS.get(str(getattr(reftype, "value", reftype)))
            if part is not None and nbytes:
                breakdown[part] = breakdown.get(part, 0) + int(nbytes)
        return int(snapshot.get(_TOTAL, sum(breakdown.values()))), breakdown
