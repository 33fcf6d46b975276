"""The report's charts: matplotlib figures rendered to SVG text, inlined in the page.

No pyplot (no global figure state): each chart is a :class:`matplotlib.figure.Figure`
saved as SVG with its text kept as text (``svg.fonttype: none``, so the page
needs no embedded glyphs and stays small), no date in its metadata and the
chart's own id as the hash salt, so a page's charts never share an element id
and the same results give the same page. A chart without data is None: the
page then shows no chart, not an empty frame.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.ticker
from matplotlib.figure import Figure

from gpubench.contracts.result import Result
from gpubench.report.headroom import capacity_bytes

GIB = 2**30
WIDTH_IN = 9.0
COLOURS: Sequence[tuple[float, ...]] = matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def to_svg(figure: Figure, chart_id: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": chart_id}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(height_in: float, width_in: float = WIDTH_IN, fixed: bool = False) -> Figure:
    """A figure laid out by matplotlib's constrained layout (long case names as labels), or,
    ``fixed``, by fixed margins: the small per-case charts, a few hundred of them in a big
    run, skip the layout solver."""
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width_in, height_in), layout=None if fixed else "constrained")


def _bar_figure(labels: Sequence[str]) -> Figure:
    """A figure for one horizontal bar per case, laid out by fixed margins measured from the
    longest label (the layout solver measures every one of hundreds of labels twice)."""
    height = 0.9 + 0.22 * len(labels)
    figure = _figure(height, fixed=True)
    chars = max((len(text) for text in labels), default=10)
    left = min(0.6, (0.3 + 0.068 * chars) / WIDTH_IN)
    figure.subplots_adjust(left=left, right=0.97, bottom=0.55 / height, top=1 - 0.35 / height)
    return figure


def _colour(profile: str, profiles: list[str]) -> tuple[float, ...]:
    return COLOURS[profiles.index(profile) % len(COLOURS)]  # type: ignore[no-any-return]


def _values(series: Sequence[float | None], scale: float = 1.0) -> list[float]:
    """A series for plotting: a non-finite value the JSON kept as null becomes a gap (nan)."""
    return [math.nan if v is None else v * scale for v in series]


def label(result: Result, several_profiles: bool) -> str:
    return f"{result.case.id} @ {result.profile.name}" if several_profiles else result.case.id


def throughput_chart(results: Sequence[Result]) -> str | None:
    """Median tokens/s per case with p10-p90 whiskers, fastest at the top."""
    ran = sorted(
        (r for r in results if r.metrics.tokens_per_s is not None),
        key=lambda r: r.tokens_per_s or 0.0,
    )
    if not ran:
        return None
    profiles = list(dict.fromkeys(r.profile.name for r in results))
    several = len(profiles) > 1
    stats = [r.metrics.tokens_per_s for r in ran]
    medians = [t.median for t in stats if t is not None]
    labels = [label(r, several) for r in ran]
    with matplotlib.rc_context(_RC):
        figure = _bar_figure(labels)
        ax = figure.add_subplot()
        # one call per kind of mark, not per case: a run of hundreds of cases stays quick
        ax.barh(
            range(len(ran)),
            medians,
            color=[_colour(r.profile.name, profiles) for r in ran],
            height=0.7,
        )
        ax.errorbar(
            medians,
            range(len(ran)),
            xerr=[
                [t.median - t.p10 for t in stats if t is not None],
                [t.p90 - t.median for t in stats if t is not None],
            ],
            fmt="none",
            ecolor="black",
            capsize=2,
            linewidth=0.8,
        )
        ax.set_yticks(range(len(ran)), labels)
        ax.set_xlabel("tokens/s (median; whiskers p10-p90 of the measured steps)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.set_title("Throughput per case")
        return to_svg(figure, "throughput")


def memory_chart(results: Sequence[Result]) -> str | None:
    """Peak memory per case against its profile's capacity (a GPU profile's) and the
    estimate, where one was made."""
    measured = [r for r in results if r.peak_memory_bytes]
    if not measured:
        return None
    profiles = list(dict.fromkeys(r.profile.name for r in results))
    several = len(profiles) > 1
    labels = [label(r, several) for r in measured]
    with matplotlib.rc_context(_RC):
        figure = _bar_figure(labels)
        ax = figure.add_subplot()
        ax.barh(
            range(len(measured)),
            [(r.peak_memory_bytes or 0) / GIB for r in measured],
            color=[_colour(r.profile.name, profiles) for r in measured],
            height=0.7,
        )
        # a cpu profile's cap counts above the worker's imports, which its RSS includes: no
        # marker to compare it with (report/capacity.py)
        capped = [
            (y, capacity_bytes(r) / GIB) for y, r in enumerate(measured) if not r.profile.is_cpu
        ]
        if capped:
            ys, capacities = zip(*capped, strict=True)
            ax.plot(capacities, ys, "|", color="red", markersize=12, label="capacity")
        estimated = [(y, r.estimate.peak_bytes / GIB) for y, r in enumerate(measured) if r.estimate]
        if estimated:
            ys, peaks = zip(*estimated, strict=True)
            ax.plot(peaks, ys, "D", color="black", markersize=4, label="estimate")
        ax.set_yticks(range(len(measured)), labels)
        ax.set_xlabel("peak memory, GiB (device; host RSS on a cpu profile)")
        ax.set_xlim(left=0)
        if capped or estimated:
            ax.legend(loc="lower right")
        ax.set_title("Peak memory per case against capacity")
        return to_svg(figure, "memory")


def loss_chart(results: Sequence[Result]) -> str | None:
    """Every case's loss per step on one axis."""
    curves = [r for r in results if r.series.loss]
    if not curves:
        return None
    several = len({r.profile.name for r in results}) > 1
    with matplotlib.rc_context(_RC):
        figure = _figure(4.0)
        ax = figure.add_subplot()
        for r in curves:
            ax.plot(
                range(1, len(r.series.loss) + 1),
                _values(r.series.loss),
                linewidth=1,
                label=label(r, several),
            )
        ax.set_xlabel("step (warm-up included)")
        ax.set_ylabel("loss")
        if len(curves) <= 12:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title("Loss curves of all cases")
        return to_svg(figure, "loss")


