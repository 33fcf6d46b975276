"""The end of a session's side outputs (issue 18, finding 5): what can be checked before the
first case is a usage error then; a side output that fails at the end costs only itself
(a line naming it, the path and why), the rest is still written, and pytest's exit code
stands.

These tests run as root here, where ``chmod`` stops no write: a path is made unwritable
by a regular file in the way (``FILE/x``: NotADirectoryError) or a folder where the
file goes (IsADirectoryError); the ``chmod`` variants run only as another user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gpubench.session.summary  # noqa: F401  (numpy is imported once: see test_plugin.py)
from gpubench.baseline.offline import judge_runs
from gpubench.baseline.rules import GateRules
from gpubench.baseline.sources import load_histories
from gpubench.session.bench import BenchSession
from gpubench.session.finish import finish
from gpubench.session.settings import ReportOptions, SessionOptions
from gpubench.storage import Invocation, append_json_line

pytest_plugins = ("pytester",)

DATA = Path(__file__).parent / "data" / "gate"
ROOT = os.geteuid() == 0
CASE = """
import gpubench
from pathlib import Path

@gpubench.single_case(model="gpt2-small", batch_size=8, seq_len=1024, requires_gpu=True)
def test_one(gpubench_result):
    Path("case-ran").write_text("yes")
    {body}
"""


class Lines:
    """A terminal that keeps what is written."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"== {title}")

    def write_line(self, line: str, **markup: bool) -> None:
        self.lines.append(line)

    def failures(self) -> list[str]:
        return [line for line in self.lines if "not written" in line]


def _session(tmp_path: Path, benchmark_json: Path) -> BenchSession:
    """A finished session of 10 cases with a gate verdict each (quiet-2 against quiet-1)."""
    options = SessionOptions(
        reports_dir=tmp_path / "reports",
        run_id="run",
        report=ReportOptions(benchmark_json=benchmark_json),
    )
    bench = BenchSession(options)
    bench.store.create()
    new = load_histories(DATA / "quiet-2.jsonl")
    for runs in new.values():
        for result in runs:
            bench.store.append(result)
    for verdict in judge_runs(load_histories(DATA / "quiet-1.jsonl"), new, GateRules()):
        append_json_line(bench.store.verdicts_path, verdict.to_dict())
    return bench


def test_every_side_output_that_fails_costs_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    step_summary = tmp_path / "step-summary"
    step_summary.mkdir()  # $GITHUB_STEP_SUMMARY: a folder, not a file to append to
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    bench = _session(tmp_path, benchmark_json=in_the_way / "bench.json")
    (bench.store.dir / "invocation.json").mkdir()  # the run dir "turned read-only" for these
    (bench.store.dir / "summary.md").mkdir()
    terminal = Lines()
    finish(bench, terminal, Invocation(("suites",), str(tmp_path)))  # raises nothing
    failures = terminal.failures()
    for what, path in [
        ("pytest-benchmark json", in_the_way / "bench.json"),
        ("gate summary", bench.store.dir / "summary.md"),
        ("$GITHUB_STEP_SUMMARY", step_summary),
        ("invocation.json", bench.store.dir / "invocation.json"),
    ]:
        assert any(
            line.startswith(f"gpubench: {what} not written to {path} (") for line in failures
        )
    assert len(failures) == 4, failures
    # the rest was written: the tables, the report beside the run
    assert any(line == "== gpubench gate (against baselines)" for line in terminal.lines)
    assert (bench.store.dir / "report.html").is_file() and (bench.store.dir / "report.md").is_file()
    assert f"report: {bench.store.dir / 'report.html'}" in terminal.lines


