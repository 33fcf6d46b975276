"""The tokens/s curve: the case as declared, at a ladder of batch sizes up to the largest
that fits (powers of two, and the largest itself)."""

from __future__ import annotations


def curve_batches(largest: int) -> list[int]:
    """1, 2, 4, ... up to ``largest``, and ``largest`` itself when it is no power of two."""
    if largest < 1:
        raise ValueError(f"largest={largest!r} must be >= 1")
    ladder = []
    batch = 1
    while batch <= largest:
        ladder.append(batch)
        batch *= 2
    if ladder[-1] != largest:
        ladder.append(largest)
    return ladder
