"""Peak training memory of a case, by formulas: every part in bytes, with its source.

The step is modelled in the two moments where its memory peaks
(:func:`analyse` takes the larger):

- **backward start**: the forward has saved every activation, the loss's
  ``[B, T, V]`` buffers are live, gradients are not yet made (unless
  ``grad_accum > 1`` holds them across micro-batches);
- **optimizer step**: activations are freed, every gradient is held, and
  AdamW's temporaries are live.

Memory between the two falls as activations are freed layer by layer and
rises as gradients are made, so it peaks at one end or the other.

Sources (cited at each formula):

- [K22] Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", section 4.1: activations per layer
  ``sbh(34 + 5as/h)`` bytes with 16-bit activations and 1-byte dropout masks;
  section 4.2: ``2sbhL`` with full recomputation.
- [ZeRO] Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
  Trillion Parameter Models", section 3.1: mixed-precision Adam holds
  ``2 + 2 + 12`` bytes a parameter (16-bit weights and gradients; fp32
  master weights, momentum and variance), partitioned by stage.
- [DS] DeepSpeed 0.19.8 source: ``runtime/zero/stage_1_and_2.py``
  (``setup_buckets``: one reduce bucket of ``reduce_bucket_size`` elements
  in the gradient dtype, a second only with ``overlap_comm``, which
  ``runtime/zero/config.py`` turns on by default for stage 3 only;
  ``estimate_zero2_model_states_mem_needs``), ``runtime/zero/stage3.py``
  (``estimate_zero3_model_states_mem_needs``: ``4 x largest layer`` for the
  gathered working set).
- [FSDP] Zhao et al. 2023, "PyTorch FSDP: Experiences on Scaling Fully Sharded Data
  Parallel", VLDB 16(12), section 3.2 (full sharding: each rank keeps ``1/W`` of every
  parameter, gradient and optimizer state; one unit's parameters are all-gathered just
  before its computation and freed after, its gradients reduce-scattered after its
  backward) and section 4.2 (prefetching the next unit's all-gather, forward and
  backward); PyTorch 2.13 FSDP2 (``torch.distributed.fsdp.fully_shard``) docs and
  source: ``reshard_after_forward`` None keeps the root's parameters gathered from
  forward to backward, one all-gather prefetched ahead by default, ``MixedPrecisionPolicy``
  casts the gathered parameters to ``param_dtype`` and keeps the sharded fp32 ones (no
  separate master copy), ``_fsdp_param.py``'s ``unsharded_accumulated_grad`` (without
  gradient sync, gradients accumulate unsharded in ``reduce_dtype``), ``CPUOffloadPolicy``
  (sharded parameters, gradients and the optimizer step on the host).
- [torch] PyTorch 2.13 source: ``torch/optim/adam.py``, which ``AdamW`` subclasses
  (``_multi_tensor_adam``, the default for CUDA tensors when ``fused`` is None, takes
  ``_foreach_sqrt(exp_avg_sqs)`` and divides and adds in place: one fp32 temporary per
  parameter; ``_single_tensor_adam``, the default for CPU tensors, computes
  ``(exp_avg_sq.sqrt() / bias_correction2_sqrt)``: two temporaries of one tensor at a
  time; ``_fused_adam`` none), ``torch/amp/autocast_mode.py`` (autocast caches the
  low-precision copy of each leaf weight it casts, and matmuls save their cast inputs
  for backward; layer_norm and softmax are on autocast's fp32 list), ``aten``'s
  ``log_softmax``/``nll_loss`` (cross-entropy saves the fp32 log-probabilities; its
  backward makes a dense ``[B*T, V]`` gradient from ``nll_loss`` and another from
  ``log_softmax``), DDP's reducer (``gradient_as_bucket_view=False``, the default, keeps
  its buckets beside the gradients: "the saved memory size will be equal to the total
  gradients size", DistributedDataParallel docs), and
  ``torch/csrc/cuda/CublasHandlePool.cpp`` (cuBLAS workspace defaults).

Constants marked STATED are not derived from the code that runs and have not
been measured here (no GPU): docs/estimate.md lists how to measure each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.estimate import parts
from gpubench.estimate.shape import ModelShape

MiB = 1024**2

if TYPE_CHECKING:
    from gpubench.contracts.case import Case

FP32 = 4  # bytes per element
HALF = 2  # bf16 / fp16
MASK = 1  # a dropout mask is a bool tensor: 1 byte an element [K22 section 4.1]
TOKEN_ID = 8  # int64 token ids, saved by the embedding for its backward
LN_STATS = 2 * FP32  # LayerNorm saves mean and rstd, fp32, one each per row
ZERO_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default bucket (deepspeed_config.py caps it)

# STATED, to measure on a GPU (docs/estimate.md): the CUDA context, module images and
# cuBLAS handle outside the caching allocator (CUDA 12, lazy module loading).
CUDA_CONTEXT_BYTES = 512 * MiB
# torch's default CUBLAS_WORKSPACE_CONFIG on sm90+, ":4096:8" = 8 x 4096 KiB, the larger of
# its two defaults (":4096:2:16:8", 8.1 MiB, below sm90) [torch CublasHandlePool.cpp]
CUBLAS_WORKSPACE_BYTES = 32 * MiB
# STATED: the caching allocator's reserved-over-allocated margin, as a fraction of what the
# tensors hold.
CUDA_FRAGMENTATION = 0.10
# MEASURED (docs/estimate.md, "Measured on a CPU": RLIMIT_DATA bisection of the worker, 7
# cases): what a cpu worker maps beyond the tensors: glibc keeps freed blocks under its dynamic
# mmap threshold (up to 32 MiB) in its heaps, per-thread arenas, oneDNN scratch. The smallest
# margin of the form fraction x tensors + bytes that covered every measured peak.
CPU_MARGIN_FRACTION = 0.15
CPU_MARGIN_BYTES = 64 * MiB


@dataclass(frozen=True)
class Precision:
    """Bytes per element of each kind of tensor under the case's engine and precision."""

    param: int  # the weights the model computes with
    activation: int  # matmul inputs and outputs saved for backward
    residual: int  # the residual stream, the LayerNorms' inputs
    softmax: int  # the attention softmax's output (math attention)
    autocast: bool  # torch autocast: fp32 weights, matmuls cast to 16-bit


