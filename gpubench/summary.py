"""The end-of-session table: one row per case, the figures a person would copy out.

Figures are written by :mod:`gpubench.report.figures`, as the report's Markdown and HTML
write them."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gpubench.report import figures
from gpubench.result import NOISY_CV, Result


def summary_frame(results: Sequence[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metrics
        tps = m.tokens_per_s
        step = m.step_time_s
        peak = m.peak_memory_bytes
        rows.append(
            {
                "case": r.case.id + (f" (rerun {r.repeat})" if r.repeat else ""),
                "profile": r.profile_name,
                "status": r.status,
                "tok/s": figures.rate(tps.median if tps else None),
                "p10-p90": figures.rate_range(tps.p10, tps.p90) if tps else figures.MISSING,
                "mfu%": figures.percent(m.mfu),
                # the step time's CV, the one Metrics.noisy judges (the "!")
                "cv%": (figures.percent(step.cv) + ("!" if m.noisy else ""))
                if step
                else figures.MISSING,
                "step ms": figures.milliseconds(step.median if step else None),
                "peak GiB": figures.gib(peak) if peak else figures.MISSING,
                "mem": m.peak_memory_source or figures.MISSING,
                "loss": figures.loss_change(m.loss_start, m.loss_end),
                "params": figures.millions(m.n_params),
                "time s": figures.seconds(r.duration_s),
                "test": (r.nodeid or "").rsplit("::", 1)[-1].split("[", 1)[0],
            }
        )
    return pd.DataFrame(rows)


def format_summary(results: Sequence[Result]) -> str:
    if not results:
        return "no gpubench cases ran"
    text = summary_frame(results).to_string(index=False)
    if any(r.metrics.step_time_s for r in results):
        text += "\ncv% = step-time coefficient of variation over the measured steps"
        if any(r.metrics.noisy for r in results):
            text += f"; ! = above {100 * NOISY_CV:g} %: a noisy measurement"
    return text
