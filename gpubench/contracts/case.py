"""The Case: a frozen, JSON-serialisable description of one training benchmark.

A Case says *what* to run (model, shapes, steps, data, engine, flags); the
hardware profile it runs against is chosen separately (``--gpu-profile``).
Its :attr:`Case.id` is stable and readable (``gpt2-small-bf16-ckpt``): it is
the pytest id and, together with the profile name, the baseline key.

Every value is validated when the Case is built, so a bad flag fails at
collection time with a message that names the bad value and the valid ones,
never deep inside a worker subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpubench.contracts.catalog.spec import check_model_spec
from gpubench.contracts.errors import CaseError
from gpubench.contracts.schema import record_fields

# bf16: autocast over fp32 weights; bf16-pure: weights, gradients and optimizer states in bf16
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-pure")
ATTENTION_KERNELS = ("sdpa", "math")
DATA_SOURCES = ("learnable", "random", "text")  # "text:PATH" reads PATH (a file or a folder)
TEXT_DATA = "text"
TOKENIZERS = ("byte", "bpe")  # text data only: bytes (vocabulary 256), or a BPE trained offline
LR_SCHEDULES = ("constant", "cosine", "linear")  # after lr_warmup_steps of linear warm-up
ENGINES = ("torch", "deepspeed", "fsdp")
ZERO_STAGES = (0, 1, 2, 3)
WARMUP_AUTO = "auto"
STEPS_AUTO = "auto"  # measure until the median tokens/s is known to precision_target
DEFAULT_PRECISION_TARGET = 0.01  # ±1 % (half-width / median) at 95 % confidence
# steps="auto" measures at least this many before it may stop: a first check at 20 stopped
# on lucky narrow intervals 5 % off a 10x longer run (docs/benchmarks/adaptive-stop-*.json)
MIN_AUTO_STEPS = 50
MAX_NAME_CHARS = 120  # a name is a test id, a baseline key and a summary row


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise CaseError(f"{name}={value!r} is not valid; valid values: {', '.join(valid)}")


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CaseError(f"{name}={value!r} must be an integer >= {minimum}")


def _positive_number(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not ok or math.isinf(value) or math.isnan(value):
        raise CaseError(f"{name}={value!r} must be a positive, finite number")


def _case_name(value: Any) -> None:
    """A name is printed raw (terminal, summary, reports): printable text, no control
    characters, not blank, at most :data:`MAX_NAME_CHARS` long."""
    if value is None:
        return
    ok = isinstance(value, str) and value.strip() and value.isprintable()
    if not ok or len(value) > MAX_NAME_CHARS:
        raise CaseError(
            f"name={value!r} must be printable text of 1 to {MAX_NAME_CHARS} characters "
            "(no control characters such as newlines or escapes), or None for the generated id"
        )


def _grad_clip(value: Any) -> None:
    """A positive, finite max norm, or None for no clipping (never inf: JSON cannot carry it)."""
    if value is None:
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isinf(value):
        raise CaseError(f"grad_clip={value!r} is not valid; use grad_clip=None for no clipping")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not ok or math.isnan(value):
        raise CaseError(
            f"grad_clip={value!r} must be a positive, finite number, or None for no clipping"
        )


def _sorted_model_config(config: Any) -> tuple[tuple[str, Any], ...]:
    """``model_config`` as (key, value) pairs sorted by key, however it was given (a mapping
    or pairs in any order): the id and equality must not depend on the order, which a JSON
    round trip (through a dict) does not keep."""
    if isinstance(config, Mapping):
        pairs = [tuple(kv) for kv in config.items()]
    else:
        try:
            pairs = [tuple(kv) for kv in config]
        except TypeError:
            raise CaseError(
                f"model_config={config!r} must be a mapping or (key, value) pairs"
            ) from None
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise CaseError(f"model_config entry {pair!r} must be a (str key, value) pair")
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise CaseError(f"model_config key(s) {', '.join(repeated)} given more than once")
    return tuple(sorted(pairs, key=lambda kv: kv[0]))


def _id_number(value: Any) -> str:
    """A number as an id token: the short ``:g`` form (``0.001``) where it reads back as the
    same float, else ``repr`` (``0.0003000012``), so two different values never share an id."""
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def _data(value: Any) -> None:
    """``learnable``, ``random``, ``text`` (the default corpus) or ``text:PATH``."""
    if isinstance(value, str) and value.startswith(TEXT_DATA + ":"):
        if not value[len(TEXT_DATA) + 1 :].strip():
            raise CaseError(f"data={value!r} names no path; use 'text' or 'text:PATH'")
        return
    if value not in DATA_SOURCES:
        raise CaseError(
            f"data={value!r} is not valid; valid values: {', '.join(DATA_SOURCES)}, "
            "or 'text:PATH' (a text file or a folder of them)"
        )


def _resume_check(value: Any) -> None:
    """False, True (save halfway through the measured steps) or the step to save after."""
    if isinstance(value, bool):
        return
    if not isinstance(value, int) or value < 1:
        raise CaseError(
            f"resume_check={value!r} must be True, False or the step (an integer >= 1) to "
            "save the checkpoint after"
        )


def _deepspeed_bf16_pure(flags: Flags) -> None:
    """DeepSpeed keeps bf16 weights and optimizer states only in its ZeRO optimizer, and not
    with optimizer offload (gpubench/worker/engines/deepspeed_config.py says how)."""
    if flags.precision != "bf16-pure":
        return
    if flags.zero_stage == 0:
        raise CaseError(
            "precision='bf16-pure' with engine='deepspeed' needs zero_stage 1, 2 or 3: "
            "DeepSpeed 0.19.8 keeps bf16 master weights and optimizer states "
            "(bf16_master_weights_and_grads) only in its ZeRO optimizer; at zero_stage=0 "
            "it keeps fp32 master weights, which is precision='bf16'"
        )
    if flags.offload_optimizer:
        raise CaseError(
            "precision='bf16-pure' with engine='deepspeed' cannot offload the optimizer: "
            "DeepSpeed 0.19.8's DeepSpeedCPUAdam keeps fp32 optimizer states unless built "
            "with fp32_optimizer_states=False, which its config cannot ask for; use "
            "offload_optimizer=False, or precision='bf16'"
        )


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise CaseError(f"{name}={value!r} must be True or False")


@dataclass(frozen=True)
class Flags:
    """Optimisation flags of the training step (the engine reads these)."""

    # fp32 | bf16 (autocast) | fp16 (autocast and a GradScaler) | bf16-pure (everything bf16)
    precision: str = "fp32"
    grad_ckpt: bool = False  # activation (gradient) checkpointing per transformer block
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    compile: bool = False  # torch.compile the model
    attention: str = "sdpa"  # sdpa (F.scaled_dot_product_attention) | math (explicit softmax)
    fused_adamw: bool = False  # torch.optim.AdamW(fused=True)
    tf32: bool = False  # allow TF32 matmul/cuDNN on Ampere+ (ignored on CPU)
    # DeepSpeed engine only (engine="deepspeed"):
    zero_stage: int = 0  # ZeRO stage: 1 optimizer states, 2 + gradients, 3 + parameters
    offload_optimizer: bool = False  # optimizer states (and step) on the CPU, ZeRO >= 1
    # parameters on the CPU: DeepSpeed ZeRO 3, or engine="fsdp" (CPUOffloadPolicy: parameters,
    # gradients and the optimizer step)
    offload_params: bool = False

    def __post_init__(self) -> None:
        _choice("precision", self.precision, PRECISIONS)
        _boolean("grad_ckpt", self.grad_ckpt)
        _positive_int("grad_accum", self.grad_accum)
        _boolean("compile", self.compile)
        _choice("attention", self.attention, ATTENTION_KERNELS)
        _boolean("fused_adamw", self.fused_adamw)
        _boolean("tf32", self.tf32)
        if self.zero_stage not in ZERO_STAGES or isinstance(self.zero_stage, bool):
            raise CaseError(
                f"zero_stage={self.zero_stage!r} is not valid; valid values: 0, 1, 2, 3"
            )
        _boolean("offload_optimizer", self.offload_optimizer)
        _boolean("offload_params", self.offload_params)
        if self.offload_optimizer and self.zero_stage < 1:
            raise CaseError("offload_optimizer=True needs zero_stage 1, 2 or 3")
        if self.offload_params and self.zero_stage not in (0, 3):
            raise CaseError(
                f"offload_params=True needs zero_stage=3 with engine='deepspeed' "
                f"(zero_stage={self.zero_stage}), or no zero_stage with engine='fsdp'"
            )
        if self.offload_optimizer and self.fused_adamw:
            raise CaseError(
                "fused_adamw=True cannot apply with offload_optimizer=True: the optimizer step "
                "then runs on the CPU in DeepSpeed's DeepSpeedCPUAdam; drop one of the two"
            )

    @property
    def uses_deepspeed(self) -> bool:
        """Whether any ZeRO or offload flag is set (DeepSpeed's; ``offload_params`` alone is
        also FSDP's, :meth:`Case._check_engine_flags`)."""
        return self.zero_stage > 0 or self.offload_optimizer or self.offload_params

    def id_tokens(self) -> list[str]:
        """Readable tokens for the case id: precision always, others when not default."""
        tokens = [self.precision]
        if self.grad_ckpt:
            tokens.append("ckpt")
        if self.grad_accum != 1:
            tokens.append(f"accum{self.grad_accum}")
        if self.compile:
            tokens.append("compile")
        if self.attention != "sdpa":
            tokens.append(self.attention)
        if self.fused_adamw:
            tokens.append("fused")
        if self.tf32:
            tokens.append("tf32")
        if self.zero_stage:
            tokens.append(f"zero{self.zero_stage}")
        if self.offload_optimizer:
            tokens.append("offopt")
        if self.offload_params:
            tokens.append("offparam")
        return tokens


FLAG_FIELDS = tuple(f.name for f in dataclasses.fields(Flags))


@dataclass(frozen=True)
class Case:
    """One training benchmark: model × shapes × steps × data × engine × flags."""

    # a built-in name (gpubench.contracts.catalog), "pkg.module:factory" or "hf:<model_type>"
    model: str
    batch_size: int = 8  # micro-batch per rank, in sequences
    seq_len: int = 256  # tokens per sequence
    # measured optimizer steps, after warm-up: exactly that many, or "auto" (until the median
    # tokens/s is known to precision_target, or max_steps / max_seconds is reached first)
    steps: int | str = 20
    warmup: int | str = WARMUP_AUTO  # "auto" (detect steady state) or a fixed number of steps
    max_warmup_steps: int = 50  # cap for automatic warm-up detection
    max_steps: int = 2000  # steps="auto": most measured steps
    max_seconds: float = 600.0  # steps="auto": most seconds of measured steps
    # steps="auto": the confidence interval's half-width / median aimed at (0.01: ±1 %);
    # None: the session's --gpubench-precision (default DEFAULT_PRECISION_TARGET)
    precision_target: float | None = None
    # learnable (seeded Markov stream) | random (uniform tokens) | text (the default corpus:
    # the Python standard library's sources) | text:PATH (local text files)
    data: str = "learnable"
    tokenizer: str = "byte"  # text data: "byte" (vocabulary 256) or "bpe" (trained offline)
    engine: str = "torch"
    nproc: int = 1  # processes (GPUs) per case and node; >1 launches through torchrun
    nnodes: int = 1  # machines the case spans (torchrun's --nnodes); >1 needs a rendezvous
    seed: int = 0
    lr: float = 3e-4
    grad_clip: float | None = 1.0  # max grad norm, None: no clipping; the unclipped norm
    # is recorded either way
    # the learning rate per optimizer step: lr_warmup_steps of linear warm-up from 0, then
    # constant, or cosine / linear decay to LR_MIN_RATIO x lr at lr_decay_steps (None: the
    # case's last step, max_steps for steps="auto")
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_decay_steps: int | None = None
    # save a checkpoint, resume it in a fresh worker and compare the losses that follow with
    # this run's (Result.resume): True saves halfway through the measured steps, a number
    # after that step; False: no check
    resume_check: bool | int = False
    eval_batches: int = 0  # held-out batches evaluated after the last step (Metrics.eval_loss)
    vocab_size: int | None = None  # override the model's vocabulary (data and embedding)
    expect_params: int | None = None  # declared parameter count, checked (±10 %) in the worker
    model_config: tuple[tuple[str, Any], ...] = ()  # overrides passed to the model's config
    timeout_s: float | None = None  # per-case wall-clock limit; None: the session default
    # time each step's phases (Metrics.phases: data, forward, backward, clip, optimizer, rest);
    # False: one number per step. Costs < 1 % (docs/diagnostics.md, "Time per phase")
    time_phases: bool = True
    name: str | None = None  # explicit id, replacing the generated one
    flags: Flags = field(default_factory=Flags)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise CaseError(f"model={self.model!r} must be a non-empty string")
        if isinstance(self.flags, Mapping):
            object.__setattr__(self, "flags", Flags(**self.flags))
        object.__setattr__(self, "model_config", _sorted_model_config(self.model_config))
        _positive_int("batch_size", self.batch_size)
        _positive_int("seq_len", self.seq_len, minimum=2)
        if self.steps != STEPS_AUTO:
            try:
                _positive_int("steps", self.steps, minimum=2)
            except CaseError:
                raise CaseError(
                    f"steps={self.steps!r} must be an integer >= 2 (exactly that many measured "
                    f"steps) or {STEPS_AUTO!r} (until the median is known to precision_target)"
                ) from None
        _positive_int("max_steps", self.max_steps, minimum=MIN_AUTO_STEPS)
        _positive_number("max_seconds", self.max_seconds)
        if self.precision_target is not None:
            _positive_number("precision_target", self.precision_target)
            if self.precision_target >= 1:
                raise CaseError(
                    f"precision_target={self.precision_target!r} is a fraction of the median "
                    "(0.01: ±1 %); it must be below 1"
                )
        if self.warmup != WARMUP_AUTO:
            _positive_int("warmup", self.warmup, minimum=0)
        _positive_int("max_warmup_steps", self.max_warmup_steps, minimum=0)
        _data(self.data)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        if self.tokenizer != "byte" and not self.text_data:
            raise CaseError(
                f"tokenizer={self.tokenizer!r} applies to text data only (data={self.data!r}); "
                "use data='text' or data='text:PATH'"
            )
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _positive_int("lr_warmup_steps", self.lr_warmup_steps, minimum=0)
        if self.lr_decay_steps is not None:
            _positive_int("lr_decay_steps", self.lr_decay_steps)
            if self.lr_decay_steps <= self.lr_warmup_steps:
                raise CaseError(
                    f"lr_decay_steps={self.lr_decay_steps} must be above "
                    f"lr_warmup_steps={self.lr_warmup_steps}"
                )
        _resume_check(self.resume_check)
        _positive_int("eval_batches", self.eval_batches, minimum=0)
        _choice("engine", self.engine, ENGINES)
        _positive_int("nproc", self.nproc)
        _positive_int("nnodes", self.nnodes)
        if self.vocab_size is not None:
            _positive_int("vocab_size", self.vocab_size, minimum=2)
        if self.expect_params is not None:
            _positive_int("expect_params", self.expect_params)
        _positive_number("lr", self.lr)
        _grad_clip(self.grad_clip)
        _positive_int("seed", self.seed, minimum=0)
        self._check_engine_flags()
        if self.timeout_s is not None:
            _positive_number("timeout_s", self.timeout_s)
        _boolean("time_phases", self.time_phases)
        _case_name(self.name)
        check_model_spec(self.model, dict(self.model_config))

    def _check_engine_flags(self) -> None:
        """ZeRO and offload flags against the engine: DeepSpeed takes them all (offload_params
        at stage 3 only); FSDP always shards like ZeRO-3 and offloads with offload_params
        alone; the torch engine takes none."""
        flags = self.flags
        named = [f"zero_stage={flags.zero_stage}"] if flags.zero_stage else []
        named += [n for n in ("offload_optimizer", "offload_params") if getattr(flags, n)]
        if self.engine == "deepspeed":
            _deepspeed_bf16_pure(flags)
            if flags.offload_params and flags.zero_stage != 3:
                raise CaseError(
                    f"offload_params=True needs zero_stage=3 with engine='deepspeed' "
                    f"(zero_stage={flags.zero_stage})"
                )
        elif self.engine == "fsdp":
            named = [n for n in named if n != "offload_params"]
            if named:
                raise CaseError(
                    f"{', '.join(named)}: engine='fsdp' always shards parameters, gradients "
                    "and optimizer states (as ZeRO-3 does) and takes no zero_stage or "
                    "offload_optimizer; offload_params=True moves all three to the CPU "
                    "(FSDP's CPUOffloadPolicy); for ZeRO stages use engine='deepspeed'"
                )
        elif named:
            also = "; offload_params=True also runs with engine='fsdp'"
            also = also if flags.offload_params else ""
            raise CaseError(
                f"{', '.join(named)}: zero_stage/offload flags need engine='deepspeed' "
                f"(engine={self.engine!r}); add engine='deepspeed'{also}"
            )

    # -- identity ---------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Readable, stable id: model, precision, then every non-default setting."""
        if self.name:
            return self.name
        tokens = [self.model.replace(":", ".").replace("/", ".")]
        tokens += self.flags.id_tokens()
        defaults = Case(model=self.model)
        for fname, short in (
            ("batch_size", "b"),
            ("seq_len", "s"),
            ("steps", "n"),
            ("nproc", "x"),
            ("nnodes", "nodes"),
            ("seed", "seed"),
        ):
            value = getattr(self, fname)
            if value != getattr(defaults, fname):
                tokens.append(f"{short}{value}")
        for fname, short in (
            ("lr", "lr"),
            ("grad_clip", "clip"),
            ("warmup", "warm"),
            ("max_warmup_steps", "maxwarm"),
            ("vocab_size", "vocab"),
            ("lr_warmup_steps", "lrwarm"),
            ("lr_decay_steps", "decay"),
        ):
            value = getattr(self, fname)
            if value != getattr(defaults, fname):
                tokens.append(f"{short}none" if value is None else f"{short}{_id_number(value)}")
        tokens += [f"{key}{value}" for key, value in self.model_config]
        if self.data != defaults.data:
            tokens.append(self.data.replace(":", ".").replace("/", "."))
        if self.tokenizer != defaults.tokenizer:
            tokens.append(self.tokenizer)
        if self.lr_schedule != defaults.lr_schedule:
            tokens.append(self.lr_schedule)
        if self.engine != defaults.engine:
            tokens.append(self.engine)
        return "-".join(tokens)

    @property
    def text_data(self) -> bool:
        """Whether the case trains on text (``data="text"`` or ``"text:PATH"``)."""
        return self.data == TEXT_DATA or self.data.startswith(TEXT_DATA + ":")

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step on one rank (micro-batches × batch × seq)."""
        return self.batch_size * self.seq_len * self.flags.grad_accum

    def replace(self, **changes: Any) -> Case:
        """A copy with fields (or flag fields, by name) changed."""
        flag_changes = {k: changes.pop(k) for k in list(changes) if k in FLAG_FIELDS}
        if flag_changes:
            changes["flags"] = dataclasses.replace(self.flags, **flag_changes)
        return dataclasses.replace(self, **changes)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_config"] = dict(self.model_config)
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "case") -> Case:
        """Rebuild a Case, by the reading policy of :mod:`gpubench.contracts.schema`: a field this
        gpubench does not know is a :class:`CaseError`, never dropped (a silently dropped
        flag would misdescribe what ran)."""
        fields = record_fields(cls, data, where, derived=("id",), error=CaseError)
        flags = record_fields(Flags, fields.get("flags", {}), f"{where}.flags", error=CaseError)
        return cls(**{**fields, "flags": Flags(**flags)})

    def to_json(self) -> str:
        """Strict JSON, as the worker protocol writes it (no NaN or inf)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)


def make_case(**settings: Any) -> Case:
    """Build a Case from flat keyword settings (flag names mixed with case fields).

    Unknown names raise :class:`CaseError` listing the valid ones.
    """
    case_fields = {f.name for f in dataclasses.fields(Case)} - {"flags"}
    unknown = sorted(set(settings) - case_fields - set(FLAG_FIELDS))
    if unknown:
        valid = ", ".join(sorted(case_fields | set(FLAG_FIELDS)))
        raise CaseError(f"unknown case setting(s) {', '.join(unknown)}; valid settings: {valid}")
    flag_values = {k: settings.pop(k) for k in list(settings) if k in FLAG_FIELDS}
    try:
        flags = Flags(**flag_values)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown check above
        raise CaseError(str(exc)) from exc
    return Case(flags=flags, **settings)