class CaseCharts:
    """Each case's per-step series, drawn on one figure made once and reused (a run of
    200 cases draws 200 of them: building axes and ticks anew for each cost ~4x more):
    step time (the warm-up steps shaded: excluded from the figures), loss, memory after
    each step and gradient norm; a panel only for a series the case has."""

    PANELS = (
        ("step time", "ms"),
        ("loss", ""),
        ("memory after the step", "GiB"),
        ("gradient norm", ""),
    )

    def __init__(self) -> None:
        # no grid and titles at a fixed height: a panel's ticks and its title's placement
        # (measured against the tick labels) were most of the cost of each case's chart
        with matplotlib.rc_context({**_RC, "axes.grid": False}):
            self.figure = _figure(4.0, fixed=True)
            self.figure.subplots_adjust(
                left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.2, hspace=0.65
            )
            self.axes = [self.figure.add_subplot(2, 2, i) for i in range(1, 5)]
            self.lines = [ax.plot([], [], linewidth=1, marker=".")[0] for ax in self.axes]
            self.warmup = self.axes[0].axvspan(
                0.5, 1.5, color="grey", alpha=0.2, label="warm-up (excluded)"
            )
            self.legend = self.axes[0].legend(fontsize=7, loc="upper right")
            for ax, (name, unit) in zip(self.axes, self.PANELS, strict=True):
                ax.set_title(name + (f", {unit}" if unit else ""), fontsize=9, y=1.02)
                ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.4g}"))
            for ax in self.axes[2:]:
                ax.set_xlabel("step")

    def draw(self, result: Result, chart_id: str) -> str | None:
        s = result.series
        series = (
            _values(s.step_time_s, 1000),
            _values(s.loss),
            _values(s.allocated_bytes, 1 / GIB),
            _values(s.grad_norm),
        )
        if not any(series):
            return None
        warmup = result.metrics.warmup_steps
        for ax, line, values in zip(self.axes, self.lines, series, strict=True):
            ax.set_visible(bool(values))
            line.set_data(range(1, len(values) + 1), values)
            line.set_marker("." if len(values) < 40 else "")
            ax.relim()
            ax.autoscale_view()
            # ticks where they say something: first step, first measured step, last step;
            # the lowest and highest value (a few ticks also draw much faster than many)
            finite = [v for v in values if math.isfinite(v)]
            ax.set_xticks(sorted({1, len(values), *([warmup + 1] if warmup < len(values) else [])}))
            ax.set_yticks(sorted({min(finite), max(finite)}) if finite else [])
        shade = bool(warmup) and len(series[0]) >= warmup
        self.warmup.set_visible(shade)
        self.legend.set_visible(shade)
        if shade:
            self.warmup.set_x(0.5)
            self.warmup.set_width(warmup)
        return to_svg(self.figure, chart_id)


PARALLEL_FROM = 32  # cases from which their charts are drawn by several processes


def case_charts(results: Sequence[Result], parallel_from: int | None = None) -> list[str | None]:
    """Every case's per-step chart (:class:`CaseCharts`), chart ids ``case0``, ``case1``, ...
    From ``parallel_from`` cases on, the cases are split among up to 4 processes (one
    per core; ``parallel_from`` overrides :data:`PARALLEL_FROM`): a few hundred charts are
    most of a big run's rendering time. Each process
    draws on its own reused figure; the charts are the same either way."""
    jobs = list(enumerate(results))
    workers = min(4, os.cpu_count() or 1, len(jobs))
    if len(jobs) < (PARALLEL_FROM if parallel_from is None else parallel_from) or workers < 2:
        return _draw_cases(jobs)
    chunks = [jobs[i::workers] for i in range(workers)]
    # forkserver: a fresh interpreter forks the workers, never this process with its threads
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        drawn = dict(
            (index, svg) for chunk in pool.map(_draw_chunk, chunks) for index, svg in chunk
        )
    return [drawn[index] for index, _ in jobs]


def _draw_cases(jobs: Sequence[tuple[int, Result]]) -> list[str | None]:
    painter = CaseCharts()
    return [painter.draw(result, f"case{index}") for index, result in jobs]


def _draw_chunk(jobs: list[tuple[int, Result]]) -> list[tuple[int, str | None]]:
    return list(zip((index for index, _ in jobs), _draw_cases(jobs), strict=True))


def trend_chart(history: Sequence[Result], result: Result, chart_id: str) -> str | None:
    """Tokens/s of the baseline's runs, oldest first, and this run's, last."""
    points = [r.tokens_per_s for r in history if r.tokens_per_s is not None]
    if not points or result.tokens_per_s is None:
        return None
    with matplotlib.rc_context(_RC):
        figure = _figure(1.5, width_in=3.2)
        ax = figure.add_subplot()
        xs = range(len(points) + 1)
        ys = [*points, result.tokens_per_s]
        ax.plot(xs[:-1], ys[:-1], marker="o", color="grey", linewidth=1, label="baseline runs")
        ax.plot([xs[-1]], [ys[-1]], marker="o", color="tab:blue", label="this run")
        ax.set_xticks(list(xs), [""] * len(xs))
        ax.set_ylabel("tok/s", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.legend(fontsize=6, loc="lower left")
        return to_svg(figure, chart_id)
