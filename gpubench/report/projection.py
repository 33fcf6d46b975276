"""Projections: how long, and at what price, training a given amount would take on each
case's measured throughput, or, for a case estimated and not run
(``--gpubench-estimate-only``), on its predicted range (``Estimate.tokens_per_s_low`` and
``_high``: :mod:`gpubench.estimate.throughput`), marked predicted, its hours a range.

    hours = tokens / tokens_per_s / 3600 + checkpoints * checkpoint_save_s / 3600
    checkpoints = floor(optimizer steps / checkpoint_interval_steps)
    optimizer steps = tokens / the case's tokens per step (all ranks)
    cost = hours * $/hour per GPU (the option's, else the profile's usd_per_hour) * GPUs
    GPUs = the case's ranks (nproc x nnodes): a profile prices one card, and a case on two
    cards rents two (as Metrics.usd_per_million_tokens charges them)

A target is a number of tokens (``train_tokens``) or epochs over a data set of
``dataset_tokens`` tokens. Inputs come from options (``--gpubench-train-tokens``,
``--gpubench-epochs``, ``--gpubench-dataset-tokens``, ``--gpubench-price-per-hour``)
over ``[tool.gpubench.projection]`` in pyproject.toml, which also holds
``checkpoint_interval_steps``, ``checkpoint_save_s`` and ``max_hours`` (a
wall-clock limit: a projection above it is flagged). Without a target there is
no projection section.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubench.contracts.pyproject import gpubench_table
from gpubench.contracts.result import Result

if TYPE_CHECKING:
    import pandas as pd

PROJECTION_TABLE = "tool.gpubench.projection"
_SUFFIXES = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*(?P<number>\d[\d_]*(?:\.\d*)?(?:e\d+)?)\s*(?P<suffix>[kmbgt]?)\s*$", re.I)
COUNT_FORMS = "a number of tokens: 300000000, 3e8, 300M, 2.5B, 1T"


class ProjectionError(ValueError):
    """A projection input gpubench cannot use (the message names it and the valid forms)."""


def parse_count(value: Any, where: str) -> float:
    """A positive token count: a number, or text with a K/M/B/T suffix (decimal)."""
    if isinstance(value, bool):
        raise ProjectionError(f"{where}={value!r}: expected {COUNT_FORMS}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _COUNT.match(str(value))
        if match is None:
            raise ProjectionError(f"{where}={value!r}: expected {COUNT_FORMS}")
        number = float(match["number"]) * _SUFFIXES[match["suffix"].lower()]
    if not math.isfinite(number) or number <= 0:
        raise ProjectionError(f"{where}={value!r}: expected a positive count ({COUNT_FORMS})")
    return number


def parse_positive(value: Any, where: str, what: str = "a positive number") -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ProjectionError(f"{where}={value!r}: expected {what}")
    return number


def parse_epochs(value: Any, where: str) -> tuple[float, ...]:
    """``3`` or ``"3,5,10"`` or ``[3, 5, 10]``: one or more positive epoch counts."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    if not items:
        raise ProjectionError(f"{where}={value!r}: expected E[,E...], e.g. 3,5,10")
    return tuple(
        parse_positive(item, where, "epochs E[,E...], each a positive number, e.g. 3,5,10")
        for item in items
    )


@dataclass(frozen=True)
class ProjectionInputs:
    train_tokens: float | None = None
    epochs: tuple[float, ...] = ()
    dataset_tokens: float | None = None
    price_per_hour: float | None = None  # $/hour; None: the profile's usd_per_hour
    checkpoint_interval_steps: float | None = None
    checkpoint_save_s: float | None = None
    max_hours: float | None = None  # wall-clock limit a projection is checked against

    def __post_init__(self) -> None:
        if self.epochs and self.dataset_tokens is None:
            raise ProjectionError(
                f"epochs={','.join(f'{e:g}' for e in self.epochs)} need the data set's size: "
                "--gpubench-dataset-tokens or dataset_tokens in "
                f"[{PROJECTION_TABLE}]"
            )
        if (self.checkpoint_interval_steps is None) != (self.checkpoint_save_s is None):
            raise ProjectionError(
                f"[{PROJECTION_TABLE}]: checkpoint_interval_steps and checkpoint_save_s go "
                "together (a checkpoint's cost is how often times how long)"
            )

    @property
    def targets(self) -> list[tuple[str, float]]:
        """(label, tokens) of each target: the token count, then each epoch count."""
        found = []
        if self.train_tokens is not None:
            found.append((f"{_short(self.train_tokens)} tokens", self.train_tokens))
        if self.dataset_tokens is not None:
            for epochs in self.epochs:
                label = f"{epochs:g} epoch{'s' if epochs != 1 else ''}"
                found.append((label, epochs * self.dataset_tokens))
        return found

    @property
    def active(self) -> bool:
        return bool(self.targets)

    @classmethod
    def merged(cls, table: Mapping[str, Any], **overrides: Any) -> ProjectionInputs:
        """Inputs from a pyproject table with every given (not None, not empty) override
        on top; checked once, on the whole."""
        given = {k: v for k, v in overrides.items() if v is not None and v != ()}
        return cls(**{**table, **given})


