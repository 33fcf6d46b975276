"""A report on disk: ``report.html``, ``report.md`` beside it, and ``recommended.json`` when a
profile has a recommended case. Each file is written whole (a temporary file, then
``os.replace``), so a reader never sees half a page."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gpubench.report.document import ReportData, build_report
from gpubench.report.recommendation import recommended_record
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
    first of them."""
    report = build_report(data)
    first = html or markdown
    if first is None:
        raise ValueError("write_report needs an HTML or a Markdown path")
    record = recommended_record(report.verdicts)
    recommended = first.parent / RECOMMENDED_FILE if record["recommended"] else None
    if recommended is not None:
        _write(recommended, json.dumps(record, indent=1, allow_nan=False) + "\n")
    name = recommended.name if recommended is not None else None
    if html is not None:
        _write(html, render_html(report, recommended_file=name))
    if markdown is not None:
        html_name = os.path.relpath(html, markdown.parent) if html is not None else None
        _write(markdown, render_markdown(report, recommended_file=name, html_file=html_name))
    return WrittenReport(html, markdown, recommended)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
