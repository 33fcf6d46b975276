"""How a figure is written, in one place: the terminal table, the Markdown and the HTML
page all call these, so a number reads the same in all three.

Units go in the column heading (``tok/s``, ``GiB``, ``%``, ``s``), never in the cell;
thousands are separated with a comma; a figure that was not measured is ``-``.
"""

from __future__ import annotations

import math

from gpubench.contracts.units import GiB as GIB

MISSING = "-"

# How a status reads in a readiness report (PASS* = ran, but above the profile's capacity).
STATUS_LABELS = {
    "ok": "PASS",
    "over_capacity": "PASS*",
    "oom": "OOM",
    "diverged": "diverged",
    "timeout": "timeout",
    "crashed": "crashed",
}


def _missing(value: float | None) -> bool:
    """Not a figure: not measured (None), or not finite."""
    return value is None or not math.isfinite(value)


def rate(value: float | None) -> str:
    """Tokens (or samples) per second: ``4,683``."""
    return MISSING if _missing(value) else f"{value:,.0f}"


def rate_range(low: float | None, high: float | None) -> str:
    """A p10-p90 range of rates: ``4,485-4,735``."""
    if _missing(low) or _missing(high):
        return MISSING
    return f"{rate(low)}-{rate(high)}"


def gib(value: float | None, digits: int = 2) -> str:
    """Bytes in GiB: ``0.54``."""
    return MISSING if value is None or _missing(value) else f"{value / GIB:,.{digits}f}"


def percent(fraction: float | None, digits: int = 1) -> str:
    """A fraction as per cent, without the sign: ``6.8``."""
    return MISSING if fraction is None or _missing(fraction) else f"{100 * fraction:,.{digits}f}"


def loss(value: float | None) -> str:
    return MISSING if _missing(value) else f"{value:.3f}"


def loss_change(start: float | None, end: float | None) -> str:
    """``8.321->7.928``."""
    if _missing(start) or _missing(end):
        return MISSING
    return f"{loss(start)}->{loss(end)}"


def seconds(value: float | None, digits: int = 1) -> str:
    return MISSING if _missing(value) else f"{value:,.{digits}f}"


def milliseconds(value_s: float | None) -> str:
    """Seconds shown in ms: ``218.7``."""
    return MISSING if value_s is None or _missing(value_s) else f"{1000 * value_s:,.1f}"


def hours(value: float | None) -> str:
    return MISSING if _missing(value) else f"{value:,.1f}"


def usd(value: float | None) -> str:
    return MISSING if _missing(value) else f"{value:,.2f}"


def count(value: float | None) -> str:
    """A whole count: ``12,345``."""
    return MISSING if _missing(value) else f"{value:,.0f}"


def millions(value: float | None) -> str:
    """A parameter count in millions: ``4.3M``."""
    return MISSING if _missing(value) or not value else f"{value / 1e6:,.1f}M"


def number(value: float | None, digits: int = 3) -> str:
    """Any other figure, to ``digits`` significant digits."""
    return MISSING if _missing(value) else f"{value:.{digits}g}"


def status(value: str) -> str:
    return STATUS_LABELS.get(value, value)
