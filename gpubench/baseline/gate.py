"""The gate of one session: the baselines it compares each case with, and saves it to.

Each baseline file is read once, when the session first needs it (at
collection, so that a broken file stops the run before any case trains); every
case is compared with that snapshot, so saving this run's results into the
same file (``--gpubench-save-baseline``) never makes a case its own baseline.

A cold run (it built ops or filled caches a later run finds ready:
``Result.cold_start``) is never saved: its memory is not the case's. The run
after it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpubench.baseline.compare import CaseVerdict, compare, representative
from gpubench.baseline.rules import TEST_SOURCE, GateRules
from gpubench.baseline.store import (
    DEFAULT_BASELINE_DIR,
    DEFAULT_HISTORY,
    Baseline,
    BaselineError,
    baseline_path,
    read_baseline,
    save_runs,
    suite_name,
    unsaved_reason,
)
from gpubench.contracts.conditions import cold_sentence
from gpubench.contracts.result import Result

UNRECORDED = ("crashed", "timeout")  # the machine's failures, not the case's: never a baseline


def not_recorded_reason(result: Result) -> str | None:
    """Why ``result`` never becomes a baseline run, or None when it may."""
    if result.predicted:
        return "a prediction, not a measurement"
    if result.status in UNRECORDED:
        return f"the worker {'timed out' if result.status == 'timeout' else 'crashed'}"
    return cold_sentence(result.cold_start)


@dataclass
class GateOptions:
    baseline_dir: Path = Path(DEFAULT_BASELINE_DIR)
    compare: bool = True
    save: bool = False
    history: int = DEFAULT_HISTORY
    rules: GateRules = field(default_factory=GateRules)
    thresholds: Mapping[str, float] = field(default_factory=dict)  # the command line's


class Gate:
    def __init__(self, options: GateOptions) -> None:
        self.options = options
        self._baselines: dict[Path, Baseline] = {}

    @property
    def active(self) -> bool:
        return self.options.compare or self.options.save

    def path(self, profile: str, suite: str) -> Path:
        return baseline_path(self.options.baseline_dir, profile, suite)

    def baseline(self, profile: str, suite: str) -> Baseline:
        """The baseline file as it was when this session first read it; BaselineError for a
        file that cannot be read."""
        path = self.path(profile, suite)
        if path not in self._baselines:
            baseline = read_baseline(path)  # a run it cannot read: left out, with a warning
            if self.options.save and baseline.skipped:  # refused now, not after the cases ran
                raise BaselineError(unsaved_reason(baseline))
            self._baselines[path] = baseline
        return self._baselines[path]

    def rules_for(self, thresholds: Mapping[str, float] | None = None) -> GateRules:
        """The session's rules (defaults, ``[tool.gpubench.gate]``, the command line's) under
        a test's own ``thresholds``; what a case is judged by and its Result records."""
        return self.options.rules.with_thresholds(thresholds or {}, TEST_SOURCE)

    def judge(
        self,
        result: Result,
        thresholds: Mapping[str, float] | None = None,
        rerun: Callable[[int], Result] | None = None,
    ) -> tuple[CaseVerdict | None, list[Result]]:
        """``result`` compared with its case's history (None with comparison off), and the
        confirmation reruns made: when it looks regressed, or a figure dropped in a busy or
        cold run, ``rerun(k)`` runs the case again (k = 1 .. ``rules.confirm``) and the
        verdict is on all the runs."""
        if not self.options.compare:
            return None, []
        baseline = self.baseline(result.profile.name, suite_name(result.nodeid))
        history = baseline.history(result.case.id)
        rules = self.rules_for(thresholds)
        verdict = compare(result, history, rules)
        reruns: list[Result] = []
        if verdict.suspect and rerun is not None and rules.confirm > 0:
            reruns = [rerun(k) for k in range(1, rules.confirm + 1)]
            verdict = compare(result, history, rules, reruns)
        return verdict, reruns

    def record(self, result: Result, reruns: Sequence[Result] = ()) -> bool:
        """Add the case's run (with confirmation reruns: the median one of those that may be
        recorded) to its history when saving; False when nothing is kept (the run was not
        asked to save, or no run may be: :func:`not_recorded_reason`)."""
        recordable = [r for r in (result, *reruns) if not_recorded_reason(r) is None]
        if not self.options.save or not recordable:
            return False
        chosen = representative(recordable)
        path = self.path(chosen.profile.name, suite_name(chosen.nodeid))
        save_runs(path, [chosen], self.options.history)  # BaselineError over a broken file
        return True
