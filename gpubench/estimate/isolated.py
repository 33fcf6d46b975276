"""An estimate of a case whose model is someone else's code, made in a subprocess.

Estimating builds the model (on the ``meta`` device, then on fake tensors): for a
``pkg.module:factory`` model that runs the user's factory, which may hang, crash
the interpreter or allocate for real. The session's own process must survive
all three, as it survives a worker that does, so such a case is estimated in a
short-lived child (``python -m gpubench.estimate.isolated``) with a time limit,
tethered to its parent (:mod:`gpubench.worker.tether`), its import path the session's
(:func:`~gpubench.runner.launchers.import_path_env`). Built-in models and
``hf:`` ones (transformers' own code) are estimated in process.

    python -m gpubench.estimate.isolated < {"case": ..., "profile": ..., "trace": true}
    -> the Estimate's JSON on stdout
    python -m gpubench.estimate.isolated < {"case": ..., "shape": true}
    -> the model's ModelShape (what the formulas need), for a caller that asks the
       formulas many times (the batch probe): one child per model, not per question
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.catalog.sizes import BUILTIN_MODELS
from gpubench.contracts.catalog.spec import HF_PREFIX
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Estimate
from gpubench.estimate.shape import ModelShape, model_shape, shape_key

ESTIMATE_TIMEOUT_S = 120.0  # far above the seconds the largest built-in takes to trace
STDERR_TAIL_CHARS = 2000


class EstimateFailed(Exception):
    """The isolated estimate did not answer: the reason, with the child's stderr tail."""


def runs_user_code(case: Case) -> bool:
    """Whether estimating ``case`` calls code that is neither gpubench's nor transformers'."""
    return case.model not in BUILTIN_MODELS and not case.model.startswith(HF_PREFIX)


def _in_child(request: dict[str, Any], what: str, timeout_s: float) -> dict[str, Any]:
    """Run the child on ``request`` and return its JSON answer; EstimateFailed otherwise."""
    from gpubench.runner.launchers import import_path_env

    try:
        done = subprocess.run(
            [sys.executable, "-m", "gpubench.estimate.isolated"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **import_path_env()},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EstimateFailed(
            f"{what} took over {timeout_s:g} s (building its model hung?)"
        ) from None
    if done.returncode != 0:
        tail = done.stderr.strip()[-STDERR_TAIL_CHARS:]
        raise EstimateFailed(f"{what} ended with exit code {done.returncode}: {tail}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def shape_safely(case: Case, *, timeout_s: float = ESTIMATE_TIMEOUT_S) -> ModelShape:
    """:func:`~gpubench.estimate.shape.model_shape`, in a child process when the model is
    user code (cached per model: the batch does not change a shape)."""
    if not runs_user_code(case):
        return model_shape(case)
    key = json.dumps(shape_key(case), sort_keys=True, default=repr)
    if key not in _SHAPES:
        answer = _in_child(
            {"case": case.to_dict(), "shape": True}, f"reading {case.model}'s shape", timeout_s
        )
        answer["assumptions"] = tuple(answer.get("assumptions", ()))
        _SHAPES[key] = ModelShape(**answer)
    return _SHAPES[key]


_SHAPES: dict[str, ModelShape] = {}


def peak_bytes_safely(case: Case, profile: HardwareProfile) -> int:
    """:func:`gpubench.estimate.estimate_peak_bytes` (the formulas' peak), with a user
    factory's shape read in a child process (:func:`shape_safely`)."""
    from gpubench.estimate.analytical import analyse

    return analyse(case, shape_safely(case), profile.kind).peak_bytes


def estimate_safely(
    case: Case,
    profile: HardwareProfile,
    *,
    trace: bool = True,
    timeout_s: float = ESTIMATE_TIMEOUT_S,
) -> Estimate:
    """:func:`gpubench.estimate.estimate_case`, in a child process when the model is user
    code; :class:`EstimateFailed` when the child hangs, dies or cannot estimate it."""
    from gpubench.estimate import estimate_case

    if not runs_user_code(case):
        return estimate_case(case, profile, trace=trace)
    request = {"case": case.to_dict(), "profile": profile.to_dict(), "trace": trace}
    return Estimate.from_dict(_in_child(request, f"estimating {case.model}", timeout_s))


def main() -> int:
    from gpubench.estimate import estimate_case
    from gpubench.worker.tether import tether_to_parent

    tether_to_parent()
    request = json.loads(sys.stdin.read())
    case = Case.from_dict(request["case"])
    if request.get("shape"):
        print(json.dumps(dataclasses.asdict(model_shape(case)), allow_nan=False))
        return 0
    profile = HardwareProfile.from_dict(request["profile"])
    estimate = estimate_case(case, profile, trace=bool(request.get("trace", True)))
    print(json.dumps(dataclasses.asdict(estimate), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
