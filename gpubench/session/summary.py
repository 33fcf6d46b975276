"""The end-of-session table: one row per case, the figures a person would copy out, in the
terminal's width.

Figures are written by :mod:`gpubench.report.figures`, as the report's Markdown and HTML
write them. The table fits the width it is given (pytest's terminal width, which
honours ``COLUMNS``): the columns that matter most are always there, the others are
added in :data:`OPTIONAL` order while they fit, and a case id too long for its column
goes on a line of its own, with its figures on the next: ids stay whole, for ``-k``.
Room for a short flag column (:data:`FLAG`) is always kept."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

import pandas as pd

from gpubench.contracts.conditions import busy_sentence, cold_sentence
from gpubench.contracts.plausibility import implausible_reasons, result_mfu
from gpubench.contracts.result import Result
from gpubench.report import figures, quality
from gpubench.report.trust import MIN_MEASURED_STEPS, has_spread

CASE = "case"
FLAG = "flag"  # short markers, each explained below the table
FLAG_WIDTH = 8  # kept free for the flag column even when no row has a flag yet
PRECISION = "±%"  # the median tok/s's confidence interval, half-width / median
PREDICTED = "pred tok/s"  # an estimate-only case's predicted range, never a measurement
QUALITY = "quality"  # held-out loss vs the quality reference's (gpubench.report.quality)
ESSENTIAL = (
    CASE,
    "profile",
    "status",
    FLAG,
    "tok/s",
    PREDICTED,
    PRECISION,
    "peak GiB",
    "loss",
    QUALITY,
    "time s",
)
# added left to right while the table still fits the width
OPTIONAL = ("cv%", "p10-p90", "steps", "mfu%", "step ms", "est err%", "mem", "params", "test")
ORDER = (
    CASE,
    "profile",
    "status",
    FLAG,
    "tok/s",
    PREDICTED,
    PRECISION,
    "p10-p90",
    "cv%",
    "steps",
    "mfu%",
    "step ms",
    "peak GiB",
    "mem",
    "est err%",
    "loss",
    QUALITY,
    "params",
    "time s",
    "test",
)
LEFT = (CASE, "profile", "status", FLAG, "mem", "test")  # text, left-aligned; figures right
GAP = 2  # spaces between columns
CASE_MAX = 48  # the case column's width optional columns make room for
CASE_MIN = 4  # a case column squeezed this narrow holds no id: each takes a line of its own
DEFAULT_WIDTH = 120


def _flags(result: Result) -> str:
    """Short markers, comma-separated (each one explained by :func:`_footnotes`)."""
    marks = []
    if result.implausible or implausible_reasons(result):
        marks.append("implaus")
    if busy_sentence(result.machine_load):
        marks.append("busy")
    if cold_sentence(result.cold_start):
        marks.append("cold")
    if result.imbalance:
        marks.append("imbal")
    if result.resume is not None and result.resume.verdict == "failed":
        marks.append("resume")
    return ",".join(marks)


def summary_frame(results: Sequence[Result]) -> pd.DataFrame:
    references = quality.reference_ids(results)
    rows = []
    for r in results:
        m = r.metrics
        tps = m.tokens_per_s
        step = m.step_time_s
        spread = has_spread(r)
        peak, source = m.peak_memory_bytes, m.peak_memory_source
        if r.predicted and r.estimate is not None:  # no measurement: the estimate's peak
            peak, source = r.estimate.peak_bytes, "estimate"
        rows.append(
            {
                CASE: r.case.id + (f" (rerun {r.repeat})" if r.repeat else ""),
                "profile": r.profile_name,
                "status": r.status + (" (predicted)" if r.predicted else ""),
                FLAG: _flags(r),
                "tok/s": figures.rate(tps.median if tps else None),
                "p10-p90": figures.rate_range(tps.p10, tps.p90)
                if tps and spread
                else figures.MISSING,
                PREDICTED: _predicted_rate(r),
                PRECISION: _precision(r),
                # the step time's CV, from enough steps (how sure the median is: PRECISION)
                "cv%": figures.percent(step.cv) if step and spread else figures.MISSING,
                "steps": figures.count(step.n) if step else figures.MISSING,
                "mfu%": figures.percent(result_mfu(r)),  # derived for a record before v4
                "step ms": figures.milliseconds(step.median if step else None),
                "peak GiB": figures.gib(peak) if peak else figures.MISSING,
                "mem": source or figures.MISSING,
                # the estimate against what was measured (gpubench.estimate.measured)
                "est err%": _estimate_error(r),
                "loss": figures.loss_change(m.loss_start, m.loss_end),
                QUALITY: quality.short_label(r, references),  # - where no case has a check
                "params": figures.millions(m.n_params),
                "time s": figures.seconds(r.duration_s),
                "test": (r.nodeid or "").rsplit("::", 1)[-1].split("[", 1)[0],
            }
        )
    return pd.DataFrame(rows, columns=list(ORDER))


def _precision(result: Result) -> str:
    """``±0.8``; ``±2.3!`` where a steps="auto" target was not reached (a line below the
    table says by how much: :func:`precision_lines`)."""
    m = result.metrics
    if m.precision_achieved is None:
        return figures.MISSING
    return f"±{figures.percent(m.precision_achieved)}" + (
        "!" if m.precision_reached is False else ""
    )


def _predicted_rate(result: Result) -> str:
    """An estimate-only case's predicted tokens/s range (:mod:`gpubench.estimate.throughput`);
    an executed case's prediction is in the report, beside its measurement."""
    e = result.estimate
    if not result.predicted or e is None:
        return figures.MISSING
    return figures.rate_range(e.tokens_per_s_low, e.tokens_per_s_high)


