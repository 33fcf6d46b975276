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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.colors
import matplotlib.patches
import matplotlib.ticker
from matplotlib.figure import Figure

from gpubench.contracts.result import Result
from gpubench.contracts.units import GiB as GIB
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes
from gpubench.report.trust import MIN_MEASURED_STEPS, has_spread, workload

WIDTH_IN = 9.0
# tab10, as hex strings: the palette's colours, in a type every matplotlib call takes
COLOURS: tuple[str, ...] = tuple(
    matplotlib.colors.to_hex(c)
    for c in matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
)
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@dataclass(frozen=True)
class Chart:
    svg: str  # an inline <svg> element
    caption: str  # what it shows, and what it leaves out and why


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
    return _panel_figure([labels])[0]


PANEL_EXTRA_IN = 0.95  # a panel's title, tick labels and axis label, inches
BAR_IN = 0.22  # one bar, inches
LEGEND_IN = 0.35  # the band above the panels that holds the figure's one legend


def _panel_figure(
    panels: Sequence[Sequence[str]], legend: bool = False
) -> tuple[Figure, list[Any]]:
    """A figure of panels stacked top to bottom, one bar per label, each panel as tall as its
    bars, by fixed margins from the longest label: small multiples, one per workload or
    profile, that share no axis (tokens/s of two workloads are not one scale). With
    ``legend``, a band at the top is kept for one legend (:func:`_figure_legend`)."""
    heights = [PANEL_EXTRA_IN + BAR_IN * max(1, len(labels)) + 0.1 for labels in panels]
    band = LEGEND_IN if legend else 0.0
    total = sum(heights) + band + 0.05
    figure = _figure(total, fixed=True)
    chars = max((len(text) for labels in panels for text in labels), default=10)
    left = min(0.6, (0.3 + 0.068 * chars) / WIDTH_IN)
    axes = []
    top = total - band
    for height in heights:
        # the title above, the tick labels and the axis label below the bars
        bottom = top - height + 0.6
        axes.append(figure.add_axes((left, bottom / total, 0.97 - left, (height - 0.95) / total)))
        top -= height
    return figure, axes


def _figure_legend(figure: Figure, handles: Sequence[Any]) -> None:
    """One legend for every panel, in the band at the figure's top."""
    if handles:
        figure.legend(
            handles=list(handles),
            loc="upper center",
            ncols=min(len(handles), 4),
            fontsize=7,
            frameon=False,
            bbox_to_anchor=(0.5, 1.0),
        )


def _colour(profile: str, profiles: list[str]) -> str:
    return _hex(profiles.index(profile))


def _hex(index: int) -> str:
    """The ``index``-th colour of the palette (tab10)."""
    return COLOURS[index % len(COLOURS)]


def _values(series: Sequence[float | None], scale: float = 1.0) -> list[float]:
    """A series for plotting: a non-finite value the JSON kept as null becomes a gap (nan)."""
    return [math.nan if v is None else v * scale for v in series]


def label(result: Result, several_profiles: bool) -> str:
    return f"{result.case.id} @ {result.profile.name}" if several_profiles else result.case.id


def _by(results: Sequence[Result], key: Callable[[Result], Any]) -> dict[Any, list[Result]]:
    groups: dict[Any, list[Result]] = {}
    for result in results:
        groups.setdefault(key(result), []).append(result)
    return groups


