"""Both sides of the worker protocol: file layout, atomic JSON, progress events.

The parent writes ``job.json`` in a fresh directory and starts the worker; the
worker appends progress events to ``progress.jsonl`` and writes
``result.json`` atomically. Nothing but JSON crosses the boundary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHASES = ("starting", "building-ops", "building", "warmup", "measuring", "done")


@dataclass(frozen=True)
class WorkerPaths:
    """Files of one case's working directory."""

    root: Path

    @property
    def job(self) -> Path:
        return self.root / "job.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    def rank_results(self) -> list[tuple[int, Path]]:
        """(rank, path) of the Results ranks other than 0 wrote (:func:`rank_result_path`)."""
        ranked = []
        for path in self.root.glob(f"{self.result.stem}.rank*{self.result.suffix}"):
            rank = path.stem.rsplit(".rank", 1)[1]
            if rank.isdigit():
                ranked.append((int(rank), path))
        return sorted(ranked)

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.log"


def read_answer(path: Path) -> dict[str, Any] | None:
    """A contained child's answer file (the worker's ``result.json``, an estimate's) as a
    dict; None when it is missing, unreadable, not JSON gpubench would write (NaN, nesting
    too deep, a number Python refuses) or not an object. The caller says what no answer
    means (the child's exit code, its stderr)."""
    from gpubench.contracts.schema import READ_ERRORS, parse_json

    try:
        found = parse_json(Path(path).read_bytes())
    except OSError:
        return None
    except READ_ERRORS:
        return None
    return found if isinstance(found, dict) else None


def write_json_atomic(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write JSON to ``path`` so a reader sees the old file or the whole new one
    (:func:`write_text_atomic`); sorted keys, no NaN."""
    text = json.dumps(data, sort_keys=True, indent=indent, allow_nan=False)
    write_text_atomic(path, text + ("\n" if indent is not None else ""))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a reader sees the old file or the new one, never
    half of it. Every file gpubench writes goes through here.

    The temporary file is made by :func:`tempfile.mkstemp` in the target's folder:
    ``O_CREAT | O_EXCL`` with a random name, so a symbolic link (or any file) planted
    there by another user is never opened, let alone followed; it gets the mode a new
    file would (0666 less the umask), is fsynced, then renamed over ``path``. A final
    ``path`` that is itself a symbolic link is replaced (the link, not what it points
    to). Any error removes the temporary file; a process killed mid-write leaves a
    ``.NAME.*.tmp`` (``.gitignore`` covers the pattern)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # fsync's: say which file
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise


def _umask() -> int:
    """The process's umask: Linux's /proc says it without changing it (setting it to read
    it back, the fallback, races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class ProgressEvent:
    phase: str
    step: int = 0
    total_steps: int | None = None  # None while warm-up length is still unknown
    tokens_per_s: float | None = None
    memory_bytes: int | None = None
    t: float = 0.0  # unix time
    detail: str = ""  # what the phase works on (building-ops: the ops being compiled)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ProgressWriter:
    """Child side: append events, throttled, always writing phase changes."""

    def __init__(self, path: Path | None, min_interval_s: float = 0.25) -> None:
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._min_interval_s = min_interval_s
        self._last_phase: str | None = None
        self._last_t = 0.0

    def emit(
        self,
        phase: str,
        step: int = 0,
        total_steps: int | None = None,
        tokens_per_s: float | None = None,
        memory_bytes: int | None = None,
        detail: str = "",
    ) -> None:
        if self._fh is None:
            return
        now = time.time()
        if phase == self._last_phase and now - self._last_t < self._min_interval_s:
            return
        event = ProgressEvent(phase, step, total_steps, tokens_per_s, memory_bytes, now, detail)
        self._fh.write(json.dumps(event.to_dict()) + "\n")
        self._fh.flush()
        self._last_phase, self._last_t = phase, now

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ProgressReader:
    """Parent side: return the complete events appended since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[ProgressEvent]:
        try:
            with open(self._path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next poll
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(ProgressEvent.from_dict(json.loads(line)))
            except (ValueError, TypeError):
                continue  # a garbled line is not worth failing a case over
        return events


def rank_result_path(result: Path, rank: int) -> Path:
    """Where rank ``rank`` of a torchrun case writes its Result: rank 0 writes ``result``
    itself, rank N ``result.rankN.json`` beside it, so that the parent can tell which
    rank failed first when rank 0 only saw a peer vanish."""
    if rank == 0:
        return result
    return result.with_name(f"{result.stem}.rank{rank}{result.suffix}")
