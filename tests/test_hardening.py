"""Issue 18, finding 8's smaller holes: a baseline lock waited on forever, profile memory
beyond what the worker can use, control characters from user text on the terminal and
in report.md, recommended.json over a file gpubench did not write, the report's two
files at one path, and two sessions sharing a run id."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import statuses

import gpubench.locking
from gpubench.baseline.store import save_runs
from gpubench.contracts.errors import CaseError
from gpubench.contracts.profiles import HardwareProfile, ProfileError, resolve_profile
from gpubench.contracts.result import ErrorInfo, Result
from gpubench.contracts.text import safe_text
from gpubench.locking import LockTimeout
from gpubench.outcomes import assert_healthy
from gpubench.report.document import ReportData
from gpubench.report.write import RECOMMENDED_FILE, write_report
from gpubench.storage import RunIdTaken, RunStore, append_json_line, new_run_id

# what a user's exception may carry: clear the screen, set the window title, return to
# the line's start, a one-byte CSI, a right-to-left override
HOSTILE = "boom\x1b[2J\x1b]0;owned\x07\r\x9b1m\u202eevil"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


# -- the lock -------------------------------------------------------------------------------
@pytest.fixture
def held(tmp_path: Path) -> object:
    """A process holding an exclusive flock on ``<tmp>/suite.json.lock`` and
    ``<tmp>/results.jsonl``, until the test ends."""
    code = (
        "import fcntl, os, sys, time\n"
        "for name in sys.argv[1:]:\n"
        "    fd = os.open(name, os.O_RDWR | os.O_CREAT)\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    paths = [str(tmp_path / "suite.json.lock"), str(tmp_path / "results.jsonl")]
    holder = subprocess.Popen(
        [sys.executable, "-c", code, *paths], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("writer", ["baseline save", "results append"])
def test_a_held_lock_is_waited_for_with_a_bound_naming_its_holder(
    tmp_path: Path,
    held: subprocess.Popen[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    writer: str,
) -> None:
    monkeypatch.setattr(gpubench.locking, "LOCK_WAIT_S", 1.0)
    monkeypatch.setattr(gpubench.locking, "SAY_AFTER_S", 0.2)
    start = time.monotonic()
    with pytest.raises(LockTimeout, match=rf"still locked after 1 s, by pid {held.pid} \("):
        if writer == "baseline save":
            save_runs(tmp_path / "suite.json", [])
        else:
            append_json_line(tmp_path / "results.jsonl", {"a": 1})
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert err.count(f"locked by pid {held.pid} (") == 1  # said once, while waiting


# -- profile memory -------------------------------------------------------------------------
@pytest.mark.parametrize("memory", ["2048TiB", "9223372036854775807", "99999999999999999999999"])
def test_profile_memory_beyond_what_the_worker_can_use_is_refused_at_parse_time(
    memory: str,
) -> None:
    with pytest.raises(ProfileError, match=rf"memory '{memory}' is \d+ bytes, above 1 PiB.*"):
        resolve_profile(f"cpu:{memory}")
    assert resolve_profile("cpu:1024TiB").memory_bytes == 1024**5  # 1 PiB: the largest


def test_a_profile_record_beyond_1_pib_is_refused_whatever_made_it() -> None:
    with pytest.raises(ProfileError, match="valid: 1 MiB to 1 PiB"):
        dataclasses.replace(resolve_profile("cpu"), memory_bytes=2**62)
    with pytest.raises(ProfileError):
        HardwareProfile.from_dict(resolve_profile("cpu").to_dict() | {"memory_bytes": 2**63 - 1})


# -- control characters ---------------------------------------------------------------------
def test_safe_text_escapes_control_characters_and_keeps_lines() -> None:
    text = safe_text(f"a {HOSTILE}\n\tb")
    assert not any(c in text for c in RAW)
    assert "\\x1b[2J" in text and "\\u202e" in text and "\n\tb" in text
    assert safe_text("one\ntwo", lines=False) == "one\\x0atwo"


def _hostile_result() -> Result:
    crashed = next(r for r in statuses() if r.status == "crashed")
    assert crashed.error is not None
    error = ErrorInfo(type="RuntimeError", message=HOSTILE, stderr_tail=f"tail {HOSTILE}")
    return dataclasses.replace(crashed, error=error)


def test_user_exception_text_reaches_no_terminal_raw() -> None:
    from gpubench.session.progress import LiveProgress

    result = _hostile_result()
    with pytest.raises(AssertionError) as failed:
        assert_healthy(result)
    assert "boom\\x1b[2J" in str(failed.value) and not any(c in str(failed.value) for c in RAW)
    lines: list[str] = []
    progress = LiveProgress(object(), live=False, verbose=True, write_line=lines.append)
    progress.case_finished(result)
    progress.case_reported(f"case {HOSTILE}", 1.0)
    assert len(lines) == 2 and not any(c in line for line in lines for c in RAW)


def test_a_report_shows_user_text_escaped_in_markdown_and_html(tmp_path: Path) -> None:
    result = _hostile_result()
    write_report(ReportData([result]), tmp_path / "r.html", tmp_path / "r.md")
    for page in ("r.md", "r.html"):
        text = (tmp_path / page).read_text()
        assert "boom\\x1b[2J" in text, page
        assert not any(c in text for c in RAW), page


def test_a_case_name_with_control_characters_is_refused_or_escaped() -> None:
    """The terminal's summary and the gate's tables print case ids: a name either cannot
    hold a control character, or it is escaped on the way out (finish's lines)."""
    ok = statuses()[0]
    try:
        case = ok.case.replace(name=f"n{HOSTILE}")
    except CaseError:
        return
    from gpubench.session.summary import format_summary

    lines = [safe_text(line) for line in format_summary([dataclasses.replace(ok, case=case)])]
    assert not any(c in line for line in lines for c in RAW)


# -- the report's files ---------------------------------------------------------------------
def test_recommended_json_never_replaces_a_file_gpubench_did_not_write(tmp_path: Path) -> None:
    theirs = tmp_path / RECOMMENDED_FILE
    theirs.write_text('{"mine": true}\n')
    with pytest.warns(UserWarning, match="gpubench did not write; left as it is"):
        written = write_report(ReportData(statuses()), tmp_path / "x.html")
    assert written.recommended is None
    assert theirs.read_text() == '{"mine": true}\n'
    theirs.unlink()  # gpubench's own is replaced by the next report
    assert write_report(ReportData(statuses()), tmp_path / "x.html").recommended == theirs
    first = theirs.read_text()
    assert write_report(ReportData(statuses()), tmp_path / "x.html").recommended == theirs
    assert json.loads(theirs.read_text()) == json.loads(first)


def test_the_page_and_the_markdown_at_one_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give two paths"):
        write_report(ReportData(statuses()), tmp_path / "r.md", tmp_path / "r.md")
    assert list(tmp_path.iterdir()) == []


# -- run ids --------------------------------------------------------------------------------
def test_two_sessions_started_in_the_same_second_never_share_a_run_dir(tmp_path: Path) -> None:
    ids = [new_run_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i.rsplit("-", 1)[1]) == 16 for i in ids)  # 64 random bits
    first, second = RunStore(tmp_path, ids[0], "session-a"), RunStore(tmp_path, ids[1], "session-b")
    first.create()
    second.create()
    assert first.dir != second.dir


def test_a_run_id_drawn_twice_is_refused_not_merged(tmp_path: Path) -> None:
    run_id = new_run_id()
    RunStore(tmp_path, run_id, "session-a").create()
    RunStore(tmp_path, run_id, "session-a").create()  # its other xdist worker: the same run
    with pytest.raises(RunIdTaken, match=f"run id {run_id} is another session's run"):
        RunStore(tmp_path, run_id, "session-b").create()


def _claim_at_once(root: str, run_id: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        RunStore(Path(root), run_id, "one-session").create()
    except RunIdTaken as exc:
        errors.put(str(exc))


def test_workers_of_one_session_claiming_its_run_at_once_never_refuse_each_other(
    tmp_path: Path,
) -> None:
    """The marker is whole or absent: a worker that lost the race read an empty one
    (CI: an xdist worker's case errored with RunIdTaken against its own session)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(20):
        barrier = context.Barrier(4)
        run_id = f"{new_run_id()}-{round_}"
        workers = [
            context.Process(target=_claim_at_once, args=(str(tmp_path), run_id, barrier, errors))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert all(worker.exitcode == 0 for worker in workers)
    assert errors.empty(), errors.get()
    assert not list(tmp_path.glob("*/.session.*.tmp"))  # no temporary marker left