def throughput_chart(
    results: Sequence[Result], recommended: Collection[Result] = ()
) -> Chart | None:
    """Median tokens/s per case with p10-p90 whiskers, fastest at the top: a panel per
    workload (another model or sequence length is not the same scale). A case with too few
    measured steps for a spread has a hatched bar and no whiskers; a recommended one a
    black edge."""
    ran = [r for r in results if r.metrics.tokens_per_s is not None]
    if not ran:
        return None
    profiles = list(dict.fromkeys(r.profile.name for r in results))
    several = len(profiles) > 1
    groups = [
        sorted(group, key=lambda r: r.tokens_per_s or 0.0) for group in _by(ran, workload).values()
    ]
    groups.sort(key=len, reverse=True)  # the workload of the most cases first
    chosen = {id(r) for r in recommended}
    with matplotlib.rc_context(_RC):
        figure, axes = _panel_figure([[label(r, several) for r in g] for g in groups], True)
        for ax, group in zip(axes, groups, strict=True):
            ys = range(len(group))
            stats = [r.metrics.tokens_per_s for r in group]
            medians = [t.median if t else 0.0 for t in stats]
            spread = [has_spread(r) for r in group]
            # one call per kind of mark, not per case: a run of hundreds of cases stays quick
            bars = ax.barh(
                ys,
                medians,
                color=[_colour(r.profile.name, profiles) for r in group],
                height=0.7,
                edgecolor=["black" if id(r) in chosen else "none" for r in group],
                linewidth=[1.6 if id(r) in chosen else 0 for r in group],
            )
            for bar, has in zip(bars, spread, strict=True):
                if not has:
                    bar.set_hatch("///")
                    bar.set_alpha(0.45)
            whiskered = [(y, t) for y, t, has in zip(ys, stats, spread, strict=True) if has and t]
            if whiskered:
                wy, wt = zip(*whiskered, strict=True)
                ax.errorbar(
                    [t.median for t in wt],
                    wy,
                    xerr=[[t.median - t.p10 for t in wt], [t.p90 - t.median for t in wt]],
                    fmt="none",
                    ecolor="black",
                    capsize=2,
                    linewidth=0.8,
                )
            ax.set_yticks(list(ys), [label(r, several) for r in group])
            ax.set_ylim(-0.6, len(group) - 0.4)
            ax.set_xlim(left=0)
            ax.set_xlabel("tokens/s (median of the measured steps; whiskers p10-p90)")
            ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
            ax.set_title(workload(group[0]).label, loc="left", fontsize=9)
        _figure_legend(
            figure,
            _legend_handles(
                profiles if several else [],
                profiles,
                recommended=bool(chosen),
                few=not all(has_spread(r) for r in ran),
            ),
        )
        return Chart(
            to_svg(figure, "throughput"),
            "Tokens/s per case, one panel per workload (model, sequence length, data): cases "
            "are compared only within one. Hatched: fewer than "
            f"{MIN_MEASURED_STEPS} measured steps, no spread shown.",
        )


def _legend_handles(
    shown: Sequence[str], profiles: list[str], recommended: bool, few: bool
) -> list[Any]:
    """Legend entries: each profile's colour, the recommended case's edge, the hatched bar."""
    handles: list[Any] = [
        matplotlib.patches.Patch(color=_colour(p, profiles), label=p) for p in shown
    ]
    if recommended:
        handles.append(
            matplotlib.patches.Patch(
                facecolor="white", edgecolor="black", linewidth=1.6, label="recommended"
            )
        )
    if few:
        handles.append(
            matplotlib.patches.Patch(
                facecolor="white",
                edgecolor="grey",
                hatch="///",
                label=f"< {MIN_MEASURED_STEPS} measured steps",
            )
        )
    return handles


def _memory_bar(result: Result) -> tuple[float, str] | None:
    """(GiB, what) the memory chart draws for a case: the device's peak; on a cpu profile the
    host RSS above the runtime's (what the cap bounds, approximately), else the peak RSS;
    for a predicted case, the estimate."""
    m = result.metrics
    if result.predicted:
        return (result.estimate.peak_bytes / GIB, "estimate") if result.estimate else None
    if m.peak_device_bytes:
        return m.peak_device_bytes / GIB, "device"
    if m.peak_rss_bytes and result.profile.is_cpu and m.runtime_rss_bytes is not None:
        return max(0, m.peak_rss_bytes - m.runtime_rss_bytes) / GIB, "above-runtime"
    if m.peak_rss_bytes:
        return m.peak_rss_bytes / GIB, "rss"
    return None


def memory_chart(results: Sequence[Result], margin: float | None = None) -> Chart | None:
    """Peak memory per case against its profile's capacity, a panel per profile: the
    capacity as a line (and the capacity less the safety margin, dashed), the estimate as
    a diamond where one was made. A predicted case's bar is its estimate (hatched). On a
    cpu profile the bar is the host RSS above the runtime's, which the cap (RLIMIT_DATA
    above the runtime's data size) bounds; where the runtime's RSS was not recorded the
    panel draws the peak RSS and says why it has no capacity line."""
    drawn = [(r, bar) for r in results if (bar := _memory_bar(r)) is not None]
    if not drawn:
        return None
    bars = {id(r): bar for r, bar in drawn}
    # the largest at the top: what is above the capacity line reads at a glance
    ordered = sorted((r for r, _ in drawn), key=lambda r: bars[id(r)][0])
    by_profile = _by(ordered, lambda r: r.profile.name)
    notes: list[str] = []
    with matplotlib.rc_context(_RC):
        # a panel per profile: its cases need no "@ profile"
        figure, axes = _panel_figure([[r.case.id for r in g] for g in by_profile.values()], True)
        legend: dict[str, Any] = {}  # label -> handle: one legend for every panel
        for ax, (profile, group) in zip(axes, by_profile.items(), strict=True):
            values = [bars[id(r)] for r in group]
            handles = _memory_panel(ax, profile, group, values, margin, notes)
            legend.update((h.get_label(), h) for h in handles)
        _figure_legend(figure, list(legend.values()))
        if any(what == "above-runtime" for _, what in bars.values()):
            notes.insert(
                0,
                "On a cpu profile the bar is the host RSS above the runtime's when the cap was "
                "set: the cap (RLIMIT_DATA) counts the data allocated above it, so the bar is "
                "close to what the cap holds, not exactly it",
            )
        caption = (
            "Peak memory per case against its profile's capacity, one panel per profile."
            + "".join(f" {note}." for note in notes)
        )
        return Chart(to_svg(figure, "memory"), caption)


