"""`gpubench report` from saved runs, and the report a pytest run writes at its end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import QUIET, RUN_CPU, RUN_SMALL

# pytester restores sys.modules after each in-process run, and numpy (under pandas and
# matplotlib) cannot be imported twice in one process: load the report's modules first.
import gpubench.report.tensorboard  # noqa: F401
import gpubench.report.write  # noqa: F401
import gpubench.session.summary  # noqa: F401
from gpubench.baseline.store import save_runs
from gpubench.cli import main
from gpubench.storage import read_results

pytest_plugins = ("pytester",)
TINY = 'model="gpt-tiny", batch_size=4, seq_len=32, steps=6, warmup=2, lr=1e-3'


def test_report_merges_runs_and_writes_html_markdown_and_the_recommendation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    code = main(
        ["report", str(RUN_CPU), str(RUN_SMALL / "results.jsonl"), "-o", str(html), "--md", str(md)]
    )
    assert code == 0
    assert capsys.readouterr().out.split() == [
        str(html),
        str(md),
        str(tmp_path / "recommended.json"),
    ]
    page = html.read_text()
    # one verdict per profile; the cpu run's broken model is a workload of its own
    assert "<h3>cpu: 2 workloads" in page and "<h3>small-cpu <span" in page
    assert "The command that ran this report" in page  # run-cpu recorded its command line
    assert "Charts and per-step curves: r.html" in md.read_text()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.jsonl", "no such file or directory"),
        (lambda d: d, "a directory without results.jsonl"),
        (lambda d: _write(d / "x.jsonl", "not json\n"), "not a results file, no Result"),
        (lambda d: _write(d / "x.png", "\x89PNG\x00\xff"), "not a results file"),
    ],
)
def test_report_exits_2_naming_a_path_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, problem: str
) -> None:
    path = make(tmp_path)
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpubench report: error: {path}") and problem in err
    assert not (tmp_path / "r.html").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="latin-1")
    return path


def test_report_against_a_baseline_judges_by_the_gates_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in QUIET[2:7]:
        save_runs(tmp_path / "bl" / "cpu" / "test_cpu_smoke.json", read_results(path))
    args = [
        "report",
        str(QUIET[7]),
        "--baseline",
        str(tmp_path / "bl"),
        "-o",
        str(tmp_path / "r.html"),
    ]
    assert main(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert 'id="baseline"' in page and "vs the spread of 5 baseline runs" in page
    # the same history given as five results files, merged
    files = [str(p) for p in QUIET[2:7]]
    assert (
        main(["report", str(QUIET[7]), "--baseline", *files, "-o", str(tmp_path / "f.html")]) == 0
    )
    merged = (tmp_path / "f.html").read_text()
    assert merged.split('id="baseline"')[1] == page.split('id="baseline"')[1]


def test_report_projection_options_and_their_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml: no [tool.gpubench.projection] (the
    # repository's own sets epochs and a data set's size for its suites)
    out = tmp_path / "r.html"
    args = ["report", str(RUN_SMALL), "-o", str(out), "--train-tokens", "10B", "--max-hours", "72"]
    assert main(args) == 0
    assert "10B tokens" in out.read_text() and "(exceeds 72.0 h)" in out.read_text()
    assert main(["report", str(RUN_SMALL), "--epochs", "3", "-o", str(out)]) == 2
    assert "need the data set's size" in capsys.readouterr().err
    assert main(["report", str(RUN_SMALL), "--train-tokens", "many"]) == 2
    assert "--train-tokens='many': expected a number of tokens" in capsys.readouterr().err


def test_a_run_ends_by_writing_its_report_and_prints_the_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--gpu-profile", "cpu", "--gpubench-train-tokens", "1M", "--gpubench-tensorboard", "tb"
    )
    result.assert_outcomes(passed=1)
    run = (pytester.path / "reports" / "latest").resolve()
    result.stdout.fnmatch_lines(
        [
            f"report: {run}/report.html",
            f"report: {run}/report.md",
            f"report: {run}/recommended.json",
        ]
    )
    page = (run / "report.html").read_text()
    assert 'id="projections"' in page and "1M tokens" in page
    assert "--gpubench-train-tokens 1M" in page  # the exact command line, to rerun it
    assert "--gpubench-train-tokens" in json.loads((run / "invocation.json").read_text())["args"]
    assert list((pytester.path / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("where", ["elsewhere/page.html", "none"])
def test_the_report_option_moves_or_turns_off_the_report(tmp_path: Path, where: str) -> None:
    """What the session writes for --gpubench-report PATH and none (a run's end calls the
    same method; the test above runs one whole)."""
    from gpubench.options import report_path
    from gpubench.report.load import load_runs
    from gpubench.session.bench import BenchSession
    from gpubench.session.settings import REPORT_OFF, ReportOptions, SessionOptions
    from gpubench.storage import Invocation

    value = report_path(where, "--gpubench-report")
    options = SessionOptions(
        reports_dir=tmp_path / "reports",
        run_id="run-1",
        report=ReportOptions(
            enabled=value != REPORT_OFF,
            html=tmp_path / value if isinstance(value, Path) else None,
        ),
    )
    session = BenchSession(options)
    results = list(load_runs([RUN_CPU]).results)
    written = session.write_report(results, [], Invocation(("-k", "x"), str(tmp_path)))
    assert (tmp_path / "reports" / "run-1" / "invocation.json").is_file()  # always
    if where == "none":
        assert written is None and not list(tmp_path.rglob("report.*"))
    else:
        assert written is not None
        assert written.paths == [
            tmp_path / "elsewhere" / "page.html",
            tmp_path / "elsewhere" / "page.md",
            tmp_path / "elsewhere" / "recommended.json",
        ]


def test_a_bad_report_option_stops_the_run_before_any_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--gpu-profile", "cpu", "--gpubench-epochs", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*epochs=3 need the data set's size*"])
    pytester.makepyprojecttoml("[tool.gpubench.projection]\nmax_hour = 72\n")
    result = pytester.runpytest_subprocess("--gpu-profile", "cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown key(s) max_hour; valid: *max_hours*"])
    assert not (pytester.path / "reports").exists()
