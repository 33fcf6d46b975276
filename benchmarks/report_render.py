"""How long does rendering a report take for a run of many cases?

    python benchmarks/report_render.py --cases 200 --repeats 3 \\
        --out docs/benchmarks/report-render.json

Builds a run of ``--cases`` cases from real results (the CPU smoke suite's
quiet runs in ``tests/data/gate/``, each copy renamed so every case is its
own: their series, figures and environments are as measured), then times, in
this process, what a session's end does: the report's content with every
chart (:func:`gpubench.report.document.build_report`), the HTML and Markdown
renders and the files written (:func:`gpubench.report.write.write_report`).
Prints one JSON object: wall seconds per repeat and their median, the CPU
seconds this process used in each (with ``--serial`` that is all the work: on
a machine busy with other jobs the wall time stretches, the CPU time much
less; the chart workers' CPU is not counted, they are the forkserver's
children), the load average when it started, the page's size. Charts of a run this big are
drawn by one process per core (``gpubench.report.charts.case_charts``);
``--serial`` draws them in this process, for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIET = sorted((ROOT / "tests" / "data" / "gate").glob("quiet-*.jsonl"))


def many_cases(count: int) -> list:
    from gpubench.storage import read_results

    source = [r for path in QUIET for r in read_results(path)]
    return [
        dataclasses.replace(r, case=r.case.replace(name=f"{r.case.id}-copy{i}"))
        for i, r in zip(range(count), source * (count // len(source) + 1), strict=False)
    ]


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serial", action="store_true", help="draw every chart in this process")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from gpubench.report.document import ReportData
    from gpubench.report.write import write_report

    import_s = time.perf_counter() - started
    if args.serial:
        from gpubench.report import charts

        charts.PARALLEL_FROM = sys.maxsize
    results = many_cases(args.cases)
    seconds, cpu = [], []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), _cpu_s()
            write_report(ReportData(results), html, html.with_suffix(".md"))
            seconds.append(time.perf_counter() - t0)
            cpu.append(_cpu_s() - c0)
        size = html.stat().st_size
    figures = {
        "cases": len(results),
        "import_s": round(import_s, 3),
        "render_s": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "cpu_s_this_process": [round(s, 3) for s in cpu],
        "serial": args.serial,
        "load_average_1min": round(load, 2),
        "cpus": os.cpu_count(),
        "html_bytes": size,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
