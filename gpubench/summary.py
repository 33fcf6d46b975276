"""The end-of-session table: one row per case, the figures a person would copy out."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

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
                "tok/s": f"{tps.median:,.0f}" if tps else "-",
                "p10-p90": f"{tps.p10:,.0f}-{tps.p90:,.0f}" if tps else "-",
                # the step time's CV, the one Metrics.noisy judges (the "!")
                "cv%": (f"{100 * step.cv:.1f}" + ("!" if m.noisy else "")) if step else "-",
                "step ms": f"{1000 * step.median:.1f}" if step else "-",
                "peak GiB": f"{peak / 2**30:.2f}" if peak else "-",
                "mem": m.peak_memory_source or "-",
                "loss": (
                    f"{m.loss_start:.3f}->{m.loss_end:.3f}"
                    if m.loss_start is not None and m.loss_end is not None
                    else "-"
                ),
                "params": f"{m.n_params / 1e6:,.1f}M" if m.n_params else "-",
                "time s": f"{r.duration_s:.1f}" if r.duration_s is not None else "-",
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
