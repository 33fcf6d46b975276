"""The built-in GPT's configuration, without torch.

Kept apart from ``gpt.py`` (which imports torch) so that a Case's
``model_config`` is checked in full at pytest collection: keys and values, an
``n_head`` that does not divide ``n_embd`` included, not first in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence: rows of the positional table
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, as GPT-2

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                f"(head size n_embd // n_head); valid n_head for n_embd={self.n_embd}: "
                f"{', '.join(str(h) for h in _divisors(self.n_embd)[:12])}, ..."
            )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"dropout={dropout!r} must be a number in [0, 1)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias={self.bias!r} must be True or False")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
