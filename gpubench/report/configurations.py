"""The configuration matrix: one row per case run, the figures a readiness report lists.

A pandas frame of raw values (bytes, seconds, fractions): the templates write them
through :mod:`gpubench.report.figures`, and the page sorts rows on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gpubench.contracts.plausibility import implausible_reasons, result_mfu
from gpubench.contracts.result import Result
from gpubench.report.figures import STATUS_LABELS
from gpubench.report.headroom import capacity_bytes, device_share


def anchor(result: Result) -> str:
    """The id of the case's detail in the page (letters, digits and dashes only)."""
    raw = f"{result.profile.name}-{result.case.id}-{result.run_id or ''}-{result.repeat}"
    return "case-" + "".join(c if c.isalnum() else "-" for c in raw)


def matrix_frame(results: Sequence[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metrics
        tps, step = m.tokens_per_s, m.step_time_s
        peak, source = m.peak_memory_bytes, m.peak_memory_source or ""
        if r.predicted and r.estimate is not None:  # nothing measured: the estimate's peak
            peak, source = r.estimate.peak_bytes, "estimate"
        rows.append(
            {
                "anchor": anchor(r),
                "case": r.case.id,
                "rerun": r.repeat,
                "run_id": r.run_id or "",
                "profile": r.profile.name,
                "status": r.status,
                "status_label": STATUS_LABELS[r.status] + (" (predicted)" if r.predicted else ""),
                "peak_bytes": peak,
                "peak_source": source,
                "capacity_bytes": capacity_bytes(r),
                "capacity_fraction": device_share(r),  # None on a cpu profile (capacity.py)
                "host_rss_bytes": m.peak_rss_bytes,
                "tokens_per_s": tps.median if tps else None,
                "tokens_per_s_p10": tps.p10 if tps else None,
                "tokens_per_s_p90": tps.p90 if tps else None,
                "mfu": result_mfu(r),  # a fraction (gpubench.contracts.flops)
                "implausible": r.implausible or implausible_reasons(r),  # reasons, sentences
                "step_cv": step.cv if step else None,
                "noisy": m.noisy,
                "loss_start": m.loss_start,
                "loss_end": m.loss_end,
                "duration_s": r.duration_s,
            }
        )
    frame = pd.DataFrame(rows)
    # pandas turns a column with None into float NaN; the templates want None back
    return frame.astype(object).where(frame.notna(), None) if rows else frame