@dataclass(frozen=True)
class ProjectionOption:
    """One projection input: how a value of it is read, and how an option presents it."""

    parse: Callable[[Any, str], Any]  # (value, where) -> value; ValueError names ``where``
    metavar: str
    help: str


def _positive(what: str) -> Callable[[Any, str], float]:
    return lambda value, where: parse_positive(value, where, what)


# key in [tool.gpubench.projection] (and, dashed, the option) -> how it is read and shown
PROJECTION_OPTIONS: dict[str, ProjectionOption] = {
    "train_tokens": ProjectionOption(
        parse_count, "N", "project hours and cost to train N tokens (300M, 2.5B, 3e9)"
    ),
    "epochs": ProjectionOption(
        parse_epochs, "E[,E...]", "project hours and cost of E epochs over the dataset tokens"
    ),
    "dataset_tokens": ProjectionOption(parse_count, "N", "tokens in one epoch of the data set"),
    "price_per_hour": ProjectionOption(
        _positive("dollars per hour, e.g. 2.5"),
        "USD",
        "price of one GPU's hour for projected costs, times the case's GPUs "
        "(default: the profile's usd_per_hour)",
    ),
    "checkpoint_interval_steps": ProjectionOption(
        _positive("optimizer steps"),
        "N",
        "a checkpoint every N optimizer steps (with the checkpoint save seconds)",
    ),
    "checkpoint_save_s": ProjectionOption(
        _positive("seconds one save takes"), "S", "seconds one checkpoint takes to save"
    ),
    "max_hours": ProjectionOption(
        _positive("a wall-clock limit in hours, e.g. 72"),
        "H",
        "flag projections above this wall-clock limit",
    ),
}
_KEYS = {key: option.parse for key, option in PROJECTION_OPTIONS.items()}


def projection_from_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The values of a ``[tool.gpubench.projection]`` table, checked."""
    if not isinstance(table, Mapping):
        raise ProjectionError(f"{where} must be a table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ProjectionError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_KEYS)}"
        )
    return {key: _KEYS[key](value, f"{where} {key}") for key, value in table.items()}


def pyproject_projection(rootdir: Path | None) -> dict[str, Any]:
    """``[tool.gpubench.projection]`` of ``<rootdir>/pyproject.toml``; {} without one."""
    found = gpubench_table(rootdir, "projection", ProjectionError)
    if found is None:
        return {}
    path, table = found
    return projection_from_table(table, f"{path} [{PROJECTION_TABLE}]")


def _short(tokens: float) -> str:
    for suffix, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= size:
            return f"{tokens / size:g}{suffix}"
    return f"{tokens:g}"


def projected_rates(result: Result) -> tuple[float, float | None, bool] | None:
    """(tokens/s, the predicted range's high end or None, predicted) a case is projected
    on: its measured median; for a prediction predicted to fit, its range's low end (the
    longest hours) and high end; None where it has neither."""
    if result.ran and result.tokens_per_s:
        return result.tokens_per_s, None, False
    estimate = result.estimate
    if result.predicted and result.status == "ok" and estimate is not None:
        low, high = estimate.tokens_per_s_low, estimate.tokens_per_s_high
        if low and high:
            return low, high, True
    return None


def projection_frame(results: Sequence[Result], inputs: ProjectionInputs) -> pd.DataFrame:
    """One row per case that measured (or, estimated only, predicted) a throughput and
    target: hours (checkpoints included), the checkpoints taken, the cost where a price is
    known, and whether the hours exceed ``max_hours``. A predicted row's ``hours`` and
    ``cost_usd`` are at the range's low tokens/s, ``hours_low`` and ``cost_usd_low`` at its
    high one; a measured row has None there."""
    import pandas as pd

    rows = []
    for result in results:
        rates = projected_rates(result)
        if rates is None:
            continue
        tps, tps_high, predicted = rates
        per_gpu = inputs.price_per_hour or result.profile.usd_per_hour
        price = per_gpu * result.case.nproc * result.case.nnodes if per_gpu is not None else None
        per_step = result.metrics.tokens_per_step or result.case.tokens_per_step
        for label, tokens in inputs.targets:
            checkpoints = 0
            if inputs.checkpoint_interval_steps and inputs.checkpoint_save_s:
                checkpoints = math.floor(tokens / per_step / inputs.checkpoint_interval_steps)
            saving = checkpoints * (inputs.checkpoint_save_s or 0) / 3600
            hours = tokens / tps / 3600 + saving
            hours_low = tokens / tps_high / 3600 + saving if tps_high else None
            rows.append(
                {
                    "case": result.case.id,
                    "profile": result.profile.name,
                    "status": result.status,
                    "predicted": predicted,
                    "target": label,
                    "tokens": tokens,
                    "tokens_per_s": tps,
                    "tokens_per_s_high": tps_high,
                    "checkpoints": checkpoints,
                    "hours": hours,
                    "hours_low": hours_low,
                    "usd_per_hour": price,
                    "cost_usd": hours * price if price is not None else None,
                    "cost_usd_low": (
                        hours_low * price if price is not None and hours_low is not None else None
                    ),
                    "over_limit": inputs.max_hours is not None and hours > inputs.max_hours,
                }
            )
    return pd.DataFrame(rows)
