"""The resume check's parent side: give the case's run a checkpoint directory, then resume the
checkpoint in a fresh worker and compare.

The case's own run (the uninterrupted reference) saves after step k
(:mod:`gpubench.worker.resume.save`); once it has ended, a fresh worker, started the same
way (torchrun for several ranks), builds the same case, loads the checkpoint and trains
steps k+1 .. k+m, m = ``min(RESUME_STEPS, the steps the run took after k)``
(:mod:`gpubench.worker.resume.resumed`). Its losses are compared with the run's own
losses of the same steps (``Result.series.loss``):

- on a CPU profile, **bitwise**: the CPU kernels gpubench trains with are deterministic for
  a fixed thread count, so a resume that restored everything gives the same floats;
- on CUDA, **relative**, within :data:`CUDA_TOLERANCE`: cuBLAS may pick a different
  split-K reduction, and the backward kernels of embeddings (``index_add``/atomics) and of
  SDPA's flash and memory-efficient attention accumulate with atomics, whose order varies
  from run to run; the resumed steps drift from the reference as they would between two
  uninterrupted runs. 20 steps keep that drift far below a restore error (a lost
  optimizer state moves the loss by percents within a step or two).

Each part the resumed worker restored is also checked against what the checkpoint held, and
said when it differs. The resumed worker's own Result is not a benchmark run: it is never
appended to results.jsonl nor gated; a failure of it is a difference. The checkpoint lies
in the run's directory (``checkpoints/<case>-<profile>``) and is deleted after the check
unless the session keeps its work directories (``--gpubench-keep-workdirs``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gpubench.contracts.case import MIN_AUTO_STEPS, STEPS_AUTO, Case
from gpubench.contracts.result import Result, ResumeCheck
from gpubench.worker.resume.job import ENGINES, RESUMED_FILE, SAVED_FILE, ResumeJob
from gpubench.worker.resume.paths import checkpoint_bytes, trusted_directory

RESUME_STEPS = 20  # steps the resumed worker trains after the checkpoint, at most
CHECKPOINTS_DIR = "checkpoints"  # in the run's directory
# the largest relative loss difference a CUDA resume may show, by precision: fp32's own
# non-deterministic sums drift ~1e-6 per step; bf16/fp16 round to 8/11 bits, so a changed
# order of additions shows in the 3rd or 4th digit
CUDA_TOLERANCE = {"fp32": 1e-3, "bf16": 1e-2, "fp16": 1e-2, "bf16-pure": 2e-2}

Launch = Callable[[Mapping[str, Any]], Result]  # runs the case's worker with a resume job


def planned_save_step(case: Case, warmup_steps: int) -> int:
    """The step the case's run saves after (gpubench.worker.resume.save.save_step)."""
    if not isinstance(case.resume_check, bool):
        return int(case.resume_check)
    measured = MIN_AUTO_STEPS if case.steps == STEPS_AUTO else int(case.steps)
    return warmup_steps + max(1, measured // 2)


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """One case's resume check: where its checkpoint goes, and the check after the run."""

    case: Case
    run_dir: Path
    directory: Path

    @classmethod
    def for_case(
        cls, case: Case, profile: str, run_dir: Path, repeat: int = 0
    ) -> ResumePlan | None:
        """The plan when ``case`` asks for the check; None otherwise, and for a rerun that
        confirms a regression (its first run was checked)."""
        if not case.resume_check or repeat:
            return None
        name = re.sub(r"[^\w.+-]", "_", f"{case.id}-{profile}")  # a name may hold a "/"
        return cls(case, Path(run_dir), Path(run_dir) / CHECKPOINTS_DIR / name)

    def save_job(self) -> dict[str, Any] | None:
        """The worker's part for the case's run: a fresh, empty checkpoint directory inside
        the run's directory; None where the check cannot be made (no worker's save)."""
        if self._not_covered():
            return None
        shutil.rmtree(self.directory, ignore_errors=True)  # a stale one from a crashed run
        self.directory.mkdir(parents=True)
        trusted = trusted_directory(self.directory, self.run_dir)
        return ResumeJob("save", trusted, self.run_dir).to_job()

    def check(self, result: Result, launch: Launch, *, keep: bool = False) -> Result:
        """``result`` with its resume check (``Result.resume``): the checkpoint resumed by
        ``launch`` and compared. The checkpoint is deleted afterwards unless ``keep``."""
        try:
            resume = self._check(result, launch)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # never costs the run
            said = f"the resume check could not be made: {type(exc).__name__}: {exc}"
            resume = ResumeCheck("failed", differences=[said])
        finally:
            if not keep:
                shutil.rmtree(self.directory, ignore_errors=True)
        return dataclasses.replace(result, resume=resume)

    def _not_covered(self) -> str:
        if self.case.engine not in ENGINES:
            return (
                f"the resume check covers engine {' and '.join(ENGINES)}; engine="
                f"{self.case.engine!r} (sharded checkpoints) is not checked yet"
            )
        if self.case.nnodes > 1:
            return "a checkpoint written on several machines is not checked"
        return ""

    def _check(self, result: Result, launch: Launch) -> ResumeCheck:
        reason = self._not_covered()
        if reason:
            return ResumeCheck("not_checked", note=reason)
        if result.status not in ("ok", "over_capacity"):
            return ResumeCheck("not_checked", note=f"the run ended {result.status}")
        saved_path = self.directory / SAVED_FILE
        losses = result.series.loss
        if not saved_path.is_file():
            step = planned_save_step(self.case, result.metrics.warmup_steps)
            return ResumeCheck(
                "not_checked",
                save_step=step,
                note=f"the run took {len(losses)} steps, ending at or before step {step} that "
                "the checkpoint was to follow; nothing to resume",
            )
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        k = int(saved["save_step"])
        size = checkpoint_bytes(self.directory, self.run_dir) - saved_path.stat().st_size
        steps = min(RESUME_STEPS, len(losses) - k)
        check = ResumeCheck(
            "failed",
            save_step=k,
            save_s=float(saved["save_s"]),
            checkpoint_bytes=size,
            checkpoint_format=str(saved["format"]),
            reference_loss=list(losses[k : k + steps]),
            **comparison(result),
        )
        resumed = launch(ResumeJob("load", self.directory, self.run_dir, steps).to_job())
        if resumed.status != "ok":
            return dataclasses.replace(
                check,
                differences=[f"the resumed worker ended {resumed.status}: {resumed.describe()}"],
            )
        return compared(check, self._answers(), result.series.lr[k : k + steps])

    def _answers(self) -> list[dict[str, Any]]:
        """Each rank's answer, rank 0's first."""
        answers = []
        for rank in range(max(1, self.case.nproc)):
            path = self.directory / RESUMED_FILE.format(rank=rank)
            if path.is_file():
                answers.append({"rank": rank, **json.loads(path.read_text(encoding="utf-8"))})
        if not answers or answers[0]["rank"] != 0:
            raise RuntimeError(f"the resumed worker left no answer in {self.directory}")
        return answers


def comparison(result: Result) -> dict[str, Any]:
    """How the losses are compared on ``result``'s profile: bitwise on CPU, else relative."""
    if result.profile.kind == "cpu":
        return {"comparison": "bitwise", "tolerance": 0.0}
    return {"comparison": "relative", "tolerance": CUDA_TOLERANCE[result.case.flags.precision]}


def compared(
    check: ResumeCheck, answers: list[dict[str, Any]], reference_lr: list[float]
) -> ResumeCheck:
    """``check`` with the resumed losses, their comparison and every difference found."""
    first = answers[0]
    resumed = [float(x) for x in first["loss"]]
    found = [
        sentence if len(answers) == 1 else f"rank {answer['rank']}: {sentence}"
        for answer in answers
        for sentence in answer["differences"]
    ]
    k, reference = check.save_step or 0, check.reference_loss
    pairs = list(zip(resumed, reference, strict=False))
    relative = [abs(r - ref) / abs(ref) if ref else abs(r - ref) for r, ref in pairs]
    tolerance = check.tolerance or 0.0
    for i, (r, ref) in enumerate(pairs):
        off = r != ref if check.comparison == "bitwise" else relative[i] > tolerance
        if off:
            found.append(
                f"losses differ from step {k + i + 1}: {r:.9g} resumed vs {ref:.9g} in the "
                f"run, {100 * relative[i]:.2g} % apart"
            )
            break
    if len(resumed) < len(reference):
        found.append(f"the resumed worker trained {len(resumed)} of {len(reference)} steps")
    for i, (lr, ref_lr) in enumerate(zip(first["lr"], reference_lr, strict=False)):
        if not math.isclose(lr, ref_lr, rel_tol=1e-9):
            sentence = f"learning rate {lr:.3e} at step {k + i + 1}, the run used {ref_lr:.3e}"
            found += [] if sentence in found else [sentence]  # the worker may have said it
            break
    return dataclasses.replace(
        check,
        verdict="failed" if found else "passed",
        resumed_loss=resumed,
        max_relative_diff=max(relative) if relative else None,
        differences=found,
        load_s=float(first["load_s"]),
    )
