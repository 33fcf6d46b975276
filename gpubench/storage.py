"""Where a run's records live: ``reports/<run-id>/`` and ``reports/latest``.

``results.jsonl`` (one Result per case) and ``verdicts.jsonl`` (the gate's
verdict per compared case) are appended one JSON line per case as each case
ends, under an exclusive lock (pytest-xdist workers append to the same
files), so a crash mid-session loses nothing already finished.
``outcomes.jsonl`` holds pytest's outcome of each gpubench test (passed, failed,
xfailed with the finding, ...), so the report says what pytest said.
``work/`` keeps each case's worker directory (job, logs, progress) with
``--gpubench-keep-workdirs``. ``invocation.json`` keeps the command line that ran
the session, so a report rendered later can say how to run it again. ``.session``
holds the token of the session that writes the run (:class:`RunStore`): a run id drawn
twice is refused, never merged. Every file is written by
:func:`~gpubench.contracts.protocol.write_json_atomic`; appends wait for their lock
with a bound (:mod:`gpubench.locking`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import secrets
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gpubench.contracts.protocol import write_json_atomic, write_text_atomic
from gpubench.contracts.result import Result
from gpubench.contracts.schema import READ_ERRORS, SchemaError, parse_json, record_fields
from gpubench.contracts.text import safe_text
from gpubench.locking import lock_exclusive

RESULTS_FILE = "results.jsonl"
VERDICTS_FILE = "verdicts.jsonl"
OUTCOMES_FILE = "outcomes.jsonl"
INVOCATION_FILE = "invocation.json"
GATE_SUMMARY_FILE = "summary.md"
LATEST_LINK = "latest"
SESSION_FILE = ".session"  # the token of the session that writes the run
WORK_DIR = "work"  # kept worker directories (--gpubench-keep-workdirs)
T = TypeVar("T")


def unwritable_reason(root: Path) -> str | None:
    """Why runs cannot be written under ``root``: a file where a folder must be, or a
    folder this user may not write in; None when they can. Creates nothing."""
    probe = Path(root)
    while not probe.exists():  # the nearest part that exists decides
        if probe.is_symlink():
            return f"{probe} is a symbolic link to nothing"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


class UnwritablePath(ValueError):
    """An output path gpubench cannot write (the option, the path and why are in the
    message); raised before anything is written."""


def file_unwritable_reason(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (:func:`unwritable_reason` of its folder,
    or a folder where the file must go); None when it can. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    return unwritable_reason(path.parent)


def check_output_file(path: Path, option: str) -> None:
    """:class:`UnwritablePath` naming ``option`` when a file cannot be written at ``path``."""
    reason = file_unwritable_reason(path)
    if reason is not None:
        raise UnwritablePath(f"{option} {path}: {reason}")


def new_run_id() -> str:
    """Sortable, and unique by its 64 random bits: ``20261122-014755-3fa27c0d9e1b4a65``
    (two sessions that start in the same second share an id once in 2**64; then the
    second is refused, never merged: :meth:`RunStore.create`)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(8)


class RunIdTaken(FileExistsError):
    """The run directory holds another session's run (the message names it)."""


