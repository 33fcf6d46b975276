"""The gate's rules: a threshold per metric (relative change), and how much evidence it wants.

Thresholds come, the first found winning, from the test (``@gpubench.matrix(...,
gate={...})`` or ``@pytest.mark.gpubench_gate(...)``), the command line
(``--gpubench-threshold tokens_per_s=0.05``), ``[tool.gpubench.gate]`` in
pyproject.toml, and :data:`DEFAULT_THRESHOLDS` (docs/baselines.md says how they
were chosen). A threshold is a relative change in (0, 1): 0.05 is 5 %. The rules
remember where each threshold came from (``sources``), and a run records the
thresholds its case was run with (``Result.gate_thresholds``), so the offline
``gpubench compare`` judges it by them (:mod:`gpubench.baseline.offline`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpubench.baseline.gated import METRIC_NAMES
from gpubench.contracts.pyproject import gpubench_table

# host RSS moves more than device memory between runs of one case: glibc's per-thread arenas
# and large freed blocks make a CPU case's high-water mark differ by up to 9 % (a fresh clone's
# suites, two runs in a row, docs/baselines.md); a GPU's caching allocator repeats itself
DEFAULT_THRESHOLDS = {
    "tokens_per_s": 0.10,
    "peak_memory": 0.03,
    "host_rss": 0.05,
    "loss": 0.05,
}
DEFAULT_ALPHA = 0.05  # one-sided, per metric and run, before the confirmation reruns
MIN_HISTORY = 3  # comparable runs needed to judge by the run-to-run spread
WITHIN_RUN_WIDENING = 2.0  # fewer runs (spread unknown): the threshold this many times wider
DEFAULT_CONFIRM = 2  # reruns of a case that looks regressed, judged with it on the median
GATE_TABLE = "tool.gpubench.gate"
# where a threshold came from, as verdicts say it
DEFAULT_SOURCE = "default"
PYPROJECT_SOURCE = "pyproject"
COMMAND_LINE_SOURCE = "command line"
TEST_SOURCE = "test"  # the test's gate= or @pytest.mark.gpubench_gate
RECORDED_SOURCE = "the run's gate"  # Result.gate_thresholds, read back offline


class GateError(ValueError):
    """A gate setting gpubench cannot use (the message names it and the valid values)."""


def check_thresholds(values: Mapping[str, Any], where: str) -> dict[str, float]:
    """``values`` as thresholds; GateError naming a metric or value that is not one."""
    if not isinstance(values, Mapping):
        raise GateError(f"{where}: expected metric=threshold pairs, got {values!r}")
    checked = {}
    for name, value in values.items():
        if name not in METRIC_NAMES:
            raise GateError(
                f"{where}: {name!r} is not a gated metric; valid: {', '.join(METRIC_NAMES)}"
            )
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None or not math.isfinite(number) or not 0 < number < 1:
            raise GateError(
                f"{where}: {name}={value!r} must be a number in (0, 1), a relative change "
                "(0.05 = 5 %)"
            )
        checked[name] = float(number)
    return checked


def parse_thresholds(text: str, where: str = "--gpubench-threshold") -> dict[str, float]:
    """``"tokens_per_s=0.05,peak_memory=0.03"`` as thresholds."""
    pairs: dict[str, Any] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise GateError(f"{where}={text!r}: expected METRIC=VALUE[,METRIC=VALUE...]")
        try:
            pairs[name.strip()] = float(value)
        except ValueError:
            pairs[name.strip()] = value.strip()
    return check_thresholds(pairs, where)


@dataclass(frozen=True)
class GateRules:
    """What counts as a regression (see :func:`gpubench.baseline.compare.compare`)."""

    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    alpha: float = DEFAULT_ALPHA
    min_history: int = MIN_HISTORY
    within_run_widening: float = WITHIN_RUN_WIDENING
    any_env: bool = False  # a baseline from another environment decides too
    confirm: int = DEFAULT_CONFIRM  # reruns of a case that looks regressed
    sources: Mapping[str, str] = field(default_factory=dict)  # metric -> where its came from

    def threshold(self, metric: str) -> float:
        return self.thresholds.get(metric, DEFAULT_THRESHOLDS[metric])

    def source(self, metric: str) -> str:
        """Where ``metric``'s threshold came from (``test``, ``command line``, ...)."""
        return self.sources.get(metric, DEFAULT_SOURCE)

    def resolved(self) -> dict[str, float]:
        """Every gated metric's threshold, defaults included: what a run records."""
        return {name: self.threshold(name) for name in METRIC_NAMES}

    def with_thresholds(self, overrides: Mapping[str, float], source: str = "") -> GateRules:
        """These rules with some thresholds replaced (already checked), from ``source``."""
        sources = {**self.sources, **dict.fromkeys(overrides, source or DEFAULT_SOURCE)}
        return dataclasses.replace(
            self, thresholds={**self.thresholds, **overrides}, sources=sources
        )


def pyproject_thresholds(rootdir: Path | None) -> dict[str, float]:
    """``[tool.gpubench.gate]`` of ``<rootdir>/pyproject.toml``; {} without one."""
    found = gpubench_table(rootdir, "gate", GateError)
    if found is None:
        return {}
    path, table = found
    return check_thresholds(table, f"{path} [{GATE_TABLE}]")


def gate_rules(
    rootdir: Path | None,
    thresholds: Mapping[str, float] | None = None,
    base: GateRules | None = None,
) -> GateRules:
    """The rules a run is judged by: ``base`` (the defaults) with ``[tool.gpubench.gate]``
    of ``<rootdir>/pyproject.toml`` over its thresholds, and the command line's
    ``thresholds`` over those. A test's own thresholds come on top, case by case
    (:meth:`~gpubench.baseline.gate.Gate.judge`)."""
    rules = (base or GateRules()).with_thresholds(pyproject_thresholds(rootdir), PYPROJECT_SOURCE)
    return rules.with_thresholds(thresholds or {}, COMMAND_LINE_SOURCE)