def precision_of(case: Case) -> Precision:
    """The torch engine keeps fp32 weights and autocasts matmuls (LayerNorm and softmax stay
    fp32 [torch autocast fp32 list]; the residual adds fp32 + bf16 -> fp32); DeepSpeed's
    bf16/fp16 casts the model itself, every tensor 16-bit (engines/deepspeed_config.py), and
    so does FSDP's mixed precision policy, which computes with the gathered 16-bit
    parameters [FSDP]. bf16-pure casts the model itself in every engine: every tensor bf16."""
    precision = case.flags.precision
    if precision == "fp32":
        return Precision(FP32, FP32, FP32, FP32, autocast=False)
    if case.engine in ("deepspeed", "fsdp") or precision == "bf16-pure":
        return Precision(HALF, HALF, HALF, HALF, autocast=False)
    return Precision(FP32, HALF, FP32, FP32, autocast=True)


# -- activations [K22] --------------------------------------------------------------------------
def attention_score_bytes(
    b: int, s: int, h: int, a: int, prec: Precision, *, attention: str, dropout: bool
) -> int:
    """What attention saves beyond q, k, v, for one layer.

    ``math`` [K22 "5as^2b": softmax output 2, dropout mask 1, dropout output 2]: the softmax
    output (fp32 under autocast), the dropout mask, and the matmul's own copy of its input
    when that is not the softmax output (autocast's 16-bit cast, or the dropout's output).
    ``sdpa``: flash / memory-efficient attention keeps no ``s x s`` scores, only its output
    and the fp32 log-sum-exp per row and head (torch's ``_scaled_dot_product_flash_attention``
    saves ``out`` and ``logsumexp`` for backward)."""
    if attention == "sdpa":
        return prec.activation * s * b * h + FP32 * a * s * b
    scores = a * s * s * b
    copy = prec.activation if (prec.autocast or dropout) else 0
    return scores * (prec.softmax + (MASK if dropout else 0) + copy)


