"""The gate offline: a set of runs judged against histories read from files, by the rules
the pytest gate applied (``gpubench compare``, ``gpubench report --baseline``).

Each run records the thresholds its case's gate was run with (``Result.gate_thresholds``:
the test's ``gate=`` or marker over ``--gpubench-threshold`` over ``[tool.gpubench.gate]``
over the defaults); offline they are applied again, so ``gpubench compare`` gives the
verdict the pytest gate gave. The command line's ``--threshold`` overrides them; a run
recorded before they were (schema v4) is judged by ``rules`` (defaults and the
pyproject's table).
"""

from __future__ import annotations

from collections.abc import Mapping

from gpubench.baseline.compare import CaseVerdict, compare
from gpubench.baseline.rules import COMMAND_LINE_SOURCE, RECORDED_SOURCE, GateRules
from gpubench.baseline.sources import Histories, newest_runs, one_per_run
from gpubench.contracts.result import Result


def rules_for_run(
    result: Result, rules: GateRules, overrides: Mapping[str, float] | None = None
) -> GateRules:
    """``rules`` with the thresholds ``result`` recorded, under ``overrides``."""
    recorded = rules.with_thresholds(result.gate_thresholds, RECORDED_SOURCE)
    return recorded.with_thresholds(overrides or {}, COMMAND_LINE_SOURCE)


def judge_runs(
    old: Histories,
    new: Histories,
    rules: GateRules,
    overrides: Mapping[str, float] | None = None,
) -> list[CaseVerdict]:
    """The newest run of each case in ``new`` (with its confirmation reruns) compared with
    the history of that case in ``old`` (one run per session), by the thresholds the run
    recorded (:func:`rules_for_run`)."""
    verdicts = []
    for result, confirmations in newest_runs(new):
        history = one_per_run(list(old.get((result.profile.name, result.case.id), [])))
        case_rules = rules_for_run(result, rules, overrides)
        verdicts.append(compare(result, history, case_rules, confirmations))
    return verdicts