def _memory_panel(
    ax: Any,
    profile: str,
    group: list[Result],
    values: list[tuple[float, str]],
    margin: float | None,
    notes: list[str],
) -> list[Any]:
    """One profile's bars, capacity and estimates on ``ax``; the legend handles it drew
    (a panel without a capacity line adds the reason to ``notes``)."""
    ys = list(range(len(group)))
    drawn_bars = ax.barh(ys, [gib for gib, _ in values], color=_hex(0), height=0.7)
    for bar, (_, what) in zip(drawn_bars, values, strict=True):
        if what == "estimate":
            bar.set_hatch("///")
            bar.set_alpha(0.5)
    kinds = {what for _, what in values}
    title = f"{profile}: capacity {figures.gib(max(capacity_bytes(r) for r in group))} GiB"
    if "rss" in kinds:
        notes.append(
            f"{profile}: no capacity line: its cap counts the data size above the "
            "runtime's (RLIMIT_DATA), and these results did not record the runtime's "
            "RSS to set the peak RSS against it"
        )
        title += " (no line: the cap counts above the runtime's size, not recorded)"
        handles = []
    else:
        handles = _capacity_lines(ax, group, ys, margin)
    estimated = [
        (y, r.estimate.peak_bytes / GIB)
        for y, r in enumerate(group)
        if r.estimate and not r.predicted
    ]
    if estimated:
        ey, peaks = zip(*estimated, strict=True)
        (diamonds,) = ax.plot(peaks, ey, "D", color="black", markersize=3.5)
        diamonds.set_label("estimate")
        handles.append(diamonds)
    if "estimate" in kinds:
        handles.append(
            matplotlib.patches.Patch(
                facecolor=_hex(0), alpha=0.5, hatch="///", label="estimated, not run"
            )
        )
    ax.set_yticks(ys, [r.case.id for r in group])
    ax.set_ylim(-0.6, len(group) - 0.4)
    ax.set_xlim(left=0)
    ax.set_xlabel(_memory_axis(kinds))
    ax.set_title(title, loc="left", fontsize=9)
    return handles


def _capacity_lines(ax: Any, group: list[Result], ys: list[int], margin: float | None) -> list[Any]:
    """The capacity as a line (and the margin's, dashed, on a GPU); a mark on each bar where
    emulated capacities differ case by case."""
    capacities = {capacity_bytes(r) for r in group}
    if len(capacities) > 1:
        (mark,) = ax.plot(
            [capacity_bytes(r) / GIB for r in group],
            ys,
            "|",
            color="red",
            markersize=12,
            label="capacity",
        )
        return [mark]
    capacity = next(iter(capacities)) / GIB
    handles = [ax.axvline(capacity, color="red", linewidth=1.2, label="capacity")]
    if margin and not group[0].profile.is_cpu:
        handles.append(
            ax.axvline(
                capacity * (1 - margin),
                color="red",
                linestyle="--",
                linewidth=0.9,
                label=f"capacity less the {figures.percent(margin, 0)} % margin",
            )
        )
    return handles


def _memory_axis(kinds: set[str]) -> str:
    if kinds <= {"device", "estimate"}:
        return "GiB: peak device memory (the largest of NVML, reserved, allocated)"
    if "above-runtime" in kinds:
        return "GiB: peak host RSS above the runtime's (the cap counts data size above it)"
    return "GiB: peak host RSS of the worker's process tree"


LEGEND_MAX = 10  # curves named in a loss panel's legend; more are drawn grey, counted


