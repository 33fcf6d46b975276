"""The end of a session: what it prints and writes once every case has run.

In order: the summary table and the results path, the pytest-benchmark file (when
asked), the gate's table and ``summary.md`` (and ``$GITHUB_STEP_SUMMARY``), then
``invocation.json``, the report and the TensorBoard export. Each of these side outputs
costs only itself when it fails: a red line names it, the path and why, the rest is
still written, and the session's exit code stays pytest's own. A report that fails says
the command that renders it again. What can be checked before the first case (the
folders of the baseline, the benchmark file and the report) is checked at configure
(:mod:`gpubench.plugin`).

It writes through a :class:`Terminal`, which pytest's terminal reporter is; every line
of user text on it (case names, error messages) goes through
:func:`~gpubench.contracts.text.safe_text` first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gpubench.contracts.text import safe_text
from gpubench.storage import Invocation

if TYPE_CHECKING:
    from gpubench.baseline.compare import CaseVerdict
    from gpubench.contracts.result import Result
    from gpubench.session.bench import BenchSession


class Terminal(Protocol):
    def write_sep(self, sep: str, title: str) -> object: ...

    def write_line(self, line: str, **markup: bool) -> object: ...


def finish(bench: BenchSession, terminal: Terminal, invocation: Invocation) -> None:
    """Print and write the session's outputs; nothing when no case ran."""
    results = bench.results()
    if not results:
        return
    _summary(bench, terminal, results)
    verdicts = bench.verdicts()
    if verdicts:
        from gpubench.baseline.table import format_verdicts

        terminal.write_sep("=", "gpubench gate (against baselines)")
        for line in format_verdicts(verdicts).splitlines():
            terminal.write_line(safe_text(line))
        _gate_summary(bench, terminal, verdicts)
    _report(bench, terminal, results, verdicts, invocation)


def _side_output(terminal: Terminal, what: str, path: object, write: Callable[[], object]) -> bool:
    """Call ``write``; an OSError costs only this output: a line naming it, ``path`` and
    why. Whether it was written."""
    try:
        write()
    except OSError as exc:
        terminal.write_line(
            f"gpubench: {what} not written to {path} ({type(exc).__name__}: {exc}); "
            "the rest of the run's outputs are",
            red=True,
        )
        return False
    return True


def _summary(bench: BenchSession, terminal: Terminal, results: list[Result]) -> None:
    from gpubench.session.summary import format_summary  # pandas: only when there is a table

    terminal.write_sep("=", "gpubench summary")
    for line in format_summary(results).splitlines():
        terminal.write_line(safe_text(line))
    terminal.write_line(f"results: {bench.store.results_path}")
    path = bench.options.report.benchmark_json
    if path is not None and _side_output(
        terminal, "pytest-benchmark json", path, lambda: bench.write_benchmark_json(path, results)
    ):
        terminal.write_line(f"pytest-benchmark json: {path}")


def _gate_summary(bench: BenchSession, terminal: Terminal, verdicts: list[CaseVerdict]) -> None:
    """``summary.md`` in the run, then ``$GITHUB_STEP_SUMMARY``: each on its own."""
    text = bench.gate_summary_text(verdicts)
    path = bench.store.summary_path
    if _side_output(terminal, "gate summary", path, lambda: bench.write_gate_summary(text)):
        terminal.write_line(f"gate summary: {path}")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        _side_output(
            terminal,
            "$GITHUB_STEP_SUMMARY",
            step_summary,
            lambda: bench.append_step_summary(step_summary, text),
        )


def _report(
    bench: BenchSession,
    terminal: Terminal,
    results: list[Result],
    verdicts: list[CaseVerdict],
    invocation: Invocation,
) -> None:
    """invocation.json, the run's report and TensorBoard export."""
    with warnings.catch_warnings(record=True) as caught:  # said here, not lost at exit
        warnings.simplefilter("always")
        try:
            written = bench.write_report(results, verdicts, invocation)
        except Exception as exc:
            terminal.write_line(
                safe_text(
                    f"gpubench report: not written ({type(exc).__name__}: {exc}); "
                    f"render it with `gpubench report {bench.store.dir}`"
                ),
                red=True,
            )
        else:
            for path in written.paths if written else []:
                terminal.write_line(f"report: {path}")
    for warning in caught:  # invocation.json or recommended.json not written
        terminal.write_line(safe_text(f"gpubench: {warning.message}"), red=True)
    tensorboard = bench.options.report.tensorboard
    if tensorboard is not None:
        from gpubench.report.tensorboard import TensorBoardMissing

        try:
            if _side_output(
                terminal, "TensorBoard", tensorboard, lambda: bench.export_tensorboard(results)
            ):
                terminal.write_line(f"tensorboard: {tensorboard}")
        except TensorBoardMissing as exc:
            terminal.write_line(f"gpubench: {exc}", yellow=True)