def layer_activation_bytes(
    b: int, s: int, h: int, a: int, f: int, prec: Precision, *, attention: str, dropout: bool
) -> int:
    """Activations one transformer block saves for backward [K22 section 4.1, "34sbh"],
    adapted: element sizes per tensor kind, masks only with dropout, an MLP ``f`` wide.

    With 16-bit everything, dropout, ``math`` attention and ``f = 4h`` this is exactly
    ``sbh(34 + 5as/h)`` plus the LayerNorms' statistics, which [K22] leaves out."""
    sbh, sbf = s * b * h, s * b * f
    norms = 2 * (prec.residual * sbh + LN_STATS * s * b)  # ln_1, ln_2 inputs [K22: 4sbh]
    attn = prec.activation * (sbh + 3 * sbh + sbh)  # c_attn input, q k v, c_proj input
    scores = attention_score_bytes(b, s, h, a, prec, attention=attention, dropout=dropout)
    mlp = prec.activation * (sbh + sbf + sbf)  # c_fc input, GELU input, c_proj input
    masks = 2 * MASK * sbh if dropout else 0  # after attention's and the MLP's projections
    return norms + attn + scores + mlp + masks


def outside_layers_bytes(b: int, s: int, h: int, prec: Precision, *, dropout: bool) -> int:
    """What the embedding, the final LayerNorm and the head's input save."""
    ids = TOKEN_ID * s * b  # the embedding's backward needs the token ids
    embed_mask = MASK * s * b * h if dropout else 0
    final_norm = prec.residual * s * b * h + LN_STATS * s * b
    head_input = prec.activation * s * b * h
    return ids + embed_mask + final_norm + head_input


def activation_bytes(case: Case, shape: ModelShape, prec: Precision) -> int | None:
    """Activations at backward start, or None when the shape does not say enough.
    Checkpointing keeps each block's input and recomputes one block at a time
    [K22 section 4.2: ``2sbhL`` with 16-bit inputs]."""
    if not shape.describable:
        return None
    assert shape.n_layer and shape.d_model and shape.n_head and shape.ffn_dim
    b, s, h = case.batch_size, case.seq_len, shape.d_model
    layer = layer_activation_bytes(
        b,
        s,
        h,
        shape.n_head,
        shape.ffn_dim,
        prec,
        attention=case.flags.attention,
        dropout=shape.dropout,
    )
    outside = outside_layers_bytes(b, s, h, prec, dropout=shape.dropout)
    if case.flags.grad_ckpt:
        return shape.n_layer * prec.residual * s * b * h + layer + outside
    return shape.n_layer * layer + outside


def logits_and_loss_bytes(case: Case, shape: ModelShape, prec: Precision) -> int:
    """The loss's peak, in ``log_softmax``'s backward (recipe.lm_loss: cross-entropy on
    ``logits.float()``): the model's logits (16-bit under autocast or DeepSpeed 16-bit,
    still referenced by the step), the saved fp32 log-probabilities, ``nll_loss``'s dense
    fp32 gradient and ``log_softmax``'s fp32 gradient: ``(e + 12) x B x T x V`` bytes.
    (In fp32 ``.float()`` returns the logits themselves, so ``e = 4`` counts them once.)"""
    btv = case.batch_size * case.seq_len * shape.vocab_size
    return (prec.activation + 3 * FP32) * btv