def loss_chart(results: Sequence[Result], recommended: Collection[Result] = ()) -> Chart | None:
    """The loss per step, a panel per workload on learnable data (a loss on random data
    cannot fall, and two workloads' losses are not one scale). A panel names up to
    :data:`LEGEND_MAX` curves in its legend (the recommended case first, then the fastest);
    the others are drawn grey and counted."""
    curves = [r for r in results if r.series.loss and r.case.data == "learnable"]
    skipped = sum(1 for r in results if r.series.loss and r.case.data != "learnable")
    if not curves:
        return None
    several = len({r.profile.name for r in results}) > 1
    groups = list(_by(curves, workload).values())
    chosen = {id(r) for r in recommended}
    with matplotlib.rc_context(_RC):
        figure = _figure(0.4 + 3.2 * len(groups), width_in=11.0)  # the legend beside the axes
        axes = figure.subplots(len(groups), 1, squeeze=False)[:, 0]
        for ax, group in zip(axes, groups, strict=True):
            ordered = sorted(
                group, key=lambda r: (id(r) not in chosen, -(r.tokens_per_s or 0.0), r.case.id)
            )
            named, grey = ordered[:LEGEND_MAX], ordered[LEGEND_MAX:]
            for r in grey:
                ax.plot(
                    range(1, len(r.series.loss) + 1),
                    _values(r.series.loss),
                    linewidth=0.8,
                    color="lightgrey",
                )
            for index, r in enumerate(named):
                mine = id(r) in chosen  # drawn thick and on top: equal curves hide it otherwise
                ax.plot(
                    range(1, len(r.series.loss) + 1),
                    _values(r.series.loss),
                    linewidth=2.6 if mine else 1.0,
                    color=_hex(index),
                    zorder=3 if mine else 2,
                    alpha=0.8 if mine else 1.0,
                    label=label(r, several) + (" (recommended)" if mine else ""),
                )
            if grey:
                ax.plot([], [], color="lightgrey", label=f"{len(grey)} other case(s)")
            ax.set_xlabel("step (warm-up included)")
            ax.set_ylabel("loss (cross-entropy, nats)")
            ax.set_title(workload(group[0]).label, loc="left", fontsize=9)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        caption = "The loss per step, one panel per workload on learnable data."
        if skipped:
            caption += f" {skipped} case(s) on random data are not drawn: their loss cannot fall."
        return Chart(to_svg(figure, "loss"), caption)


