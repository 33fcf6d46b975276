"""The search: the largest batch that fits, from a starting guess, by asking an oracle.

Memory grows with the batch, so "fits" is True up to a threshold and False above it.
From the start (the estimate's answer) the search gallops away, one batch, then
two, four, ... until it has a fitting and a failing batch, then bisects between
them until they are adjacent. A good start costs two probes (the start and its
neighbour); a start ``d`` batches off costs at most about ``2 * log2(d) + 2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Fits = Callable[[int], bool]  # batch size -> whether it fits (each call may run a probe)


@dataclass(frozen=True)
class Bracket:
    """What the search ended with: adjacent batches, or an edge of the range."""

    largest_fitting: int | None  # None: not even a batch of 1 fits
    smallest_failing: int | None  # None: the limit fitted (the cap, not memory, ended it)


def largest_fitting(fits: Fits, start: int, limit: int) -> Bracket:
    """The largest batch in ``[1, limit]`` for which ``fits`` is True, searched from ``start``."""
    if not 1 <= start <= limit:
        raise ValueError(f"start={start!r} must be within [1, limit={limit!r}]")
    if fits(start):
        return _gallop_up(fits, start, limit)
    return _gallop_down(fits, start)


def _gallop_up(fits: Fits, fitting: int, limit: int) -> Bracket:
    step = 1
    while fitting < limit:
        candidate = min(fitting + step, limit)
        if not fits(candidate):
            return _bisect(fits, fitting, candidate)
        fitting, step = candidate, step * 2
    return Bracket(fitting, None)


def _gallop_down(fits: Fits, failing: int) -> Bracket:
    step = 1
    while failing > 1:
        candidate = max(failing - step, 1)
        if fits(candidate):
            return _bisect(fits, candidate, failing)
        failing, step = candidate, step * 2
    return Bracket(None, failing)


def _bisect(fits: Fits, fitting: int, failing: int) -> Bracket:
    while failing - fitting > 1:
        middle = (fitting + failing) // 2
        if fits(middle):
            fitting = middle
        else:
            failing = middle
    return Bracket(fitting, failing)
