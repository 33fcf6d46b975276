"""The configuration matrix: one row per case run, the figures a readiness report lists.

A pandas frame of raw values (bytes, seconds, fractions): the templates write them
through :mod:`gpubench.report.figures`, and the page sorts rows on them. A spread (p10-p90,
the step-time CV) from fewer measured steps than :data:`~gpubench.report.trust.MIN_MEASURED_STEPS`
is left out (None), as is "noisy" (:mod:`gpubench.report.trust`). The diagnostics' columns
(the median's interval, GPU utilisation, energy per token, $ per million tokens) are shown
only where a row measured them: a record before schema v7 renders as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gpubench.contracts.plausibility import implausible_reasons, result_mfu
from gpubench.contracts.result import Result
from gpubench.report.figures import STATUS_LABELS
from gpubench.report.headroom import capacity_bytes, device_share
from gpubench.report.pytest_outcomes import LABELS, Outcomes
from gpubench.report.quality import COLUMNS as QUALITY_COLUMNS
from gpubench.report.quality import KEYS as QUALITY_KEYS
from gpubench.report.quality import quality_fields, reference_ids
from gpubench.report.trust import has_spread, measured_steps


def anchor(result: Result) -> str:
    """The id of the case's detail in the page (letters, digits and dashes only)."""
    raw = f"{result.profile.name}-{result.case.id}-{result.run_id or ''}-{result.repeat}"
    return "case-" + "".join(c if c.isalnum() else "-" for c in raw)


def matrix_frame(results: Sequence[Result], outcomes: Outcomes | None = None) -> pd.DataFrame:
    """One row per Result; with ``outcomes``, pytest's outcome of its test beside its
    status (a case whose test failed is labelled so: the report never calls it PASS)."""
    outcomes = outcomes or Outcomes(())
    references = reference_ids(results)  # the cases others' quality was compared with
    rows = []
    for r in results:
        outcome = outcomes.of(r)
        m = r.metrics
        tps, step = m.tokens_per_s, m.step_time_s
        spread = has_spread(r)
        peak, source = m.peak_memory_bytes, m.peak_memory_source or ""
        share = device_share(r)  # None on a cpu profile (headroom.py)
        if r.predicted and r.estimate is not None:  # nothing measured: the estimate's peak
            peak, source = r.estimate.peak_bytes, "estimate"
            share = None if r.profile.is_cpu else peak / capacity_bytes(r)
        rows.append(
            {
                "anchor": anchor(r),
                "case": r.case.id,
                "rerun": r.repeat,
                "run_id": r.run_id or "",
                "profile": r.profile.name,
                "status": r.status,
                "status_label": STATUS_LABELS[r.status]
                + (" (predicted)" if r.predicted else "")
                + (f", test {LABELS[outcome.outcome]}" if outcomes.red(r) and outcome else ""),
                "pytest": LABELS[outcome.outcome] if outcome else None,
                "pytest_reason": outcome.reason if outcome else "",
                "peak_bytes": peak,
                "peak_source": source,
                "capacity_bytes": capacity_bytes(r),
                "capacity_fraction": share,
                "host_rss_bytes": m.peak_rss_bytes,
                "tokens_per_s": tps.median if tps else None,
                "tokens_per_s_p10": tps.p10 if tps and spread else None,
                "tokens_per_s_p90": tps.p90 if tps and spread else None,
                "mfu": result_mfu(r),  # a fraction (gpubench.contracts.flops)
                "implausible": r.implausible or implausible_reasons(r),  # reasons, sentences
                # the median's confidence interval (v7): half-width / median, and its target
                "precision_achieved": m.precision_achieved,
                "precision_target": m.precision_target,
                "precision_reached": m.precision_reached,
                "gpu_util": m.gpu_util.median if m.gpu_util else None,  # percent
                "energy_per_token_j": m.energy_per_token_j,
                "usd_per_million_tokens": m.usd_per_million_tokens,
                "measured_steps": measured_steps(r) if step else None,
                "step_cv": step.cv if step and spread else None,
                "noisy": r.metrics.noisy,
                "loss_start": m.loss_start,
                "loss_end": m.loss_end,
                "duration_s": r.duration_s,
                **quality_fields(r, references),  # held-out loss, its reference's comparison
            }
        )
    frame = pd.DataFrame(rows)
    # pandas turns a column with None into float NaN; the templates want None back
    return frame.astype(object).where(frame.notna(), None) if rows else frame


# The matrix's columns, in order: (row key, heading, numeric). The HTML and the Markdown
# both iterate over :func:`matrix_columns`, so a heading, its separator and its cells
# cannot disagree in number.
COLUMNS = (
    ("case", "case", False),
    ("profile", "profile", False),
    ("status_label", "status", False),
    ("pytest", "pytest", False),
    ("peak_bytes", "peak memory, GiB", True),
    ("capacity_fraction", "of capacity, %", True),
    ("host_rss_bytes", "host RAM, GiB", True),
    ("tokens_per_s", "tokens/s", True),
    ("tokens_per_s_p10", "p10-p90, tokens/s", True),
    ("precision_achieved", "interval, ±%", True),
    ("mfu", "MFU, %", True),
    ("gpu_util", "GPU util, %", True),
    ("energy_per_token_j", "energy, mJ/token", True),
    ("usd_per_million_tokens", "$/Mtok", True),
    ("measured_steps", "measured steps", True),
    ("step_cv", "step-time CV, %", True),
    ("loss_start", "loss start", True),
    ("loss_end", "loss end", True),
    *QUALITY_COLUMNS,
    ("duration_s", "duration, s", True),
)
# figures a run may have measured none of (an estimate-only run: no throughput, no loss;
# a cpu run: no MFU, no share of capacity): such a column is left out, not a column of -
OPTIONAL = frozenset(
    {
        "pytest",
        "capacity_fraction",
        "host_rss_bytes",
        "tokens_per_s",
        "tokens_per_s_p10",
        "mfu",
        "precision_achieved",
        "gpu_util",
        "energy_per_token_j",
        "usd_per_million_tokens",
        "measured_steps",
        "step_cv",
        "loss_start",
        "loss_end",
        *QUALITY_KEYS,
    }
)


def matrix_columns(frame: pd.DataFrame) -> tuple[tuple[str, str, bool], ...]:
    """The columns shown: the profile with several profiles, an optional one where a row
    has a figure in it (MFU also where a row is flagged implausible)."""
    if frame.empty:
        return ()

    def shown(key: str) -> bool:
        if key == "profile":
            return bool(frame["profile"].nunique() > 1)
        if key == "mfu" and frame["implausible"].map(bool).any():
            return True
        if key == "quality_diff":  # a reference or an uncompared case says so in words
            return bool(frame["quality_verdict"].notna().any())
        return key not in OPTIONAL or bool(frame[key].notna().any())

    return tuple(column for column in COLUMNS if shown(column[0]))