def _estimate_error(result: Result) -> str:
    error = result.estimate.error_pct if result.estimate else None
    return figures.MISSING if error is None else f"{error:+.0f}"


def terminal_width() -> int:
    """The terminal's width as pytest reads it (``COLUMNS`` first), else 120."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def _widths(frame: pd.DataFrame) -> dict[str, int]:
    return {name: max([len(name), *(len(str(v)) for v in frame[name])]) for name in frame.columns}


def _fit(frame: pd.DataFrame, width: int) -> tuple[list[str], dict[str, int]]:
    """The columns shown and their widths: the essential ones that say something (not a
    column of dashes); each optional one that fits beside a case column of up to
    :data:`CASE_MAX`; then the case column widened into what is left, up to its longest
    id (a longer id goes on a line of its own). Where even that is too wide, the last
    essential columns go."""
    natural = _widths(frame)
    natural[FLAG] = max(natural[FLAG], FLAG_WIDTH)
    blank = {c for c in frame.columns if c not in (CASE, "status", FLAG) and _all_missing(frame[c])}
    shown = [c for c in ESSENTIAL if c not in blank]

    def others(columns: list[str]) -> int:
        """Width of ``columns`` but the case's, with every gap."""
        return sum(natural[c] for c in columns if c != CASE) + GAP * (len(columns) - 1)

    while others(shown) + CASE_MIN > width and len(shown) > 3:
        shown.pop()  # the least needed essential column: time, then loss, then peak...
    case_width = min(natural[CASE], CASE_MAX)
    for column in OPTIONAL:
        if column not in blank and others([*shown, column]) + case_width <= width:
            shown.append(column)
    widths = {c: natural[c] for c in shown}
    widths[CASE] = max(CASE_MIN, min(natural[CASE], width - others(shown)))
    return _ordered(shown), widths


def _all_missing(values: pd.Series) -> bool:
    return bool((values.astype(str).isin(["", figures.MISSING])).all())


def _ordered(columns: list[str]) -> list[str]:
    return [c for c in ORDER if c in columns]


def _line(cells: dict[str, str], columns: list[str], widths: dict[str, int]) -> str:
    parts = [cells[c].ljust(widths[c]) if c in LEFT else cells[c].rjust(widths[c]) for c in columns]
    return (" " * GAP).join(parts).rstrip()


def format_table(frame: pd.DataFrame, width: int) -> str:
    columns, widths = _fit(frame, width)
    lines = [_line({c: c for c in columns}, columns, widths)]
    for row in frame.to_dict("records"):
        cells = {c: str(row[c]) for c in columns}
        if len(cells[CASE]) > widths[CASE]:  # the whole id on its own line, figures below
            case = cells[CASE]
            lines += [case[i : i + width] for i in range(0, len(case), width)]
            cells[CASE] = ""
        lines.append(_line(cells, columns, widths))
    return "\n".join(lines)


