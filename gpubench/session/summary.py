"""The end-of-session table: one row per case, the figures a person would copy out.

Figures are written by :mod:`gpubench.report.figures`, as the report's Markdown and HTML
write them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import pandas as pd

from gpubench.contracts.conditions import busy_sentence, cold_sentence
from gpubench.contracts.plausibility import result_mfu
from gpubench.contracts.result import NOISY_CV, Result
from gpubench.report import figures


def summary_frame(results: Sequence[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metrics
        tps = m.tokens_per_s
        step = m.step_time_s
        peak, source = m.peak_memory_bytes, m.peak_memory_source
        if r.predicted and r.estimate is not None:  # no measurement: the estimate's peak
            peak, source = r.estimate.peak_bytes, "estimate"
        rows.append(
            {
                "case": r.case.id + (f" (rerun {r.repeat})" if r.repeat else ""),
                "profile": r.profile_name,
                "status": r.status + (" (predicted)" if r.predicted else ""),
                "tok/s": figures.rate(tps.median if tps else None),
                "p10-p90": figures.rate_range(tps.p10, tps.p90) if tps else figures.MISSING,
                "mfu%": figures.percent(result_mfu(r)),  # derived for a record before v4
                # the step time's CV, the one Metrics.noisy judges (the "!")
                "cv%": (figures.percent(step.cv) + ("!" if m.noisy else ""))
                if step
                else figures.MISSING,
                "step ms": figures.milliseconds(step.median if step else None),
                "peak GiB": figures.gib(peak) if peak else figures.MISSING,
                "mem": source or figures.MISSING,
                # the estimate against what was measured (gpubench.estimate.measured)
                "est err%": _estimate_error(r),
                "loss": figures.loss_change(m.loss_start, m.loss_end),
                "params": figures.millions(m.n_params),
                "time s": figures.seconds(r.duration_s),
                "test": (r.nodeid or "").rsplit("::", 1)[-1].split("[", 1)[0],
            }
        )
    return pd.DataFrame(rows)


def _estimate_error(result: Result) -> str:
    error = result.estimate.error_pct if result.estimate else None
    return figures.MISSING if error is None else f"{error:+.0f}"


def format_summary(results: Sequence[Result]) -> str:
    if not results:
        return "no gpubench cases ran"
    text = summary_frame(results).to_string(index=False)
    if any(r.metrics.step_time_s for r in results):
        text += "\ncv% = step-time coefficient of variation over the measured steps"
        if any(r.metrics.noisy for r in results):
            text += f"; ! = above {100 * NOISY_CV:g} %: a noisy measurement"
    if any(r.estimate and r.estimate.error_pct is not None for r in results):
        text += "\nest err% = memory estimate vs measured peak, 100 x (est - meas) / meas"
    if any(r.predicted for r in results):
        text += "\n(predicted) = estimated, not run (--gpubench-estimate-only): no measurement"
    return "\n".join([text, *condition_lines(results)])


def condition_lines(results: Sequence[Result], width: int = 120) -> list[str]:
    """Lines per case measured on a busy machine or cold, and what the gate makes of it."""
    said = []
    for r in results:
        label = r.case.id + (f" (rerun {r.repeat})" if r.repeat else "")
        busy = busy_sentence(r.machine_load)
        if busy:
            said.append(f"{label}: {busy}; a tokens/s drop here is not called a regression")
        cold = cold_sentence(r.cold_start)
        if cold:
            said.append(f"{label}: {cold}; not saved as a baseline, its memory not judged")
    return [
        line
        for text in said
        for line in textwrap.wrap(text, width, subsequent_indent="    ", break_on_hyphens=False)
    ]
