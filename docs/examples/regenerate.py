"""Regenerate the example report in docs/examples/ from committed results.

    python docs/examples/regenerate.py                 # HTML, Markdown, recommended.json, PNG
    python docs/examples/regenerate.py --no-screenshot

The example is the last of the eight quiet runs of the CPU smoke suite in
``tests/data/gate/`` judged against the five before it, rendered by ``gpubench report``
itself with an example projection. The same results give the same files: nothing in
them depends on the machine or the time it is rendered (the screenshot, taken with
chromium where it is installed, depends on the fonts; ``tests/test_examples.py``
checks the other three against what this script writes now).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent.parent
GATE = ROOT / "tests" / "data" / "gate"
HTML, MARKDOWN, RECOMMENDED, SCREENSHOT = (
    "smoke-report.html",
    "smoke-report.md",
    "recommended.json",
    "smoke-report.png",
)
COMPARED = (HTML, MARKDOWN, RECOMMENDED)  # what tests/test_examples.py holds to this script


def report_args(out: Path) -> list[str]:
    """The ``gpubench report`` arguments that render the example into ``out``."""
    return [
        "report",
        str(GATE / "quiet-8.jsonl"),
        "--baseline",
        *(str(GATE / f"quiet-{i}.jsonl") for i in range(3, 8)),
        "--epochs",
        "3,5,10",
        "--dataset-tokens",
        "100M",
        "--price-per-hour",
        "0.10",
        "--max-hours",
        "72",
        "--rootdir",
        str(EXAMPLES),  # no pyproject.toml here: no projection or gate table but these
        "-o",
        str(out / HTML),
        "--md",
        str(out / MARKDOWN),
    ]


def render(out: Path) -> list[Path]:
    """Write the example's HTML, Markdown and recommended.json into ``out``."""
    from gpubench.cli import main

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the paths it prints: main() says them
        code = main(report_args(out))
    if code != 0:
        raise RuntimeError(f"gpubench report exited {code}")
    return [out / name for name in COMPARED]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path) -> None:
    """The page's first 2000 pixels at 1280 wide, as a reader first sees it."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("chromium is not installed: no screenshot (--no-screenshot)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=1280,2000",
                f"--screenshot={png}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-screenshot", action="store_true", help="leave the PNG as it is")
    args = parser.parse_args(argv)
    for path in render(EXAMPLES):
        print(path.relative_to(ROOT))
    if not args.no_screenshot:
        screenshot(EXAMPLES / HTML, EXAMPLES / SCREENSHOT)
        print((EXAMPLES / SCREENSHOT).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
