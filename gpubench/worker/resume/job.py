"""What the parent asks of the resume check in a worker's job (``job["resume"]``), the files
it leaves in the checkpoint directory, and the test hook that plants a fault."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.worker.resume.paths import trusted_directory

SAVED_FILE = "saved.json"  # rank 0, after the save: {"save_step", "save_s", "format"}
RESUMED_FILE = "resumed-rank{rank}.json"  # each rank of the resumed run: losses, checks
SIDE_FILE = "gpubench-rank{rank}.pt"  # each rank: data position, RNG, what the save held

# Test hook: the resumed worker skips restoring one part, so that the tests can show the
# check names it. Never set outside tests.
FAULT_ENV = "GPUBENCH_RESUME_FAULT"
FAULTS = ("optimizer", "data", "lr")
MODES = ("save", "load")
ENGINES = ("torch", "deepspeed")  # the engines whose checkpoints the check covers


@dataclass(frozen=True)
class ResumeJob:
    """``save``: the case's own run saves after ``case.resume_check``'s step into
    ``directory``; ``load``: a fresh worker loads it and trains ``steps`` more steps."""

    mode: str
    directory: Path  # resolved, inside run_dir
    run_dir: Path
    steps: int = 0  # load: the steps to train after the checkpoint

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> ResumeJob | None:
        spec = job.get("resume")
        if spec is None:
            return None
        mode = spec.get("mode")
        if mode not in MODES:
            raise ValueError(f"resume mode={mode!r}; valid: {', '.join(MODES)}")
        run_dir = Path(spec["run_dir"])
        directory = trusted_directory(Path(spec["directory"]), run_dir)
        return cls(mode, directory, run_dir, int(spec.get("steps", 0)))

    def to_job(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "directory": str(self.directory),
            "run_dir": str(self.run_dir),
            "steps": self.steps,
        }


def planted_fault() -> str | None:
    """The part the test hook says not to restore (``GPUBENCH_RESUME_FAULT``), or None."""
    fault = os.environ.get(FAULT_ENV, "")
    if not fault:
        return None
    if fault not in FAULTS:
        raise ValueError(f"{FAULT_ENV}={fault!r}; valid: {', '.join(FAULTS)} (a test hook)")
    return fault
