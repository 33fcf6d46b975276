"""A model for the report fixtures' `crashed` case: it builds, then its forward raises."""

from __future__ import annotations

import torch


class BrokenForward(torch.nn.Module):
    def __init__(self, vocab_size: int = 256) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = torch.nn.Embedding(vocab_size, 16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward raises on purpose: the report fixtures' crashed case")


def broken(vocab_size: int = 256) -> BrokenForward:
    return BrokenForward(vocab_size)
