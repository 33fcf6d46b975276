"""A model built for a case: the module on its device and what is known about it.

Every builder (the built-in GPT, a user factory, a Hugging Face config) returns a
:class:`BuiltModel`; the engines train its ``module`` and call
:meth:`BuiltModel.check_declared_size` before any step is timed, so a wrong
model can never report a speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.contracts.plausibility import parameter_mismatch

if TYPE_CHECKING:
    import torch


class ModelBuildError(ValueError):
    """The model a Case names cannot be built as asked (bad override, flag, import)."""


class ParameterCountMismatch(ValueError):
    """The built model's parameter count is more than 10 % off the declared one."""

    def __init__(self, message: str, n_params: int, declared: int) -> None:
        super().__init__(message)
        self.n_params, self.declared = n_params, declared


def check_parameter_count(n_params: int, declared: int | None, description: str) -> None:
    """Raise :class:`ParameterCountMismatch` when ``n_params`` is >10 % off ``declared``
    (the worker rewords it for the Result, naming where the count was declared)."""
    sentence = parameter_mismatch(n_params, declared, "the case's declared size")
    if sentence is not None and declared is not None:
        raise ParameterCountMismatch(
            f"{sentence} ({description or 'no description'})", n_params, declared
        )


def count_params(module: torch.nn.Module) -> int:
    """Unique parameters: ``Module.parameters()`` yields a tied tensor once."""
    return sum(p.numel() for p in module.parameters())


def count_matmul_params(module: torch.nn.Module) -> int:
    """N of :mod:`gpubench.contracts.flops`: unique parameters less the lookup tables
    (``nn.Embedding`` weights) that no other layer shares. A token table tied to the output
    head is that head's matmul and counts once; a positional table, or an untied input
    table, is a lookup and does not (nanoGPT's ``get_num_params(non_embedding=True)``,
    which keeps its tied token table and drops its positional one). Subtracting, rather than
    adding up ``nn.Linear`` weights, also counts matmul layers of other classes (Hugging
    Face GPT-2's ``Conv1D``)."""
    import torch

    shared = {
        id(p)
        for m in module.modules()
        if not isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    lookups = {
        id(m.weight): m.weight.numel()
        for m in module.modules()
        if isinstance(m, torch.nn.Embedding) and id(m.weight) not in shared
    }
    return count_params(module) - sum(lookups.values())


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
    # N of gpubench.contracts.flops, counted when built: an engine may later wrap or shard
    # the module
    matmul_params: int = field(init=False)

    def __post_init__(self) -> None:
        self.matmul_params = count_matmul_params(self.module)

    def check_declared_size(self) -> None:
        """Raise :class:`ParameterCountMismatch` when the build is >10 % off its declared size."""
        check_parameter_count(self.n_params, self.declared_params, self.description)

    def flops_per_token(self, seq_len: int) -> float | None:
        """Training FLOPs per token at ``seq_len`` (:mod:`gpubench.contracts.flops`); None when the
        model's depth or width could not be read."""
        from gpubench.contracts.flops import shape_flops_per_token

        return shape_flops_per_token(self.matmul_params, self.n_layers, self.d_model, seq_len)

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
