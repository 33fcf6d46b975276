"""Where a run's results live: ``reports/<run-id>/results.jsonl`` and ``reports/latest``.

Results are appended one JSON line per case as each case ends, under an
exclusive lock (pytest-xdist workers append to the same file), so a crash
mid-session loses nothing already finished.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from pathlib import Path

from gpubench.result import Result

RESULTS_FILE = "results.jsonl"
LATEST_LINK = "latest"


def new_run_id() -> str:
    """Sortable and unique: ``20261122-014755-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class RunStore:
    """The directory of one run."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.dir = self.root / run_id
        self.results_path = self.dir / RESULTS_FILE

    def create(self) -> None:
        """Make the run directory and point ``latest`` at it (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.results_path.touch()
        link = self.root / LATEST_LINK
        tmp = self.root / f".{LATEST_LINK}.{os.getpid()}.tmp"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(self.run_id, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # a file system without symlinks: the run dir is still there
            tmp.unlink(missing_ok=True)

    def append(self, result: Result) -> None:
        line = (result.to_json() + "\n").encode("utf-8")
        fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read(self) -> list[Result]:
        return read_results(self.results_path)


def read_results(path: Path) -> list[Result]:
    """All Results of a results.jsonl; a truncated last line (killed writer) is skipped."""
    results = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                if fh.readline() == "":  # only the very last line may be cut short
                    break
                raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
            results.append(Result.from_dict(data))
    return results