class RunStore:
    """The directory of one run. ``session``: a token of the session that writes it (its
    pytest-xdist workers share it), claimed in ``.session`` by the first to create it, so
    two sessions that drew the same run id are refused, never merged."""

    def __init__(self, root: Path, run_id: str, session: str | None = None) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.session = session
        self.dir = self.root / run_id
        self.results_path = self.dir / RESULTS_FILE
        self.verdicts_path = self.dir / VERDICTS_FILE
        self.outcomes_path = self.dir / OUTCOMES_FILE
        self.summary_path = self.dir / GATE_SUMMARY_FILE
        self.invocation_path = self.dir / INVOCATION_FILE

    def create(self) -> None:
        """Make the run directory and point ``latest`` at it (atomically). A file or folder
        of the user's called ``latest`` is left alone, with a warning. RunIdTaken when
        another session has the directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._claim()
        self.results_path.touch()
        link = self.root / LATEST_LINK
        if link.exists() and not link.is_symlink():
            kind = "folder" if link.is_dir() else "file"
            warnings.warn(
                f"{link} is a {kind}, not gpubench's link to the latest run: left as it is "
                f"(this run is in {self.dir})",
                stacklevel=2,
            )
            return
        # a random name: symlink() never follows nor replaces what is there (EEXIST)
        tmp = self.root / f".{LATEST_LINK}.{secrets.token_hex(8)}.tmp"
        try:
            tmp.symlink_to(self.run_id, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # a file system without symlinks: the run dir is still there
            tmp.unlink(missing_ok=True)

    def _claim(self) -> None:
        """Put this session's token in ``.session``, or check that the token there is this
        session's. The marker appears whole or not at all (a filled temporary file, then
        ``link``, which fails where the name exists): an xdist worker never reads the
        marker another worker has created but not yet written."""
        if self.session is None:
            return
        marker = self.dir / SESSION_FILE
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f"{SESSION_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(self.session + "\n")
            os.chmod(tmp, 0o644)
            os.link(tmp, marker)
        except FileExistsError:
            if marker.read_text(encoding="ascii", errors="replace").strip() != self.session:
                raise RunIdTaken(
                    f"{self.dir}: run id {self.run_id} is another session's run; not "
                    "mixed with it (run again: a new id is drawn)"
                ) from None
        finally:
            os.unlink(tmp)

    def workdir_for(self, case_id: str, profile: str, repeat: int = 0) -> Path:
        """Where ``--gpubench-keep-workdirs`` keeps a case's worker directory:
        ``work/<case>-<profile>[-rerun<N>]`` in the run directory (pytest-xdist workers run
        different cases, so no two ask for the same one)."""
        rerun = f"-rerun{repeat}" if repeat else ""
        name = re.sub(r"[^\w.+-]", "_", f"{case_id}-{profile}{rerun}")  # a name may hold a "/"
        return self.dir / WORK_DIR / name

    def append(self, result: Result) -> None:
        """Append the Result to results.jsonl (:func:`append_json_line`)."""
        append_json_line(self.results_path, result.to_dict())

    def read(self) -> list[Result]:
        return read_results(self.results_path)

    def write_invocation(self, invocation: Invocation) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.invocation_path, invocation.to_dict(), indent=1)


TEST_OUTCOMES = ("passed", "failed", "xfailed", "skipped", "error")
OUTCOME_REASON_CHARS = 500


@dataclass(frozen=True)
class TestOutcome:
    """What pytest made of one gpubench test: a case's (``case_id`` set) or a go/no-go's
    (``case_id`` None) on one profile. ``reason``: the finding of an xfail, the reason of
    a skip, the first lines of a failure."""

    __test__ = False  # a record, not a pytest test class

    nodeid: str
    outcome: str  # one of TEST_OUTCOMES
    profile: str | None = None
    case_id: str | None = None
    reason: str = ""
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TestOutcome:
        if not isinstance(data, dict) or data.get("outcome") not in TEST_OUTCOMES:
            raise ValueError(f"not a test outcome: {data!r}")
        return cls(**record_fields(cls, data, "outcome"))


@dataclass(frozen=True)
class ShardRecord:
    """Which slice of a collection a sharded run ran (``--gpubench-shard INDEX/COUNT``,
    INDEX from 1), with what identifies the whole collection before it was sliced: the
    digest and number of its gpubench cases' node ids (``gpubench merge`` refuses shards
    of different collections), and the node ids of this slice's cases that were to run
    (not skipped at collection), so a merge can name a case that never answered."""

    index: int
    count: int
    collection_digest: str
    collection_size: int
    cases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "count": self.count,
            "collection_digest": self.collection_digest,
            "collection_size": self.collection_size,
            "cases": list(self.cases),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ShardRecord:
        fields = record_fields(cls, data, "shard record")
        ok = (
            all(isinstance(fields.get(k), int) for k in ("index", "count", "collection_size"))
            and isinstance(fields.get("collection_digest"), str)
            and isinstance(fields.get("cases", []), list)
            and all(isinstance(c, str) for c in fields.get("cases", []))
        )
        if not ok or not 1 <= fields["index"] <= fields["count"]:
            raise ValueError(f"not a shard record: {data!r}")
        return cls(**fields)


@dataclass(frozen=True)
class MergedRun:
    """One run a ``gpubench merge`` joined: its directory as given, its run id(s) and the
    shard it ran (None: an unsharded run)."""

    path: str
    run_ids: tuple[str, ...]
    shard: ShardRecord | None = None
    results: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "run_ids": list(self.run_ids),
            "results": self.results,
        }
        if self.shard is not None:
            data["shard"] = self.shard.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> MergedRun:
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ValueError(f"not a merged run: {data!r}")
        shard = data.get("shard")
        return cls(
            data["path"],
            tuple(str(r) for r in data.get("run_ids", [])),
            ShardRecord.from_dict(shard) if shard is not None else None,
            int(data.get("results", 0)),
        )


SHARD_FLAG = "--gpubench-shard"


@dataclass(frozen=True)
class Invocation:
    """The command line that ran a session: pytest's arguments and the folder it ran in;
    for a shard, which slice it ran (``shard``); for a ``gpubench merge``, the runs it
    joined (``merged``: its ``args`` are then the shards' command without the shard)."""

    args: tuple[str, ...]
    cwd: str
    shard: ShardRecord | None = None
    merged: tuple[MergedRun, ...] = ()

    @property
    def command(self) -> str:
        """A shell line that runs it again: ``cd DIR && pytest ARGS``."""
        return f"cd {shlex.quote(self.cwd)} && {shlex.join(('pytest', *self.args))}"

    def unsharded_args(self) -> tuple[str, ...]:
        """``args`` without ``--gpubench-shard``: the command that runs the whole collection."""
        args: list[str] = []
        skip_next = False
        for arg in self.args:
            if skip_next:
                skip_next = False
            elif arg == SHARD_FLAG:
                skip_next = True
            elif not arg.startswith(SHARD_FLAG + "="):
                args.append(arg)
        return tuple(args)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"args": list(self.args), "cwd": self.cwd}
        if self.shard is not None:
            data["shard"] = self.shard.to_dict()
        if self.merged:
            data["merged"] = [run.to_dict() for run in self.merged]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Invocation:
        """Reads every invocation.json gpubench wrote (one without ``shard`` or ``merged``
        is an unsharded run's)."""
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("cwd"), str)
            or not isinstance(data.get("args"), list)
            or not all(isinstance(a, str) for a in data["args"])
            or not isinstance(data.get("merged", []), list)
        ):
            raise ValueError(f'expected {{"args": [str, ...], "cwd": str}}, got {data!r}')
        shard = data.get("shard")
        return cls(
            tuple(data["args"]),
            data["cwd"],
            ShardRecord.from_dict(shard) if shard is not None else None,
            tuple(MergedRun.from_dict(run) for run in data.get("merged", [])),
        )


