"""docs/examples/ is what docs/examples/regenerate.py writes now: the example report cannot go
stale. The screenshot is left out (it depends on the fonts of the machine that took it);
in the HTML each chart is compared by its text (titles, axis labels, ticks, legend),
not by matplotlib's path data, which changes between its releases."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "examples" / "regenerate.py"
HOW = f"docs/examples/ is stale: run python {SCRIPT.relative_to(SCRIPT.parents[2])}"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate_examples", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def charts_as_text(html: str) -> str:
    """The page with each inline SVG reduced to the text it shows."""

    def texts(match: re.Match[str]) -> str:
        shown = re.findall(r"<text\b[^>]*>(.*?)</text>", match.group(0), flags=re.S)
        return "<svg>" + " | ".join(t.strip() for t in shown) + "</svg>"

    return re.sub(r"<svg\b.*?</svg>", texts, html, flags=re.S)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    script = _script()
    out = tmp_path_factory.mktemp("examples")
    return {path.name: path.read_text() for path in script.render(out)}


def test_the_committed_markdown_and_recommendation_are_what_the_script_writes(
    fresh: dict[str, str],
) -> None:
    examples = SCRIPT.parent
    assert (examples / "smoke-report.md").read_text() == fresh["smoke-report.md"], HOW
    committed = json.loads((examples / "recommended.json").read_text())
    assert committed == json.loads(fresh["recommended.json"]), HOW


def test_the_committed_page_is_what_the_script_writes(fresh: dict[str, str]) -> None:
    committed = (SCRIPT.parent / "smoke-report.html").read_text()
    assert committed.count("<svg") == fresh["smoke-report.html"].count("<svg") > 3
    assert charts_as_text(committed) == charts_as_text(fresh["smoke-report.html"]), HOW


def test_the_example_shows_what_the_docs_say_it_does(fresh: dict[str, str]) -> None:
    markdown = fresh["smoke-report.md"]
    assert "## Baseline comparison" in markdown and "## Projections" in markdown
    # the bf16 cells train 64-token sequences, the others 128: two workloads, ranked apart
    assert "### cpu: 2 workloads, each judged on its own" in markdown
    assert markdown.count("Recommended: **") == 2
