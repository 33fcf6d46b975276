"""The validation kit's pytest suite: the plan's cases, run through the real plugin.

The kit (``python -m gpubench.validation``) runs ``pytest <this file>`` twice, once per
part of the plan, choosing the scale and part with ``GPUBENCH_VALIDATION_SCALE``
and ``GPUBENCH_VALIDATION_PART``: ``main`` on ``--gpu-profile auto``, ``emulated``
on the plan's smaller profile. The checks are judged afterwards from
results.jsonl; the assertions here put the same expectations in pytest's log.
"""

from __future__ import annotations

import functools
import operator
import os

import gpubench
from gpubench import Result
from gpubench.validation.plan import TOO_BIG, plan_for

PARTS = ("main", "emulated")

_plan = plan_for(os.environ.get("GPUBENCH_VALIDATION_SCALE", "smoke"))
_part = os.environ.get("GPUBENCH_VALIDATION_PART", "main")
if _part not in PARTS:
    raise ValueError(f"GPUBENCH_VALIDATION_PART={_part!r} is not valid; valid: {', '.join(PARTS)}")

_cases = _plan.main if _part == "main" else _plan.emulated
CASES = functools.reduce(
    operator.add,
    (gpubench.single_case(**settings, name=name) for name, settings in _cases.items()),
)


@CASES
def test_validation_case(gpubench_result: Result) -> None:
    result = gpubench_result
    if result.case.name == TOO_BIG:
        assert result.status == "oom", result.describe()
        return
    assert result.status == "ok", result.describe()
    assert result.metrics.loss_decreased, result.describe()
