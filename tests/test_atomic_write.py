"""Every file gpubench writes goes through one atomic write
(:func:`gpubench.contracts.protocol.write_text_atomic`): a temporary file made with
``O_CREAT | O_EXCL`` under a random name in the target's folder, so a symbolic link
another user planted there is never followed, and no temporary file is left behind by
an error.

Issue 18, finding 6: ``.NAME.<pid>.tmp`` was opened with ``open(..., "w")``; a link
planted at that name made root's ``gpubench report -o /tmp/r2.html`` overwrite a file
the link pointed to.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from gpubench.baseline.store import save_runs
from gpubench.contracts import protocol
from gpubench.contracts.protocol import write_json_atomic, write_text_atomic
from gpubench.storage import Invocation, RunStore

VICTIM_TEXT = "root's secret\n"


def _plant(folder: Path, name: str, victim: Path) -> list[Path]:
    """Links at every temporary name the old writers used for ``name`` (this pid's, and
    the validation kit's ``NAME.tmp``), all pointing at ``victim``."""
    links = []
    for tmp_name in (f".{name}.{os.getpid()}.tmp", f"{name}.tmp"):
        link = folder / tmp_name
        link.symlink_to(victim)
        links.append(link)
    return links


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o600)
    return path


def _writers(folder: Path) -> dict[str, tuple[str, Callable[[], object]]]:
    """Each writer of gpubench, the file name it writes in ``folder``, and how to call it."""
    from gpubench.report.write import _write as report_write
    from gpubench.validation.kit import _write_text as kit_write

    store = RunStore(folder.parent, folder.name)
    return {
        "write_json_atomic": ("result.json", lambda: write_json_atomic(folder / "result.json", {})),
        "write_text_atomic": ("page.html", lambda: write_text_atomic(folder / "page.html", "x")),
        "report": ("r2.html", lambda: report_write(folder / "r2.html", "<p>")),
        "baseline": ("suite.json", lambda: save_runs(folder / "suite.json", [])),
        "invocation": ("invocation.json", lambda: store.write_invocation(Invocation((), "/"))),
        "kit": ("validation.md", lambda: kit_write(folder / "validation.md", "x")),
    }


WRITERS = ["write_json_atomic", "write_text_atomic", "report", "baseline", "invocation", "kit"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_planted_symlink_is_never_followed(tmp_path: Path, victim: Path, writer: str) -> None:
    folder = tmp_path / "shared-tmp"
    folder.mkdir()
    name, write = _writers(folder)[writer]
    links = _plant(folder, name, victim)
    write()
    assert victim.read_text() == VICTIM_TEXT  # the link's target is untouched
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (folder / name).is_file() and not (folder / name).is_symlink()
    for link in links:  # the planted links are left as they were, and nothing else is left
        assert link.is_symlink()
    left = {p.name for p in folder.iterdir()} - {f"{name}.lock"}  # the baseline's lock stays
    assert left == {name, *(p.name for p in links)}


def test_the_temporary_file_is_created_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever its name, the temporary file is made with O_EXCL: an attacker who guessed
    it (here: every name is guessed, by a link planted at each one before the open) gets
    an error or a fresh name, never the write."""
    opened: list[int] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".tmp"):
            opened.append(flags)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    write_text_atomic(tmp_path / "a.txt", "x")
    assert opened and all(f & os.O_CREAT and f & os.O_EXCL for f in opened)


def test_an_error_mid_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "result.json").write_text('{"old": 1}')

    def fail(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(protocol.os, "fsync", fail)
    with pytest.raises(OSError, match="I/O error"):
        write_json_atomic(tmp_path / "result.json", {"new": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert json.loads((tmp_path / "result.json").read_text()) == {"old": 1}
    with pytest.raises(ValueError):  # NaN is refused before anything is created
        write_json_atomic(tmp_path / "other.json", {"x": float("nan")})
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_the_file_gets_the_mode_a_new_file_would(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_a_final_path_that_is_a_link_is_replaced_not_followed(tmp_path: Path, victim: Path) -> None:
    """os.replace renames over the link itself: the file it pointed to is untouched."""
    (tmp_path / "out.html").symlink_to(victim)
    write_text_atomic(tmp_path / "out.html", "<p>")
    assert victim.read_text() == VICTIM_TEXT
    assert not (tmp_path / "out.html").is_symlink()


def test_gitignore_covers_a_temporary_file_left_by_a_kill() -> None:
    root = Path(__file__).resolve().parent.parent
    patterns = (root / ".gitignore").read_text().splitlines()
    assert ".*.tmp" in patterns


# -- the one reader of a contained child's answer ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "missing"),
        (b"", "empty"),
        (b'{"status": "ok"', "cut off mid-write by a kill"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"loss": NaN}', "NaN, which gpubench never writes"),
        (b"[" * 100_000 + b"]" * 100_000, "nested past the parser's recursion limit"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "an integer Python refuses to parse"),
        (b"[1, 2]", "not an object"),
    ],
)
def test_an_answer_no_child_would_write_reads_as_none(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    """The worker's result.json and the estimate child's answer go through one reader
    (runner/process.py, estimate/isolated.py); whatever is there, it answers None, never
    raises (the caller then says the child ended without an answer)."""
    path = tmp_path / "result.json"
    if content is not None:
        path.write_bytes(content)
    assert protocol.read_answer(path) is None, why


def test_an_answer_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, {"status": "ok", "metrics": {"n": 3}})
    assert protocol.read_answer(path) == {"status": "ok", "metrics": {"n": 3}}


def test_both_contained_children_are_read_by_the_one_reader() -> None:
    import inspect

    from gpubench.estimate import isolated
    from gpubench.runner import process

    for module in (isolated, process):
        source = inspect.getsource(module)
        assert "read_answer(" in source and "json.loads(paths.result" not in source
