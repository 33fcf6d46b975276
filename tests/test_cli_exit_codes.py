"""``gpubench``'s exit codes, one per meaning (issue 18, finding 7): 0 done, 1 a regression
(``compare`` only), 2 usage or bad input it can explain, 3 an internal error. A crash
used to exit 1, which CI reads as a regression."""

from __future__ import annotations

from pathlib import Path

import pytest

import gpubench.cli
from gpubench.cli import EXIT_INTERNAL, EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, main

DATA = Path(__file__).parent / "data"
QUIET = [DATA / "gate" / f"quiet-{i}.jsonl" for i in (1, 3)]
BUSY = DATA / "gate" / "busy-1.jsonl"
RUN = DATA / "report" / "run-small-cpu"


def test_the_codes_are_distinct() -> None:
    assert len({EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERNAL}) == 4
    assert (EXIT_OK, EXIT_REGRESSION, EXIT_USAGE) == (0, 1, 2)


def test_a_regression_is_1_and_only_compare_says_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(QUIET[1]), str(BUSY)]) == EXIT_REGRESSION
    # report --baseline shows the same verdicts and renders: 0, not a gate
    code = main(["report", str(BUSY), "--baseline", str(QUIET[1]), "-o", str(tmp_path / "r.html")])
    assert code == EXIT_OK


@pytest.mark.parametrize("command", ["compare", "report", "export", "profiles"])
def test_an_internal_error_is_3_one_line_asking_for_a_report(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    def defect(*args: object, **kwargs: object) -> int:
        raise KeyError("a defect of gpubench's")

    module = getattr(gpubench.cli, command)
    monkeypatch.setattr(module, "run", defect)
    monkeypatch.delenv("GPUBENCH_DEBUG", raising=False)
    argv = {
        "compare": ["compare", str(QUIET[0]), str(QUIET[1])],
        "report": ["report", str(RUN), "-o", str(tmp_path / "r.html")],
        "export": ["export", str(RUN), "-o", str(tmp_path / "x.json")],
        "profiles": ["profiles"],
    }[command]
    assert main(argv) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert f"gpubench {command}: internal error (KeyError:" in err and "please report" in err
    monkeypatch.setenv("GPUBENCH_DEBUG", "1")
    assert main(argv) == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_crash_inside_compare_is_not_read_as_a_regression(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gpubench.baseline.offline

    def crash(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(gpubench.baseline.offline, "judge_runs", crash)
    assert main(["compare", str(QUIET[0]), str(QUIET[1])]) == EXIT_INTERNAL


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["report", "{run}", "-o", "{dir}"], "-o/--output {dir}: {dir} is a folder"),
        (
            ["report", "{run}", "-o", "{tmp}/r.html", "--md", "{dir}"],
            "--md {dir}: {dir} is a folder",
        ),
        (["report", "{run}", "-o", "{tmp}/r.x", "--md", "{tmp}/r.x"], "give two paths"),
        (["report", "{run}", "-o", "{file}/r.html"], "{file} is a file, not a folder"),
        (["compare", "{quiet}", "{quiet}", "--md", "{dir}"], "--md {dir}: {dir} is a folder"),
        (["export", "{run}", "-o", "{dir}"], "-o/--output {dir}: {dir} is a folder"),
    ],
)
def test_an_output_that_cannot_be_written_is_2_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "afile").write_text("")
    paths = {
        "run": str(RUN),
        "dir": str(out),
        "tmp": str(tmp_path),
        "file": str(tmp_path / "afile"),
        "quiet": str(QUIET[0]),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([a.format(**paths) for a in args]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert problem.format(**paths) in captured.err
    assert captured.err.count("\n") == 1
    assert captured.out == ""  # refused before the table or any path was printed
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, half or whole


def test_an_os_error_while_writing_is_2_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output that passed the check and then failed (a disk full, a folder made
    read-only meanwhile): the path and the reason, exit 2, no traceback."""
    import gpubench.contracts.protocol as protocol

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(protocol.os, "fsync", full)
    assert main(["export", str(RUN), "-o", str(tmp_path / "x.json")]) == EXIT_USAGE
    assert f"{tmp_path / 'x.json'}: No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
