"""The gate of one session: the baselines it compares each case with, and saves it to.

Each baseline file is read once, when the session first needs it (at
collection, so that a broken file stops the run before any case trains); every
case is compared with that snapshot, so saving this run's results into the
same file (``--gpubench-save-baseline``) never makes a case its own baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpubench.baseline.compare import CaseVerdict, compare, representative
from gpubench.baseline.rules import GateRules
from gpubench.baseline.store import (
    DEFAULT_BASELINE_DIR,
    DEFAULT_HISTORY,
    Baseline,
    baseline_path,
    read_baseline,
    save_runs,
    suite_name,
)
from gpubench.contracts.result import Result

UNRECORDED = ("crashed", "timeout")  # the machine's failures, not the case's: never a baseline


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
            self._baselines[path] = read_baseline(path)
        return self._baselines[path]

    def judge(
        self,
        result: Result,
        thresholds: Mapping[str, float] | None = None,
        rerun: Callable[[int], Result] | None = None,
    ) -> tuple[CaseVerdict | None, list[Result]]:
        """``result`` compared with its case's history (None with comparison off), and the
        confirmation reruns made: when it looks regressed, ``rerun(k)`` runs the case again
        (k = 1 .. ``rules.confirm``) and the verdict is on all the runs."""
        if not self.options.compare:
            return None, []
        baseline = self.baseline(result.profile.name, suite_name(result.nodeid))
        history = baseline.history(result.case.id)
        rules = self.options.rules.with_thresholds(thresholds or {})
        verdict = compare(result, history, rules)
        reruns: list[Result] = []
        if verdict.regressed and rerun is not None and rules.confirm > 0:
            reruns = [rerun(k) for k in range(1, rules.confirm + 1)]
            verdict = compare(result, history, rules, reruns)
        return verdict, reruns

    def record(self, result: Result, reruns: Sequence[Result] = ()) -> bool:
        """Add the case's run (with confirmation reruns: the median one) to its history when
        saving; False when nothing is kept (the run was not asked to save, or the worker
        crashed or timed out)."""
        result = representative([result, *reruns])
        if not self.options.save or result.status in UNRECORDED:
            return False
        path = self.path(result.profile.name, suite_name(result.nodeid))
        save_runs(path, [result], self.options.history)  # BaselineError over a broken file
        return True
