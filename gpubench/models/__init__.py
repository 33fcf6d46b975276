"""Models a Case can name, checked without torch and built inside the worker.

A Case's ``model`` is one of three forms:

- a built-in size (``gpt-tiny`` ... ``gpt2-xl``, see :mod:`gpubench.models.sizes`),
  the GPT of :mod:`gpubench.models.gpt`;
- ``"package.module:factory"``: a callable returning a ``torch.nn.Module``;
- ``"hf:<model_type>"``: a Hugging Face ``transformers`` model built from its
  default config (no download).

:func:`check_model_spec` runs at pytest collection and must not import torch;
:func:`build_model` runs in the worker and imports torch (and the builders) lazily.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpubench.case import Case, CaseError
from gpubench.models.gpt_config import GPTConfig
from gpubench.models.sizes import (
    BUILTIN_MODELS,
    GPT_CONFIG_KEYS,
    ModelSize,
    builtin_model_names,
    gpt_param_count,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUILTIN_MODELS",
    "BuiltModel",
    "ModelBuildError",
    "ModelSize",
    "build_model",
    "builtin_model_names",
    "check_model_spec",
]

HF_PREFIX = "hf:"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
FACTORY_SPEC = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$")
HF_SPEC = re.compile(r"^hf:[A-Za-z0-9][A-Za-z0-9_\-]*$")


class ModelBuildError(ValueError):
    """The model a Case names cannot be built as asked (bad override, flag, import)."""


def check_model_spec(spec: str, model_config: Mapping[str, Any] | None = None) -> None:
    """Check the *form* of a model spec; raise :class:`CaseError` naming the valid forms.

    For a built-in size the ``model_config`` keys and values are checked too
    (the torch-free :class:`~gpubench.models.gpt_config.GPTConfig`). Only syntax
    is checked for factories and ``hf:`` models: importing them would cost
    torch (or transformers) at collection time.
    """
    if spec in BUILTIN_MODELS:
        unknown = sorted(set(model_config or ()) - set(GPT_CONFIG_KEYS))
        if unknown:
            raise CaseError(
                f"model_config key(s) {', '.join(unknown)} not known to built-in {spec!r}; "
                f"valid keys: {', '.join(GPT_CONFIG_KEYS)}"
            )
        try:
            GPTConfig(**{**BUILTIN_MODELS[spec].config_fields(), **(model_config or {})})
        except ValueError as exc:
            raise CaseError(f"model_config for built-in {spec!r}: {exc}") from None
        return
    if isinstance(spec, str) and (HF_SPEC.match(spec) or FACTORY_SPEC.match(spec)):
        return
    names = builtin_model_names()
    close = difflib.get_close_matches(str(spec), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise CaseError(
        f"model={spec!r} is not a model gpubench can build{hint}; use a built-in size "
        f"({', '.join(names)}), a factory 'package.module:function' returning a "
        f"torch.nn.Module, or 'hf:<model_type>' (e.g. 'hf:gpt2', needs pip install gpubench[hf])"
    )


@dataclass
class BuiltModel:
    """A model on its device, with what the engine and the Result need to know about it."""

    module: torch.nn.Module  # already on the device
    vocab_size: int  # tokens the data may use: ids in [0, vocab_size)
    n_params: int  # unique parameters (tied weights counted once)
    declared_params: int | None  # checked against n_params (±10 %) by the worker
    n_layers: int | None = None
    n_heads: int | None = None
    d_model: int | None = None
    max_seq_len: int | None = None
    description: str = ""

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] for token ids [B, T], whatever the module returns."""
        import torch

        out = self.module(idx)
        if isinstance(out, torch.Tensor):
            return out
        if hasattr(out, "logits"):  # Hugging Face ModelOutput
            return out.logits
        if isinstance(out, (tuple, list)):  # (logits, ...) as nanoGPT-style modules return
            return out[0]
        raise TypeError(
            f"{type(self.module).__name__} returned {type(out).__name__}; expected a Tensor of "
            "logits, a tuple whose first element is the logits, or an object with .logits"
        )


def count_params(module: torch.nn.Module) -> int:
    """Unique parameters: ``Module.parameters()`` yields a tied tensor once."""
    return sum(p.numel() for p in module.parameters())


def build_model(case: Case, device: torch.device | str) -> BuiltModel:
    """Build the model ``case.model`` names on ``device``, honouring the case's flags.

    Initialisation draws from torch's global RNG; seed it first for a
    reproducible model. Raises :class:`ModelBuildError` for a model that cannot
    be built as asked.
    """
    check_model_spec(case.model)
    if case.model in BUILTIN_MODELS:
        return _build_builtin(case, device)
    from gpubench.models import external

    if case.model.startswith(HF_PREFIX):
        return external.build_hf_model(case, device)
    return external.build_factory_model(case, device)


def _build_builtin(case: Case, device: torch.device | str) -> BuiltModel:
    import torch

    from gpubench.models.gpt import GPT

    size = BUILTIN_MODELS[case.model]
    overrides = dict(case.model_config)  # keys already checked with the Case
    fields: dict[str, Any] = {**size.config_fields(), **overrides}
    if case.vocab_size is not None:
        fields["vocab_size"] = case.vocab_size  # the data's vocabulary wins
    fields["block_size"] = max(fields["block_size"], case.seq_len)
    try:
        config = GPTConfig(**fields)
    except ValueError as exc:
        raise ModelBuildError(f"built-in {case.model}: {exc}") from exc

    with torch.device(device):  # initialise on the device: no host copy of a large model
        module = GPT(config, attention=case.flags.attention, grad_ckpt=case.flags.grad_ckpt)
    module = module.to(device)

    description = (
        f"built-in {case.model}: {config.n_layer} layers, {config.n_head} heads, "
        f"{config.n_embd} wide, vocab {config.vocab_size}"
    )
    if overrides:
        description += ", model_config " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    return BuiltModel(
        module=module,
        vocab_size=config.vocab_size,
        n_params=count_params(module),
        declared_params=_declared_builtin(case, size, config),
        n_layers=config.n_layer,
        n_heads=config.n_head,
        d_model=config.n_embd,
        max_seq_len=config.block_size,
        description=description,
    )


def _declared_builtin(case: Case, size: ModelSize, config: GPTConfig) -> int:
    """The size's declared count, moved by what the case's overrides add or remove.

    A longer ``seq_len`` (bigger positional table), ``vocab_size`` or a
    ``model_config`` override changes the model on purpose; the declared count
    follows by the exact formula's difference, so the ±10 % check still guards
    the build instead of failing every overridden case. ``expect_params`` wins.
    """
    if case.expect_params is not None:
        return case.expect_params
    built = gpt_param_count(
        config.n_layer, config.n_embd, config.vocab_size, config.block_size, config.bias
    )
    return size.declared_params + built - size.param_count