class CaseCharts:
    """Each case's per-step series, drawn on one figure made once and reused (a run of
    200 cases draws 200 of them: building axes and ticks anew for each cost ~4x more):
    step time (the warm-up steps shaded: excluded from the figures), loss, memory after
    each step and gradient norm; a panel only for a series the case has."""

    PANELS = (  # title, y-axis label
        ("step time", "ms"),
        ("loss", "nats"),
        ("memory after the step", "GiB"),
        ("gradient norm", "L2 norm"),
    )

    def __init__(self) -> None:
        # no grid and titles at a fixed height: a panel's ticks and its title's placement
        # (measured against the tick labels) were most of the cost of each case's chart
        with matplotlib.rc_context({**_RC, "axes.grid": False}):
            self.figure = _figure(4.0, fixed=True)
            self.figure.subplots_adjust(
                left=0.09, right=0.98, bottom=0.12, top=0.92, wspace=0.28, hspace=0.75
            )
            self.axes = [self.figure.add_subplot(2, 2, i) for i in range(1, 5)]
            self.lines = [ax.plot([], [], linewidth=1, marker=".")[0] for ax in self.axes]
            self.warmup = self.axes[0].axvspan(
                0.5, 1.5, color="grey", alpha=0.2, label="warm-up (excluded)"
            )
            self.legend = self.axes[0].legend(fontsize=7, loc="upper right")
            for ax, (name, unit) in zip(self.axes, self.PANELS, strict=True):
                ax.set_title(name, fontsize=9, y=1.02)
                ax.set_ylabel(unit, fontsize=8)
                ax.set_xlabel("step", fontsize=8, labelpad=1)
                ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.4g}"))

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
        figure = _figure(2.0, width_in=4.0)
        ax = figure.add_subplot()
        xs = range(len(points) + 1)
        ys = [*points, result.tokens_per_s]
        ax.plot(xs[:-1], ys[:-1], marker="o", color="grey", linewidth=1, label="baseline runs")
        ax.plot([xs[-1]], [ys[-1]], marker="o", color="tab:blue", label="this run")
        ax.set_xticks(list(xs), [str(x + 1) for x in xs[:-1]] + ["this"])
        ax.set_xlabel("run (baseline's, oldest first; then this one)", fontsize=7)
        ax.set_ylabel("tokens/s", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        ax.legend(fontsize=6, loc="lower left")
        return to_svg(figure, chart_id)


# the phases in the order a step runs them (gpubench.worker.measure.phases' names); a phase
# of another name is drawn after them, in the order the record has it
PHASE_ORDER = ("data", "forward", "backward", "clip", "optimizer", "rest")


def _phase_names(results: Sequence[Result]) -> list[str]:
    seen = dict.fromkeys(name for r in results for name in r.metrics.phases)
    return [p for p in PHASE_ORDER if p in seen] + [p for p in seen if p not in PHASE_ORDER]


def phase_chart(results: Sequence[Result]) -> Chart | None:
    """Each case's step split into its phases: a stacked bar of the phases' median seconds
    per step (the L4 seed's timing breakdown), a panel per workload, the step's median as a
    tick beside it (the phase medians need not add up to it exactly: each is a median of its
    own)."""
    split = [r for r in results if r.metrics.phases and r.metrics.step_time_s is not None]
    if not split:
        return None
    several = len({r.profile.name for r in results}) > 1
    phases = _phase_names(split)
    groups = list(_by(split, workload).values())
    with matplotlib.rc_context(_RC):
        figure, axes = _panel_figure([[label(r, several) for r in g] for g in groups], True)
        handles: dict[str, Any] = {}
        for ax, group in zip(axes, groups, strict=True):
            ys = list(range(len(group)))
            left = [0.0] * len(group)
            for index, phase in enumerate(phases):
                widths = [
                    1000 * s.median if (s := r.metrics.phases.get(phase)) else 0.0 for r in group
                ]
                bars = ax.barh(ys, widths, left=left, color=_hex(index), height=0.7, label=phase)
                handles.setdefault(phase, bars)
                left = [a + b for a, b in zip(left, widths, strict=True)]
            steps = [1000 * r.metrics.step_time_s.median for r in group if r.metrics.step_time_s]
            (tick,) = ax.plot(steps, ys, "|", color="black", markersize=12)
            tick.set_label("median step time")
            handles.setdefault("median step time", tick)
            ax.set_yticks(ys, [label(r, several) for r in group])
            ax.set_ylim(-0.6, len(group) - 0.4)
            ax.set_xlim(left=0)
            ax.set_xlabel("ms per optimizer step (each phase's median over the measured steps)")
            ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
            ax.set_title(workload(group[0]).label, loc="left", fontsize=9)
        _figure_legend(figure, list(handles.values()))
        unsplit = sum(1 for r in results if r.metrics.tokens_per_s and not r.metrics.phases)
        caption = (
            "Time per phase of each case's step (data, forward, backward, gradient clipping, "
            "optimizer, the rest), one panel per workload; the tick is the median step time."
        )
        if unsplit:
            caption += f" {unsplit} case(s) without a phase split are not drawn."
        return Chart(to_svg(figure, "phases"), caption)


# (Series.telemetry key, what it is, unit): the readings a case's telemetry chart draws,
# a panel each where the case has it
TELEMETRY_PANELS = (
    ("gpu_util", "GPU utilisation", "%"),
    ("cpu_util", "CPU utilisation (process tree; 100 = one core)", "%"),
    ("power_w", "power", "W"),
    ("temperature_c", "temperature", "°C"),
    ("sm_clock_mhz", "SM clock", "MHz"),
)


def telemetry_chart(result: Result, chart_id: str) -> str | None:
    """A case's telemetry over its measured steps (Series.telemetry, against ``t_s``): GPU
    utilisation, power, temperature and SM clock on a GPU, the process tree's CPU utilisation
    on a CPU; a panel per reading the case has. None without telemetry."""
    series = result.series.telemetry
    times = series.get("t_s") or []
    panels = [
        (key, what, unit)
        for key, what, unit in TELEMETRY_PANELS
        if len(series.get(key) or []) == len(times) and times
    ]
    if not panels:
        return None
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        figure = _figure(2.0, fixed=True)
        figure.subplots_adjust(left=0.06, right=0.99, bottom=0.22, top=0.86, wspace=0.3)
        for index, (key, what, unit) in enumerate(panels):
            ax = figure.add_subplot(1, len(panels), index + 1)
            ax.plot(times, _values(series[key]), linewidth=1, color=_hex(index))
            ax.set_title(f"{what}, {unit}", fontsize=8, loc="left")
            ax.set_xlabel("s since the first measured step", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.4g}"))
        return to_svg(figure, chart_id)