# -- model states [ZeRO], [DS], [torch] ----------------------------------------------------------
def state_bytes(case: Case) -> int:
    """Bytes an element of the weights, gradients and AdamW states take in a torch or FSDP
    step: 2 for bf16-pure (the model cast to bf16 before its optimizer is made, so AdamW
    makes its states in bf16 too, [torch] ``torch.zeros_like(p)``), else 4 (fp32 weights,
    whatever autocast computes in)."""
    return HALF if case.flags.precision == "bf16-pure" else FP32


@dataclass(frozen=True)
class ModelStates:
    """Per-rank device and host bytes of the weights, gradients and optimizer."""

    parameters: int
    master_weights: int
    grads_model: int  # gradients in the model's dtype (.grad, or ZeRO-2/3's partition)
    grads_fp32: int  # DeepSpeed's fp32 gradient partition the optimizer steps on
    grads_fp32_persistent: bool  # allocated once (BF16_Optimizer), not only at the step
    optimizer_states: int
    engine_buffers: int
    optimizer_workspace: int  # AdamW's temporaries at the step
    host: dict[str, int] = field(default_factory=dict)  # per rank
    notes: tuple[str, ...] = ()
    # gradients held across micro-batches under grad_accum > 1 (None: grads_model +
    # grads_fp32); FSDP accumulates them unsharded
    grads_accumulated: int | None = None
    # engine buffers live at the optimizer step (None: engine_buffers); FSDP's gathered
    # units are freed by then
    buffers_at_step: int | None = None


def model_states(case: Case, shape: ModelShape, device_kind: str) -> ModelStates:
    """The engine's weights, gradients and AdamW states for ``case``."""
    if case.engine == "deepspeed":
        return deepspeed_states(case, shape, device_kind)
    if case.engine == "fsdp":
        return fsdp_states(case, shape, device_kind)
    return torch_states(case, shape, device_kind)


def torch_states(case: Case, shape: ModelShape, device_kind: str) -> ModelStates:
    """fp32 weights and gradients and fp32 AdamW ``exp_avg``/``exp_avg_sq`` whatever the
    precision (autocast casts copies, :func:`autocast_copy_bytes`), all bf16 for bf16-pure
    (:func:`state_bytes`: 2 + 2 + 2 x 2 bytes a parameter, no fp32 master copy); DDP's
    buckets, in the gradients' dtype, under torchrun [torch DDP]."""
    n, e = shape.n_params, state_bytes(case)
    notes: tuple[str, ...] = ()
    ddp = e * n if world_size(case) > 1 else 0
    if ddp:
        notes = ("DDP keeps gradient buckets the size of the gradients (engine_buffers)",)
    return ModelStates(
        parameters=e * n,
        master_weights=0,
        grads_model=e * n,
        grads_fp32=0,
        grads_fp32_persistent=False,
        optimizer_states=2 * e * n,
        engine_buffers=ddp,
        optimizer_workspace=adamw_workspace_bytes(case, shape, device_kind, stepped=n, element=e),
        notes=notes,
    )


def adamw_workspace_bytes(
    case: Case, shape: ModelShape, device_kind: str, stepped: int, element: int = FP32
) -> int:
    """torch AdamW's temporary ``denom`` (in the states' dtype, ``element`` bytes): none
    fused; one per parameter with foreach (CUDA's default); ``sqrt`` and the quotient of one
    tensor at a time with the single-tensor loop (CPU's default) [torch]."""
    if case.flags.fused_adamw:
        return 0
    if device_kind == "cuda":
        return element * stepped
    return 2 * element * min(stepped, shape.largest_tensor_params)


def world_size(case: Case) -> int:
    """The ranks a case's model states are sharded over: every GPU of every node."""
    return case.nproc * case.nnodes


