"""An estimate of a case whose model is someone else's code, made in a contained child.

Estimating builds the model (on the ``meta`` device, then on fake tensors): for a
``pkg.module:factory`` model that runs the user's factory, which may hang, crash
the interpreter, fork, print, or allocate for real. It is run as the case's own
worker is: by the contained launch (:func:`gpubench.runner.contained.run_contained`:
a process group, a guardian, a subreaper, a time limit, bounded logs, the
answer in a file), so nothing it starts outlives the estimate and nothing it
prints is mistaken for the answer. The child caps its own memory before it
builds the model: it may allocate on the host what the case may on its profile
(``RLIMIT_DATA`` raised by the profile's ``memory_bytes`` from what the child
holds once its imports and torch's lazy start are done:
:meth:`gpubench.worker.capacity.CapacityLimit.cap_host`), whatever the
profile's kind, since the estimate holds on the host what the case would hold
on its device. Built-in models and ``hf:`` ones (transformers' own code) are
estimated in process.

    python -m gpubench.estimate.isolated --job job.json --result result.json
    job {"case": ..., "profile": ..., "trace": true} -> {"estimate": the Estimate}
    job {"case": ..., "profile": ..., "shape": true} -> {"shape": the ModelShape (what
        the formulas need), for a caller that asks the formulas many times (the batch
        probe): one child per model, not per question}
    a failure -> {"error": what went wrong, "oom": whether it was the memory cap}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.catalog.sizes import BUILTIN_MODELS
from gpubench.contracts.catalog.spec import HF_PREFIX
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import WorkerPaths, read_answer
from gpubench.contracts.result import Estimate
from gpubench.contracts.units import format_bytes
from gpubench.estimate.shape import ModelShape, model_shape, shape_key

ESTIMATE_TIMEOUT_S = 120.0  # far above the seconds the largest built-in takes to trace
STDERR_TAIL_CHARS = 2000
MODULE = "gpubench.estimate.isolated"


class EstimateFailed(Exception):
    """The isolated estimate did not answer: the reason, with the child's stderr tail."""


def runs_user_code(case: Case) -> bool:
    """Whether estimating ``case`` calls code that is neither gpubench's nor transformers'."""
    return case.model not in BUILTIN_MODELS and not case.model.startswith(HF_PREFIX)


@dataclass(frozen=True)
class EstimateLauncher:
    """The estimate's child, for :func:`gpubench.runner.contained.run_contained`."""

    def argv(self, paths: WorkerPaths) -> list[str]:
        files = ["--job", str(paths.job), "--result", str(paths.result)]
        return [sys.executable, "-m", MODULE, *files]

    def env(self) -> dict[str, str]:
        from gpubench.runner.launchers import import_path_env
        from gpubench.worker.tether import PARENT_PID_ENV

        return import_path_env() | {PARENT_PID_ENV: str(os.getpid())}


def _in_child(request: dict[str, Any], what: str, timeout_s: float) -> dict[str, Any]:
    """Run the child on ``request``, contained, and return its answer; EstimateFailed
    when it hangs, dies, or says it failed."""
    from gpubench.runner.contained import WorkerExit, run_contained
    from gpubench.runner.output_log import read_tail

    def answer(paths: WorkerPaths, ended: WorkerExit) -> dict[str, Any]:
        if ended.launch_error is not None:
            raise EstimateFailed(f"{what} could not start: {ended.launch_error}")
        if ended.timed_out:
            raise EstimateFailed(f"{what} took over {timeout_s:g} s (building its model hung?)")
        found = read_answer(paths.result)
        if found is None:
            tail = read_tail(paths.stderr).strip()[-STDERR_TAIL_CHARS:]
            raise EstimateFailed(
                f"{what} ended with exit code {ended.returncode} before answering: {tail}"
            )
        if "error" in found:
            raise EstimateFailed(f"{what} failed: {found['error']}")
        return found

    return run_contained(EstimateLauncher(), request, answer, timeout_s=timeout_s)


def shape_safely(
    case: Case, profile: HardwareProfile, *, timeout_s: float = ESTIMATE_TIMEOUT_S
) -> ModelShape:
    """:func:`~gpubench.estimate.shape.model_shape`, in a contained child when the model is
    user code, capped by ``profile`` (cached per model: the batch does not change a shape)."""
    if not runs_user_code(case):
        return model_shape(case)
    key = json.dumps(shape_key(case), sort_keys=True, default=repr)
    if key not in _SHAPES:
        request = {"case": case.to_dict(), "profile": profile.to_dict(), "shape": True}
        answer = _in_child(request, f"reading {case.model}'s shape", timeout_s)["shape"]
        answer["assumptions"] = tuple(answer.get("assumptions", ()))
        _SHAPES[key] = ModelShape(**answer)
    return _SHAPES[key]


_SHAPES: dict[str, ModelShape] = {}


def peak_bytes_safely(case: Case, profile: HardwareProfile) -> int:
    """:func:`gpubench.estimate.estimate_peak_bytes` (the formulas' peak), with a user
    factory's shape read in a child process (:func:`shape_safely`)."""
    from gpubench.estimate.analytical import analyse

    return analyse(case, shape_safely(case, profile), profile.kind).peak_bytes


def estimate_safely(
    case: Case,
    profile: HardwareProfile,
    *,
    trace: bool = True,
    timeout_s: float = ESTIMATE_TIMEOUT_S,
) -> Estimate:
    """:func:`gpubench.estimate.estimate_case`, in a contained child when the model is user
    code; :class:`EstimateFailed` when the child hangs, dies or cannot estimate it."""
    from gpubench.estimate import estimate_case

    if not runs_user_code(case):
        return estimate_case(case, profile, trace=trace)
    request = {"case": case.to_dict(), "profile": profile.to_dict(), "trace": trace}
    answer = _in_child(request, f"estimating {case.model}", timeout_s)["estimate"]
    return Estimate.from_dict(answer)


def _estimate(request: dict[str, Any], case: Case, profile: HardwareProfile) -> dict[str, Any]:
    from gpubench.estimate import estimate_case

    if request.get("shape"):
        return {"shape": dataclasses.asdict(model_shape(case))}
    estimate = estimate_case(case, profile, trace=bool(request.get("trace", True)))
    return {"estimate": dataclasses.asdict(estimate)}


def main(argv: Sequence[str] | None = None) -> int:
    from gpubench.contracts.oom import is_oom
    from gpubench.contracts.protocol import write_json_atomic
    from gpubench.worker.capacity import CapacityLimit, prime_runtime
    from gpubench.worker.tether import tether_to_parent

    tether_to_parent()
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    request = json.loads(args.job.read_text(encoding="utf-8"))
    case = Case.from_dict(request["case"])
    profile = HardwareProfile.from_dict(request["profile"])
    prime_runtime()  # torch's lazy start is the runtime's, not the model's
    cap = CapacityLimit.cap_host(int(profile.memory_bytes))
    try:
        answer = _estimate(request, case, profile)
    except Exception as exc:
        cap.release()  # room to write the answer
        oom = is_oom(exc, host_capped=True)
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if oom:
            allowed = format_bytes(cap.capacity_bytes or 0)
            why = (
                f"building or tracing {case.model} asked for more than the {allowed} "
                f"profile {profile.name} allows a case ({why})"
            )
        write_json_atomic(args.result, {"error": why, "oom": oom})
        return 1
    cap.release()
    write_json_atomic(args.result, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
