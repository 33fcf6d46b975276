"""A report on disk: ``report.html``, ``report.md`` beside it, and ``recommended.json`` when a
profile has a recommended case (never over a file of that name gpubench did not write:
that one is left as it is, with a warning). Each file is written whole
(:func:`~gpubench.contracts.protocol.write_text_atomic`), so a reader never sees half a page."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from gpubench.contracts.protocol import write_text_atomic
from gpubench.report.document import ReportData, build_report
from gpubench.report.recommendation import RECOMMENDED_FORMAT, recommended_record
from gpubench.report.render import render_html, render_markdown

RECOMMENDED_FILE = "recommended.json"


@dataclass(frozen=True)
class WrittenReport:
    html: Path | None
    markdown: Path | None
    recommended: Path | None

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.html, self.markdown, self.recommended) if p is not None]


def write_report(
    data: ReportData, html: Path | None, markdown: Path | None = None
) -> WrittenReport:
    """Render ``data`` to ``html`` and/or ``markdown``; ``recommended.json`` goes beside the
    first of them (:func:`_foreign_reason`)."""
    first = html or markdown
    if first is None:
        raise ValueError("write_report needs an HTML or a Markdown path")
    if html is not None and markdown is not None and html.absolute() == markdown.absolute():
        raise ValueError(f"the HTML and the Markdown report are both {html}: give two paths")
    report = build_report(data)
    record = recommended_record(report.verdicts)
    recommended = first.parent / RECOMMENDED_FILE if record["recommended"] else None
    foreign = _foreign_reason(recommended) if recommended is not None else None
    if foreign is not None:
        warnings.warn(f"{recommended}: not written, {foreign}", stacklevel=2)
        recommended = None
    if recommended is not None:
        _write(recommended, json.dumps(record, indent=1, allow_nan=False) + "\n")
    name = recommended.name if recommended is not None else None
    if html is not None:
        _write(html, render_html(report, recommended_file=name))
    if markdown is not None:
        html_name = os.path.relpath(html, markdown.parent) if html is not None else None
        _write(markdown, render_markdown(report, recommended_file=name, html_file=html_name))
    return WrittenReport(html, markdown, recommended)


def _foreign_reason(path: Path) -> str | None:
    """Why ``path`` may not be replaced: a file there that is not a recommended.json
    gpubench wrote (its ``format``); None when there is none, or it is gpubench's."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("format") == RECOMMENDED_FORMAT:
        return None
    return "a file of that name is there that gpubench did not write; left as it is"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