def test_a_report_that_cannot_be_written_leaves_the_other_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    bench = _session(tmp_path, benchmark_json=tmp_path / "out" / "bench.json")
    (bench.store.dir / "report.html").mkdir()
    terminal = Lines()
    finish(bench, terminal, Invocation(("suites",), str(tmp_path)))
    assert (tmp_path / "out" / "bench.json").is_file()
    assert (bench.store.dir / "summary.md").is_file()
    assert (bench.store.dir / "invocation.json").is_file()
    assert any(line.startswith("gpubench report: not written (") for line in terminal.lines)


@pytest.mark.skipif(ROOT, reason="root writes in a read-only folder")
def test_a_run_dir_made_read_only_mid_run_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    bench = _session(tmp_path, benchmark_json=tmp_path / "bench.json")
    bench.store.dir.chmod(0o555)
    try:
        terminal = Lines()
        finish(bench, terminal, Invocation((), str(tmp_path)))
    finally:
        bench.store.dir.chmod(0o755)
    assert (tmp_path / "bench.json").is_file()
    assert any("invocation.json not written" in line for line in terminal.failures())


def test_a_session_whose_outputs_fail_at_the_end_exits_as_its_tests_did(
    pytester: pytest.Pytester,
) -> None:
    """End to end: the test body puts a folder where the benchmark file and the run's
    report go (what a disk made read-only mid-run does to them), then passes."""
    body = 'Path("bench.json").mkdir(); Path("reports/latest/report.html").mkdir()'
    pytester.makepyfile(test_out=CASE.format(body=body))
    result = pytester.runpytest(
        "--gpu-profile", "rtx3060", "--gpubench-estimate-only", "--gpubench-benchmark-json",
        "bench.json", "-p", "no:cacheprovider",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["gpubench: pytest-benchmark json not written to *bench.json (IsADirectoryError*"]
    )
    result.stdout.fnmatch_lines(["gpubench report: not written (IsADirectoryError*"])
    assert "Traceback" not in result.stdout.str()
    assert (pytester.path / "reports" / "latest" / "invocation.json").is_file()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["--gpubench-save-baseline", "--gpubench-baseline-dir", "a-file"],
            "*--gpubench-save-baseline into */a-file: */a-file is a file, not a folder*",
        ),
        (
            ["--gpubench-save-baseline", "--gpubench-baseline-dir", "a-file/baselines"],
            "*--gpubench-save-baseline into */a-file/baselines: */a-file is a file, not a folder*",
        ),
        (
            ["--gpubench-benchmark-json", "a-file/bench.json"],
            "*--gpubench-benchmark-json */a-file/bench.json: */a-file is a file, not a folder*",
        ),
        (
            ["--gpubench-benchmark-json", "a-dir"],
            "*--gpubench-benchmark-json */a-dir: * is a folder*",
        ),
        (["--gpubench-report", "a-dir"], "*--gpubench-report */a-dir: */a-dir is a folder*"),
        (["--gpubench-report", "a-file/r.html"], "*--gpubench-report */a-file/r.html: *"),
        (["--gpubench-report", "out.md"], "*--gpubench-report='out.md': expected the HTML page's*"),
        (["--gpubench-tensorboard", "a-file"], "*--gpubench-tensorboard */a-file: *is a file*"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_case_runs(
    pytester: pytest.Pytester, args: list[str], problem: str
) -> None:
    pytester.makepyfile(test_out=CASE.format(body="pass"))
    (pytester.path / "a-file").write_text("")
    (pytester.path / "a-dir").mkdir()
    result = pytester.runpytest("--gpu-profile", "cpu", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {problem}"])
    assert not (pytester.path / "case-ran").exists()
    assert not (pytester.path / "reports").exists()


@pytest.mark.skipif(ROOT, reason="root writes in a read-only folder")
def test_a_read_only_baseline_dir_is_refused_before_any_case_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_out=CASE.format(body="pass"))
    (pytester.path / "baselines").mkdir(mode=0o555)
    result = pytester.runpytest("--gpu-profile", "cpu", "--gpubench-save-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baselines is not writable by this user*"])
    assert not (pytester.path / "case-ran").exists()