def format_summary(results: Sequence[Result], width: int | None = None) -> str:
    """The table in ``width`` columns (default: the terminal's), with its footnotes."""
    if not results:
        return "no gpubench cases ran"
    width = width or terminal_width()
    frame = summary_frame(results)
    text = format_table(frame, width)
    columns, _ = _fit(frame, width)
    notes = []
    if PRECISION in columns and any(r.metrics.precision_achieved is not None for r in results):
        note = (
            f"{PRECISION} = how sure tok/s is: the half-width of its 95 % confidence interval "
            "over the median (a moving-block bootstrap of the measured steps)"
        )
        if any(r.metrics.precision_reached is False for r in results):
            note += '; ! = the steps="auto" target not reached (below)'
        notes.append(note)
    if "cv%" in columns and any(r.metrics.step_time_s for r in results):
        notes.append(
            "cv% = step-time coefficient of variation over the measured steps "
            f"(- with fewer than {MIN_MEASURED_STEPS})"
        )
    if "est err%" in columns and any(
        r.estimate and r.estimate.error_pct is not None for r in results
    ):
        notes.append("est err% = memory estimate vs measured peak, 100 x (est - meas) / meas")
    if QUALITY in columns and not _all_missing(frame[QUALITY]):
        notes.append(
            f"{QUALITY} = held-out loss vs the quality reference's, 100 x (eval - ref) / ref: "
            "in = within the threshold, out = above it (the test fails), ref = the reference, "
            "n/c = not compared (the report says why)"
        )
    flags = {flag for r in results for flag in _flags(r).split(",") if flag}
    if "implaus" in flags:
        notes.append("flag implaus = an implausible measurement: see the report's advice")
    if "resume" in flags:
        notes.append("flag resume = the resume check failed: the report names what differs")
    if any(r.predicted for r in results):
        notes.append("(predicted) = estimated, not run (--gpubench-estimate-only): no measurement")
    if PREDICTED in columns and not _all_missing(frame[PREDICTED]):
        notes.append(
            f"{PREDICTED} = predicted, not measured: the expected tokens/s range of all ranks "
            "below the roofline bound (published or calibrated MFU; the report names each "
            "method and source)"
        )
    hidden = [c for c in (*ESSENTIAL, *OPTIONAL) if c not in columns and not _all_missing(frame[c])]
    if hidden:
        notes.append(f"not shown at {width} columns: {', '.join(hidden)} (the report has them)")
    notes += precision_lines(results)
    notes += condition_lines(results)
    notes += imbalance_lines(results)
    return "\n".join([text, *(_wrap(note, width) for note in notes)])


def precision_lines(results: Sequence[Result]) -> list[str]:
    """A line per steps="auto" case that stopped at a cap before its precision target, with
    the precision it reached and what to do about it."""
    said = []
    for r in results:
        m = r.metrics
        if m.precision_reached is not False or m.precision_target is None:
            continue
        label = r.case.id + (f" (rerun {r.repeat})" if r.repeat else "")
        achieved = m.precision_achieved
        reached = "no interval" if achieved is None else f"±{figures.percent(achieved)} %"
        caps = {"max_steps": r.case.max_steps, "max_seconds": f"{r.case.max_seconds:g}"}
        cap = f"{m.stop_reason}={caps[m.stop_reason]}" if m.stop_reason in caps else m.stop_reason
        said.append(
            f"precision: {label}: tok/s known to {reached}, target ±{100 * m.precision_target:g} "
            f"% not reached in {m.measured_steps} steps (stopped at {cap}); raise the cap or "
            "quiet the machine"
        )
    return said


def condition_lines(results: Sequence[Result]) -> list[str]:
    """A line per case measured on a busy machine or cold (flag busy, cold), and what the
    gate makes of it."""
    said = []
    for r in results:
        label = r.case.id + (f" (rerun {r.repeat})" if r.repeat else "")
        busy = busy_sentence(r.machine_load)
        if busy:
            said.append(f"busy: {label}: {busy}; a tokens/s drop here is not called a regression")
        cold = cold_sentence(r.cold_start)
        if cold:
            said.append(f"cold: {label}: {cold}; not saved as a baseline, its memory not judged")
    return said


def imbalance_lines(results: Sequence[Result]) -> list[str]:
    """A line per sentence of a case whose ranks stand apart (flag imbal;
    :mod:`gpubench.runner.imbalance`); the report has each rank's figures."""
    return [
        f"imbal: {r.case.id}{f' (rerun {r.repeat})' if r.repeat else ''}: {sentence}"
        for r in results
        for sentence in r.imbalance
    ]


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ")) or text
