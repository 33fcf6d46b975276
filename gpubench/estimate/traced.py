"""The traced memory model: the case's training step run on fake tensors under torch's
memory tracker, to check the formulas of :mod:`gpubench.estimate.analytical`.

What is run is the torch engine's step (:mod:`gpubench.worker.engines.torch_engine`): the case's
model (built-in GPT, ``hf:<model_type>`` or a factory, with its attention and grad_ckpt
flags) with fp32 parameters; per micro-batch a fresh [B, T] batch of int64 token ids, the
forward under autocast for bf16/fp16, ``recipe.lm_loss``, the backward of loss/grad_accum;
then ``clip_grad_norm_``, the recipe's AdamW (fused when flagged) and
``zero_grad(set_to_none=True)``. The model is built on ``meta`` (shapes only, no
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
lacks (the process aborts, it does not raise), so "cuda" is traced on CPU too, with two
CUDA defaults that move memory taken over (:func:`trace_training_steps`): foreach AdamW,
and autocast's float32 op list (softmax, log-softmax, norms, ...), which CPU autocast runs
in half precision. What stays CPU's: SDPA picks torch's CPU flash kernel, which, like
CUDA's flash and memory-efficient kernels, saves an O(T) log-sum-exp rather than the
[T, T] scores; and the CUDA caching allocator's rounding of each block up to 512 bytes is
not modelled (well under 1 MiB for these models). Not in the trace: the CUDA context and
the allocator's fragmentation (the analytical model's constants), the GradScaler's
scalars under fp16 (its inf check reads a value a fake tensor does not have), DDP's
buckets, DeepSpeed's partitioning and buffers, torch.compile's fusion, and the learnable
data stream's token pool.
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
            "traced on a fake CPU device with CUDA's foreach AdamW and autocast fp32 ops; "
            "CPU's SDPA kernel, no 512-byte CUDA block rounding"
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
    from gpubench.worker.models import build_model

    built = build_model(case, "meta")
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
    """Trace one optimizer step of the torch engine's recipe on ``built`` (already on
    ``device``, fake or real) and return its peak with the breakdown. ``seconds`` is the
    time of the step alone.

    ``primed`` (the default) makes AdamW's states first, untraced, so the step traced is the
    steady one (see the module docstring); ``primed=False`` traces the first step from cold,
    whose breakdown files the new states as workspace until its optimizer step ends.

    ``as_cuda`` takes two CUDA defaults that change memory where CPU's differ: AdamW's
    multi-tensor (foreach) implementation, whose temporaries span all parameters at once (on
    CPU torch loops per tensor; fused wins when flagged), and autocast's float32 op list
    (:data:`CUDA_FP32_OPS`: softmax, norms, ... run in fp32, while CPU autocast runs them in
    the input's dtype: a bf16 math-attention softmax saves fp32 probabilities on CUDA)."""
    built.module.train()
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = _adamw(case, params, foreach=as_cuda)
    if primed:
        _make_optimizer_states(optimizer, params)
    started = time.perf_counter()
    tracker = _step_tracker_class()()
    tracker.track_external(built.module, optimizer)
    with tracker:
        _optimizer_step(case, built, params, optimizer, tracker, device, as_cuda)
    peak, breakdown = tracker.peak_breakdown(device)
    return TracedStep(peak_bytes=peak, breakdown=breakdown, seconds=time.perf_counter() - started)


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


def _optimizer_step(
    case: Case,
    built: BuiltModel,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    tracker: _StepTracking,
    device: str,
    as_cuda: bool,
) -> None:
    """TorchTrainStep.__call__ without DDP or the GradScaler (see the module docstring)."""
    import torch

    from gpubench.worker.engines.recipe import max_grad_norm

    loss_sum = torch.zeros((), device=device)
    for _ in range(case.flags.grad_accum):
        tracker.reset_mod_stats()  # MemTracker refuses a second forward of the same module
        _micro_batch(case, built, loss_sum, tracker, device, as_cuda)
    with tracker.filed_as_workspace():
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm(case))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _micro_batch(
    case: Case,
    built: BuiltModel,
    loss_sum: torch.Tensor,
    tracker: _StepTracking,
    device: str,
    as_cuda: bool,
) -> None:
    """TorchTrainStep._micro_batch: the batch as TokenStream.next_batch makes it; the logits
    and loss stay referenced until the backward ends, as in the engine. The CUDA fp32 policy
    stays on through the backward, where a checkpointed block recomputes its forward."""
    import torch

    from gpubench.worker.engines.recipe import AUTOCAST_DTYPES, lm_loss

    tokens = torch.randint(built.vocab_size, (case.batch_size, case.seq_len + 1), device=device)
    x = tokens[:, :-1].contiguous()  # [B, T]
    y = tokens[:, 1:].contiguous()  # [B, T]
    del tokens
    dtype = AUTOCAST_DTYPES.get(case.flags.precision)
    autocast: contextlib.AbstractContextManager[Any] = (
        torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype))
        if dtype
        else contextlib.nullcontext()
    )
    with _cuda_fp32_policy() if as_cuda else contextlib.nullcontext():
        with autocast:
            logits = built.logits(x)  # [B, T, V]
        with tracker.filed_as_head(logits):
            loss = lm_loss(logits, y)
            loss_sum += loss.detach()
            scaled = loss / case.flags.grad_accum
            _backward(scaled)  # the head filing ends when the logits' gradient is made


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` with the torch function modes left on. ``Tensor.backward`` hands
    itself to the innermost mode, which runs it with that mode off: a checkpointed block
    would then recompute its forward without the CUDA fp32 policy (and checkpoint fails on
    the dtype change). So call the engine as ``torch.autograd.backward`` does after its
    dispatch check (``torch.autograd.graph._engine_run_backward``, torch 2.2 to 2.13)."""
    import torch
    from torch.autograd.graph import _engine_run_backward

    _engine_run_backward(
        (loss,), (torch.ones_like(loss),), False, False, (),
        allow_unreachable=True, accumulate_grad=True,
    )  # fmt: skip


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


def _cuda_fp32_policy() -> contextlib.AbstractContextManager[Any]:
    """A torch function mode that, while autocast is on, runs :data:`CUDA_FP32_OPS` on
    float32 copies of their half-precision inputs, as CUDA autocast does."""
    return cast("contextlib.AbstractContextManager[Any]", _cuda_fp32_policy_class()())


@functools.cache
def _cuda_fp32_policy_class() -> type[Any]:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map_only

    def to_fp32(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    class CudaFp32Policy(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", None)
            if name in CUDA_FP32_OPS and torch.is_autocast_enabled(TRACE_DEVICE):
                args, kwargs = tree_map_only(torch.Tensor, to_fp32, (args, kwargs))
            return func(*args, **kwargs)

    return CudaFp32Policy


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

    @contextlib.contextmanager
    def filed_as_workspace(self) -> Iterator[None]:
        self._filing = self._types.TEMP
        try:
            yield
        finally:
            self._filing = None

    @contextlib.contextmanager
    def filed_as_head(self, logits: torch.Tensor) -> Iterator[None]:
        """File ``logits`` and what is made from them, forward and backward, as the head's,
        until the backward reaches the logits' gradient."""
        head = self._types.OTH
        self._update_and_maybe_create_winfos(logits, head)
        handle = None
        if logits.requires_grad:

            def reached(grad: torch.Tensor) -> None:
                self._update_and_maybe_create_winfos(grad, head)
                self._filing = None

            handle = logits.register_hook(reached)
        self._filing = head
        try:
            yield
        finally:
            self._filing = None
            if handle is not None:
                handle.remove()

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