def read_invocation(run_dir: Path) -> Invocation | None:
    """The run's recorded command line; None when it was not recorded or cannot be read
    (a warning says which)."""
    path = Path(run_dir) / INVOCATION_FILE
    if not path.is_file():
        return None
    try:
        return Invocation.from_dict(parse_json(path.read_bytes()))
    except OSError as exc:
        problem: Exception = exc
    except READ_ERRORS as exc:
        problem = exc
    warnings.warn(safe_text(f"{path}: not a command line record ({problem})"), stacklevel=2)
    return None


def append_json_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as a line, whole: under the lock, after a newline if an earlier
    writer was cut off mid-line (so its fragment cannot swallow this record), looping over
    short writes, then fsync."""
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        lock_exclusive(fd, path)  # a bounded wait that names the holder
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_json_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """A whole JSON-lines file at once, as :func:`append_json_line` writes each line, through
    :func:`~gpubench.contracts.protocol.write_text_atomic` (``gpubench merge``)."""
    lines = [json.dumps(record, sort_keys=True, allow_nan=False) + "\n" for record in records]
    write_text_atomic(path, "".join(lines))


def read_json_lines(path: Path, read: Callable[[Any], T], kind: str) -> list[T]:
    """Every record of a JSON-lines file, each made by ``read``. A line that is not a whole
    record (a writer killed mid-line), not UTF-8, not JSON gpubench writes (NaN, nesting
    too deep) or not a ``kind`` this gpubench can read (foreign JSON, a newer schema, a
    value of the wrong type: :mod:`gpubench.contracts.schema`) is skipped with a warning
    naming the file, the line and why; the records around it are kept."""
    records = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = parse_json(line)
            except SchemaError as exc:
                _skipped(path, number, str(exc))
                continue
            try:
                records.append(read(data))
            except READ_ERRORS as exc:
                _skipped(path, number, f"not a {kind} ({type(exc).__name__}: {exc})")
    return records


def read_results(path: Path) -> list[Result]:
    """All Results of a results.jsonl (:func:`read_json_lines`)."""
    return read_json_lines(path, Result.from_dict, "Result")


class NotAResultsFile(ValueError):
    """A file :func:`read_results_file` refuses; the message names it and says why."""


def read_results_file(path: Path, stacklevel: int = 2) -> list[Result]:
    """The Results of a file that must hold some (``gpubench compare``, ``gpubench report``).

    A file that cannot be read, or holds no Result, raises :class:`NotAResultsFile` with
    the first reason a line was skipped; the skipped lines of a file that has Results stay
    warnings, raised at the caller's ``stacklevel``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = read_results(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise NotAResultsFile(f"{path}: not a results file (cannot read it: {exc})") from None
    if not results:
        why = f": {caught[0].message}" if caught else ": it is empty"
        raise NotAResultsFile(f"{path}: not a results file, no Result in it{why}")
    for warning in caught:
        warnings.warn(warning.message, stacklevel=stacklevel + 1)
    return results


def _skipped(path: Path, number: int, why: str) -> None:
    warnings.warn(safe_text(f"{path}:{number}: skipped a line that is {why}"), stacklevel=4)
