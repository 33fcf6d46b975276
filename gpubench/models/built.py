"""A model built for a case: the module on its device and what is known about it.

Every builder (the built-in GPT, a user factory, a Hugging Face config) returns a
:class:`BuiltModel`; the engines train its ``module`` and call
:meth:`BuiltModel.check_declared_size` before any step is timed, so a wrong
model can never report a speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PARAM_TOLERANCE = 0.10  # |counted - declared| / declared above this fails the case


class ModelBuildError(ValueError):
    """The model a Case names cannot be built as asked (bad override, flag, import)."""


class ParameterCountMismatch(ValueError):
    """The built model's parameter count is more than 10 % off the declared one."""


def check_parameter_count(n_params: int, declared: int | None, description: str) -> None:
    """Raise :class:`ParameterCountMismatch` when ``n_params`` is >10 % off ``declared``."""
    if declared is None:
        return
    if declared <= 0 or abs(n_params - declared) / declared > PARAM_TOLERANCE:
        off = (n_params - declared) / declared * 100 if declared > 0 else math.inf
        raise ParameterCountMismatch(
            f"model has {n_params:,} parameters but declares {declared:,} ({off:+.1f} %, "
            f"tolerance ±{PARAM_TOLERANCE:.0%}): {description or 'no description'}"
        )


def count_params(module: torch.nn.Module) -> int:
    """Unique parameters: ``Module.parameters()`` yields a tied tensor once."""
    return sum(p.numel() for p in module.parameters())


@dataclass
class BuiltModel:
    """A model on its device, with what the engine and the Result need to know about it."""

    module: torch.nn.Module  # already on the device; an engine may wrap it (DDP, DeepSpeed)
    vocab_size: int  # tokens the data may use: ids in [0, vocab_size)
    n_params: int  # unique parameters (tied weights counted once)
    declared_params: int | None  # checked against n_params (±10 %) before training
    n_layers: int | None = None
    n_heads: int | None = None
    d_model: int | None = None
    max_seq_len: int | None = None
    description: str = ""

    def check_declared_size(self) -> None:
        """Raise :class:`ParameterCountMismatch` when the build is >10 % off its declared size."""
        check_parameter_count(self.n_params, self.declared_params, self.description)

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
