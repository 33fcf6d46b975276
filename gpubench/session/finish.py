"""The end of a session: what it prints and writes once every case has run.

In order: the summary table and the results path, the pytest-benchmark file (when
asked), the gate's table and ``summary.md`` (and ``$GITHUB_STEP_SUMMARY``), then
``invocation.json``, the report and the TensorBoard export. A report that fails costs
the report, not the run: it is said, with the command that renders it again.

It writes through a :class:`Terminal`, which pytest's terminal reporter is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

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
            terminal.write_line(line)
        terminal.write_line(f"gate summary: {bench.write_gate_summary(verdicts)}")
    _report(bench, terminal, results, verdicts, invocation)


def _summary(bench: BenchSession, terminal: Terminal, results: list[Result]) -> None:
    from gpubench.session.summary import format_summary  # pandas: only when there is a table

    terminal.write_sep("=", "gpubench summary")
    for line in format_summary(results).splitlines():
        terminal.write_line(line)
    terminal.write_line(f"results: {bench.store.results_path}")
    benchmark_json = bench.options.report.benchmark_json
    if benchmark_json is not None:
        bench.write_benchmark_json(benchmark_json, results)
        terminal.write_line(f"pytest-benchmark json: {benchmark_json}")


def _report(
    bench: BenchSession,
    terminal: Terminal,
    results: list[Result],
    verdicts: list[CaseVerdict],
    invocation: Invocation,
) -> None:
    """The run's report and TensorBoard export."""
    try:
        written = bench.write_report(results, verdicts, invocation)
    except Exception as exc:
        terminal.write_line(
            f"gpubench report: not written ({type(exc).__name__}: {exc}); "
            f"render it with `gpubench report {bench.store.dir}`",
            red=True,
        )
    else:
        for path in written.paths if written else []:
            terminal.write_line(f"report: {path}")
    tensorboard = bench.options.report.tensorboard
    if tensorboard is not None:
        from gpubench.report.tensorboard import TensorBoardMissing

        try:
            bench.export_tensorboard(results)
        except TensorBoardMissing as exc:
            terminal.write_line(f"gpubench: {exc}", yellow=True)
        else:
            terminal.write_line(f"tensorboard: {tensorboard}")
