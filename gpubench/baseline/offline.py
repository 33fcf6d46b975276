"""The gate offline: a set of runs judged against histories read from files, by the rules
the pytest gate uses (``gpubench compare``, ``gpubench report --baseline``)."""

from __future__ import annotations

from gpubench.baseline.compare import CaseVerdict, compare
from gpubench.baseline.rules import GateRules
from gpubench.baseline.sources import Histories, newest_runs, one_per_run


def judge_runs(old: Histories, new: Histories, rules: GateRules) -> list[CaseVerdict]:
    """The newest run of each case in ``new`` (with its confirmation reruns) compared with
    the history of that case in ``old`` (one run per session)."""
    verdicts = []
    for result, confirmations in newest_runs(new):
        history = one_per_run(list(old.get((result.profile.name, result.case.id), [])))
        verdicts.append(compare(result, history, rules, confirmations))
    return verdicts
