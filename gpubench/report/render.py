"""A Report as an HTML page and as Markdown, through jinja2 templates (package data in
``templates/``).

HTML: autoescape on, so every name and message from a Result (a case id, an
error's stderr) is text, never markup; the charts are the only markup let
through, SVG that matplotlib wrote (it escapes its own text). Markdown has no
autoescape of its own: every value goes through :func:`markdown_text`, which
writes HTML's special characters as entities (GitHub renders inline HTML) and
backslash-escapes Markdown's, so a name can neither inject markup nor break a
table; code blocks (:func:`markdown_code`) get a fence longer than any run of
backticks inside them.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
import markupsafe

from gpubench.contracts.text import safe_text
from gpubench.report import figures
from gpubench.report.advice import MAX_LISTED
from gpubench.report.charts import label
from gpubench.report.configurations import anchor
from gpubench.report.document import Report
from gpubench.report.quality import KEYS as QUALITY_KEYS
from gpubench.report.quality import quality_cell
from gpubench.report.recommendation import (
    GO,
    LISTED_STANDINGS,
    NO_GO,
    PREDICTED_NO_GO,
    has_interval,
    unsettled,
)
from gpubench.report.trust import MIN_MEASURED_STEPS, few_steps, has_spread

_FILTERS = {
    "rate": figures.rate,
    "rate_range": figures.rate_range,
    "gib": figures.gib,
    "percent": figures.percent,
    "loss": figures.loss,
    "seconds": figures.seconds,
    "ms": figures.milliseconds,
    "hours": figures.hours,
    "usd": figures.usd,
    "count": figures.count,
    "number": figures.number,
    "status": figures.status,
    "anchor": anchor,
    "label": label,
    "has_spread": has_spread,
    "few_steps": few_steps,
    "unsettled": unsettled,
    "has_interval": has_interval,
    "verdict_class": lambda kind: (
        "go" if kind == GO else "nogo" if kind in (NO_GO, PREDICTED_NO_GO) else "open"
    ),
}


def matrix_cell(row: dict[str, Any], key: str) -> str:
    """A matrix cell's text, as both the HTML and the Markdown write it."""
    value = row[key]
    if key == "case":
        return value + (f" (rerun {row['rerun']})" if row["rerun"] else "")
    if key == "tokens_per_s_p10":
        return figures.rate_range(value, row["tokens_per_s_p90"])
    if key == "mfu":
        return figures.percent(value) + (" (implausible)" if row["implausible"] else "")
    if key == "precision_achieved":
        return precision_cell(row)
    if key == "gpu_util":
        return figures.seconds(value, 0)
    if key == "energy_per_token_j":
        return figures.number(None if value is None else 1000 * value)
    if key == "step_cv":
        return figures.percent(value) + (" (noisy)" if row["noisy"] else "")
    if key in QUALITY_KEYS:
        return quality_cell(row, key)
    formats: dict[str, Any] = {
        "peak_bytes": figures.gib,
        "capacity_fraction": figures.percent,
        "host_rss_bytes": figures.gib,
        "tokens_per_s": figures.rate,
        "measured_steps": figures.count,
        "loss_start": figures.loss,
        "loss_end": figures.loss,
        "duration_s": figures.seconds,
        "usd_per_million_tokens": usd_per_million,
    }
    return str(formats[key](value)) if key in formats else str(value)


def usd_per_million(value: float | None) -> str:
    """Dollars per million tokens: cents where it is a dollar or more, else 2 significant
    digits (a small model on a cheap card costs fractions of a cent per million)."""
    if value is not None and 0 < value < 1:
        return figures.number(value, 2)
    return figures.usd(value)


def precision_cell(row: dict[str, Any]) -> str:
    """``±0.8`` (the interval's half-width over the median, per cent); a steps="auto" target
    not reached is marked with it: ``±3.4 (target ±1.0 not reached)``."""
    value = row["precision_achieved"]
    if value is None:
        return figures.MISSING
    text = f"±{figures.percent(value)}"
    if row["precision_reached"] is False:
        text += f" (target ±{figures.percent(row['precision_target'])} not reached)"
    return text


_FILTERS["matrix_cell"] = matrix_cell
_GLOBALS = {
    "min_steps": MIN_MEASURED_STEPS,
    "max_listed": MAX_LISTED,
    "max_standings": LISTED_STANDINGS,
}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")


class MarkdownBlock(str):
    """Markdown that is already safe (a fenced code block): :func:`markdown_text` keeps it."""


def markdown_text(value: Any) -> str:
    """``value`` as Markdown text that shows exactly its characters, on one line."""
    if isinstance(value, MarkdownBlock):
        return str(value)
    text = safe_text(str(value)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split("\n"))


def markdown_code(value: Any, language: str = "") -> MarkdownBlock:
    """A fenced code block showing ``value`` verbatim."""
    text = safe_text(str(value)).rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return MarkdownBlock(f"{fence}{language}\n{text}\n{fence}")


def _html_text(value: Any) -> Any:
    """A value as the HTML shows it: text (autoescaped after this) with its control
    characters written as escapes; markup (the charts' SVG) and numbers as they are."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return safe_text(value)
    return value


def _environment(markdown: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gpubench.report", "templates"),
        autoescape=not markdown,
        finalize=markdown_text if markdown else _html_text,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(_FILTERS)
    env.globals.update(_GLOBALS)
    env.filters["code"] = markdown_code
    return env


def render_html(report: Report, recommended_file: str | None = None) -> str:
    template = _environment(markdown=False).get_template("report.html.j2")
    return template.render(report=report, recommended_file=recommended_file)


def render_markdown(
    report: Report, recommended_file: str | None = None, html_file: str | None = None
) -> str:
    template = _environment(markdown=True).get_template("report.md.j2")
    text = template.render(report=report, recommended_file=recommended_file, html_file=html_file)
    return re.sub(r"\n{3,}", "\n\n", text)