def deepspeed_states(case: Case, shape: ModelShape, device_kind: str) -> ModelStates:
    """ZeRO stage ``z`` over ``W = nproc x nnodes`` ranks [ZeRO section 3.1, DS]:

    - weights in the model dtype (``p`` bytes), partitioned at stage 3;
    - with bf16/fp16, fp32 master weights (stage 0: whole; 1-3: ``1/W``); with fp32 and
      ZeRO, DeepSpeed still clones the fp32 partition (``single_partition_of_fp32_groups``);
    - gradients in the model dtype, whole at stages 0-1, ``1/W`` at 2-3, plus an fp32
      partition with 16-bit weights;
    - AdamW's two fp32 states, ``1/W`` from stage 1;
    - bf16-pure (stages 1-3): the master partition and AdamW's states in bf16, no separate
      fp32 gradient partition (bf16_master_weights_and_grads, bf16_optimizer_states);
    - one reduce bucket (stages 1-2) or the gathered largest layer, ``4 x`` its parameters
      (stage 3, DeepSpeed's own ``largest_layer_memory``);
    - offload moves master weights, states and the fp32 gradient partition (and at
      stage 3 with ``offload_params`` the weights) to pinned host memory: each rank's
      partition, so the node holds ``W`` of them.
    """
    flags, n, w = case.flags, shape.n_params, world_size(case)
    z = flags.zero_stage
    p = FP32 if flags.precision == "fp32" else HALF
    if z == 0:
        return _deepspeed_unpartitioned(case, shape, device_kind, p)
    part = -(-n // w)  # ceil(n / W): DeepSpeed pads the flat buffer to W equal partitions
    # bf16-pure: the master partition, its gradient and AdamW's states in bf16
    # (bf16_master_weights_and_grads, bf16_optimizer_states; engines/deepspeed_config.py)
    m = HALF if flags.precision == "bf16-pure" else FP32
    master = m * part
    grads_fp32 = FP32 * part if p == HALF and m == FP32 else 0  # .to(m) is the same tensor
    states = 2 * m * part
    grads_model = p * n if z == 1 else p * part
    params = p * part if z == 3 else p * n
    bucket = min(ZERO_BUCKET_ELEMENTS, n) * p
    buffers = 4 * shape.largest_layer_params if z == 3 else bucket  # [DS] largest_layer_memory
    # torch AdamW steps on one flat fp32 partition: a single tensor of ``part`` elements
    flat = dataclasses.replace(shape, largest_tensor_params=part)
    flat_workspace = adamw_workspace_bytes(case, flat, device_kind, stepped=part, element=m)
    host: dict[str, int] = {}
    notes: list[str] = []
    if flags.offload_optimizer:
        host[parts.HOST_MASTER_WEIGHTS] = master
        host[parts.HOST_OPTIMIZER_STATES] = states
        host[parts.HOST_GRADIENTS] = FP32 * part
        master = states = grads_fp32 = 0
        if z >= 2:
            grads_model = 0  # each bucket is copied into the host fp32 partition as reduced
        notes.append("optimizer offload: DeepSpeedCPUAdam steps in pinned host memory")
    if flags.offload_params:
        host[parts.HOST_PARAMETERS] = p * part
        params = 0
    if z == 3:
        notes.append(
            "ZeRO-3 working set taken as DeepSpeed's estimator does (4 x largest layer); "
            "prefetch and stage3_max_live_parameters can hold more: validate on a GPU"
        )
    return ModelStates(
        parameters=params,
        master_weights=master,
        grads_model=grads_model,
        grads_fp32=grads_fp32,
        grads_fp32_persistent=False,
        optimizer_states=states,
        engine_buffers=buffers,
        optimizer_workspace=0 if flags.offload_optimizer else flat_workspace,
        host=host,
        notes=tuple(notes),
    )


def _deepspeed_unpartitioned(
    case: Case, shape: ModelShape, device_kind: str, p: int
) -> ModelStates:
    """ZeRO stage 0: fp32 runs the bare torch AdamW (deepspeed_config.engine_clips); bf16/fp16
    wrap it in BF16_Optimizer / FP16_Optimizer, which keep whole fp32 master weights and an
    fp32 gradient copy [ZeRO section 3.1: 2 + 2 + 12 bytes a parameter, + 4 for fp32 grads]."""
    n = shape.n_params
    mixed = p == HALF
    # under torchrun DeepSpeed all-reduces the gradients flattened a bucket at a time
    # (engine.allreduce_gradients, allreduce_bucket_size 5e8 elements by default)
    allreduce = min(ZERO_BUCKET_ELEMENTS, n) * p if world_size(case) > 1 else 0
    return ModelStates(
        parameters=p * n,
        master_weights=FP32 * n if mixed else 0,
        grads_model=p * n,
        grads_fp32=FP32 * n if mixed else 0,
        grads_fp32_persistent=mixed,
        optimizer_states=2 * FP32 * n,
        engine_buffers=allreduce,
        optimizer_workspace=adamw_workspace_bytes(case, shape, device_kind, stepped=n),
    )


def fsdp_units(shape: ModelShape) -> tuple[int, int]:
    """(root, block) parameters of FSDP's units as the engine wraps them
    (worker/engines/fsdp_engine.py: one unit per transformer block, the root the rest):
    the root holds the token table (a second ``V x d`` when the head is not tied), the
    positional table and the final LayerNorm (weight and bias, as GPT-2's); a block the
    rest over ``n_layer``. A shape without layers is one unit, the root."""
    n = shape.n_params
    if not shape.n_layer or not shape.d_model:
        return n, 0
    d = shape.d_model
    tables = shape.vocab_size * d * (1 if shape.tied_head else 2) + (shape.positions or 0) * d
    root = min(n, tables + 2 * d)
    return root, (n - root) // shape.n_layer


def fsdp_states(case: Case, shape: ModelShape, device_kind: str) -> ModelStates:
    """FSDP2 full sharding over ``W = nproc x nnodes`` ranks [FSDP section 3.2], as ZeRO-3:

    - fp32 parameters, gradients (``reduce_dtype`` fp32) and AdamW's two states, ``1/W``
      each: ``16 n / W`` bytes (bf16-pure: all bf16, reduced in bf16, ``8 n / W``); no
      master copy, the sharded parameters are what AdamW steps on and what
      ``MixedPrecisionPolicy`` casts when it gathers [FSDP];
    - the gathered working set (engine buffers) in the compute dtype ``p``: the root's
      parameters (kept gathered from forward to backward), one block's and the next block's
      prefetched [FSDP section 4.2]; the root's unsharded gradients (the head's backward
      makes them first, the root reduce-scatters last); one block's unsharded gradients and
      its reduce-scatter input in fp32. All of it is freed before the optimizer step;
    - ``grad_accum > 1``: without gradient sync FSDP accumulates unsharded gradients in
      fp32, ``4 n`` bytes across micro-batches [FSDP2 ``unsharded_accumulated_grad``];
    - ``offload_params``: the sharded parameters, gradients and AdamW states live in host
      memory and the optimizer steps there (``CPUOffloadPolicy``); the device keeps the
      gathered working set.
    """
    flags, n, w = case.flags, shape.n_params, world_size(case)
    p = FP32 if flags.precision == "fp32" else HALF
    e = state_bytes(case)  # bf16-pure: sharded states bf16, reduced in bf16 (fsdp_engine.py)
    part = -(-n // w)  # ceil(n / W); FSDP2 pads each parameter's dim 0 to a multiple of W
    root, block = fsdp_units(shape)
    gathered = p * (root + 2 * block)
    unsharded_grads = p * root + (p + e) * block
    flat = dataclasses.replace(shape, largest_tensor_params=-(-shape.largest_tensor_params // w))
    notes = [
        f"FSDP units: root {root:,} parameters, block {block:,}; gathered in "
        f"{'fp32' if p == FP32 else flags.precision}, one block prefetched"
    ]
    params, grads, states = e * part, e * part, 2 * e * part
    workspace = adamw_workspace_bytes(case, flat, device_kind, stepped=part, element=e)
    host: dict[str, int] = {}
    if flags.offload_params:
        host = {
            parts.HOST_PARAMETERS: params,
            parts.HOST_GRADIENTS: grads,
            parts.HOST_OPTIMIZER_STATES: states,
        }
        params = grads = states = workspace = 0
        notes.append("FSDP CPUOffloadPolicy: sharded states and the AdamW step on the host")
    if flags.grad_accum > 1:
        notes.append(
            "FSDP without gradient sync accumulates unsharded "
            f"{'bf16' if e == HALF else 'fp32'} gradients"
        )
    return ModelStates(
        parameters=params,
        master_weights=0,
        grads_model=grads,
        grads_fp32=0,
        grads_fp32_persistent=False,
        optimizer_states=states,
        engine_buffers=gathered + unsharded_grads,
        optimizer_workspace=workspace,
        host=host,
        notes=tuple(notes),
        grads_accumulated=e * n,
        buffers_at_step=0,
    )


def autocast_copy_bytes(case: Case, shape: ModelShape, prec: Precision) -> int:
    """Under torch autocast each Linear's weight is cast to 16-bit once per forward, cached
    and saved by its matmul for backward: ``2 x`` the matmul parameters live at backward
    start [torch autocast]. With checkpointing a block saves none of its matmuls' inputs:
    its copies die with autocast's cache when the forward's ``autocast`` block exits
    (before the loss), and only the output head's copy, saved by the head outside the
    checkpoints, is live at the backward's start (the trace shows the same)."""
    if not prec.autocast:
        return 0
    if case.flags.grad_ckpt:
        return HALF * shape.vocab_size * (shape.d_model or 0)
    return HALF * shape.matmul_params


# -- device-wide constants -------------------------------------------------------------------------
def cuda_context_bytes(device_kind: str) -> int:
    return CUDA_CONTEXT_BYTES if device_kind == "cuda" else 0


def cublas_workspace_bytes(device_kind: str) -> int:
    return CUBLAS_WORKSPACE_BYTES if device_kind == "cuda" else 0


def fragmentation_bytes(tensor_bytes: int, device_kind: str) -> int:
    """The allocator's margin over ``tensor_bytes``: a STATED fraction on CUDA, a MEASURED
    fraction and constant on cpu (glibc malloc and the runtime, under RLIMIT_DATA)."""
    if device_kind == "cuda":
        return int(CUDA_FRAGMENTATION * tensor_bytes)
    return int(CPU_MARGIN_FRACTION * tensor_bytes) + CPU_MARGIN_BYTES


# -- the two moments -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Analysis:
    """The formulas' answer: device parts at the peak moment, host parts per node."""

    breakdown: dict[str, int]  # parts.DEVICE_PARTS -> bytes, at ``phase``
    host_breakdown: dict[str, int]  # parts.HOST_PARTS -> bytes, every rank on the node
    phase: str  # "backward start" or "optimizer step"
    activations_known: bool  # False: the shape did not allow the activation formulas
    notes: tuple[str, ...] = ()

    @property
    def peak_bytes(self) -> int:
        return sum(self.breakdown.values())

    @property
    def tensor_bytes(self) -> int:
        """What tensors hold at the peak: the peak less the allocator's margin."""
        return self.peak_bytes - self.breakdown.get(parts.FRAGMENTATION, 0)

    @property
    def host_bytes(self) -> int:
        return sum(self.host_breakdown.values())


def backward_start(
    case: Case, shape: ModelShape, states: ModelStates, prec: Precision, activations: int
) -> dict[str, int]:
    """Parts when the forward is done: saved activations, loss buffers, and the gradients
    that outlive a micro-batch (all of them under ``grad_accum > 1``)."""
    grads = states.grads_fp32 if states.grads_fp32_persistent else 0
    if case.flags.grad_accum > 1:
        held = states.grads_accumulated
        grads = states.grads_model + states.grads_fp32 if held is None else held
    return {
        parts.PARAMETERS: states.parameters + autocast_copy_bytes(case, shape, prec),
        parts.MASTER_WEIGHTS: states.master_weights,
        parts.GRADIENTS: grads,
        parts.OPTIMIZER_STATES: states.optimizer_states,
        parts.ACTIVATIONS: activations,
        parts.LOGITS_AND_LOSS: logits_and_loss_bytes(case, shape, prec),
        parts.ENGINE_BUFFERS: states.engine_buffers,
        parts.WORKSPACE: 0,
    }


def optimizer_step(states: ModelStates) -> dict[str, int]:
    """Parts at the optimizer step: every gradient, AdamW's temporaries, no activations."""
    return {
        parts.PARAMETERS: states.parameters,
        parts.MASTER_WEIGHTS: states.master_weights,
        parts.GRADIENTS: states.grads_model + states.grads_fp32,
        parts.OPTIMIZER_STATES: states.optimizer_states,
        parts.ACTIVATIONS: 0,
        parts.LOGITS_AND_LOSS: 0,
        parts.ENGINE_BUFFERS: (
            states.engine_buffers if states.buffers_at_step is None else states.buffers_at_step
        ),
        parts.WORKSPACE: states.optimizer_workspace,
    }


def _with_device_constants(moment: dict[str, int], device_kind: str) -> dict[str, int]:
    out = dict(moment)
    out[parts.WORKSPACE] += cublas_workspace_bytes(device_kind)
    out[parts.FRAGMENTATION] = fragmentation_bytes(sum(out.values()), device_kind)
    out[parts.CUDA_CONTEXT] = cuda_context_bytes(device_kind)
    return {name: out[name] for name in parts.DEVICE_PARTS}


def analyse(case: Case, shape: ModelShape, device_kind: str) -> Analysis:
    """The case's peak on a ``device_kind`` ("cuda" or "cpu") device, by formulas."""
    prec = precision_of(case)
    states = model_states(case, shape, device_kind)
    notes = list(shape.assumptions) + list(states.notes)
    host = {name: size * case.nproc for name, size in states.host.items()}  # the node's
    if device_kind == "cpu" and host:
        states = _host_is_device(states)
        notes.append("cpu profile: offloaded states live in the same RAM and count against its cap")
        host = {}
    activations = activation_bytes(case, shape, prec)
    if activations is None:
        notes.append(
            f"{case.model}: layers, width, heads or MLP width unknown "
            f"({shape.source}); activations not computed"
        )
    moments = {
        "backward start": _with_device_constants(
            backward_start(case, shape, states, prec, activations or 0), device_kind
        ),
        "optimizer step": _with_device_constants(optimizer_step(states), device_kind),
    }
    phase = max(moments, key=lambda name: sum(moments[name].values()))
    if case.flags.compile:
        notes.append("torch.compile: no memory change modelled (its fusions usually save some)")
    return Analysis(
        breakdown=moments[phase],
        host_breakdown={name: host[name] for name in parts.HOST_PARTS if name in host},
        phase=phase,
        activations_known=activations is not None,
        notes=tuple(notes),
    )


def _host_is_device(states: ModelStates) -> ModelStates:
    """On a cpu profile the "host" is the device: offloaded states count where they were."""
    host = states.host
    return ModelStates(
        parameters=states.parameters + host.get(parts.HOST_PARAMETERS, 0),
        master_weights=states.master_weights + host.get(parts.HOST_MASTER_WEIGHTS, 0),
        grads_model=states.grads_model,
        grads_fp32=states.grads_fp32 + host.get(parts.HOST_GRADIENTS, 0),
        grads_fp32_persistent=states.grads_fp32_persistent,
        optimizer_states=states.optimizer_states + host.get(parts.HOST_OPTIMIZER_STATES, 0),
        engine_buffers=states.engine_buffers,
        optimizer_workspace=states.optimizer_workspace,
        notes=states.notes,
        grads_accumulated=states.grads_accumulated,
        buffers_at_step=states.buffers_at_step,
    )
