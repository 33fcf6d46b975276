"""How noisy is a suite from run to run, and what does the gate make of it?

    for i in 1 2 3 4 5 6 7 8; do
        pytest suites/ --gpu-profile cpu --gpubench-dir /tmp/quiet -p no:cacheprovider -q
    done
    python benchmarks/gate_noise.py /tmp/quiet/2026*/ --slowed /tmp/busy/2026*/ \\
        --out docs/benchmarks/gate-noise.json

Reads the results of repeated runs of the same suite on the same machine
("quiet" runs: nothing else running; ``--slowed``: the same, made slower for
real, e.g. with busy processes on the cores) and reports, per case and gated
metric, the run-to-run spread (coefficient of variation of the run values),
then replays the gate (:func:`gpubench.baseline.compare.compare`, default rules
or ``--threshold``) on every way of choosing ``--history`` quiet runs as the
baseline and one other quiet run as the new run:

- false alarms: the share of such comparisons in which an unchanged run is
  judged a regression (per case and metric, and per whole suite run);
- detection: the same with the new run's step times stretched by
  ``--planted`` (10 %: a planted slowdown with the machine's real noise), and,
  with ``--slowed``, each slowed run against every quiet history.

A case that looks regressed is confirmed as the plugin does (``--confirm``
reruns, judged on the median), the reruns here being other quiet runs (planted
alike) outside the history: runs taken minutes apart, where the plugin's
reruns follow at once, on the same moment of the machine. So the figures
with confirmation are a lower bound of false alarms from short bursts and an
upper bound for slower stretches of minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

from gpubench.baseline.compare import REGRESSION, compare
from gpubench.baseline.gated import GATED_METRICS
from gpubench.baseline.rules import GateRules, parse_thresholds
from gpubench.contracts.result import Result, Series, Stats
from gpubench.storage import read_results


def load_runs(paths: list[Path]) -> list[dict[str, Result]]:
    """Each run's Results by case id (the cases that trained to the end); a path is a run
    directory or its results.jsonl."""
    runs = []
    for path in paths:
        results = read_results(path / "results.jsonl" if path.is_dir() else path)
        runs.append({r.case.id: r for r in results if r.ran})
    return [r for r in runs if r]


def slowed_down(result: Result, factor: float) -> Result:
    """``result`` as if every step had taken ``factor`` times as long."""
    times = [t * factor for t in result.series.step_time_s]
    m = result.metrics
    measured = times[m.warmup_steps :]
    tokens = Stats.of([m.tokens_per_step / t for t in measured]) if measured else None
    metrics = dataclasses.replace(
        m, step_time_s=Stats.of(measured) if measured else None, tokens_per_s=tokens
    )
    series = dataclasses.replace(result.series, step_time_s=times)
    assert isinstance(series, Series)
    return dataclasses.replace(result, metrics=metrics, series=series)


def grown(result: Result, factor: float) -> Result:
    """``result`` as if its host and device memory peaks had been ``factor`` times larger."""
    m = result.metrics
    scaled = {
        name: int(value * factor)
        for name in ("peak_rss_bytes", "peak_allocated_bytes", "peak_reserved_bytes")
        if (value := getattr(m, name)) is not None
    }
    return dataclasses.replace(result, metrics=dataclasses.replace(m, **scaled))


def spread(runs: list[dict[str, Result]]) -> dict[str, dict[str, float]]:
    """Per case, per metric: coefficient of variation of the run values across runs."""
    table: dict[str, dict[str, float]] = {}
    for case_id in sorted(set().union(*runs)):
        row = {}
        for metric in GATED_METRICS:
            values = [v for run in runs if case_id in run if (v := metric.value(run[case_id]))]
            if len(values) >= 2:
                row[metric.name] = statistics.stdev(values) / statistics.fmean(values)
        table[case_id] = row
    return table


def replay(
    runs: list[dict[str, Result]],
    new_runs: list[dict[str, Result]] | None,
    history: int,
    rules: GateRules,
    planted: float = 1.0,
    limit: int = 400,
    memory: float = 1.0,
) -> dict[str, float]:
    """The share of comparisons judged a regression: per (case, metric), and per suite run
    (any case regressed). ``new_runs`` None: leave-one-out among ``runs``. ``planted``
    stretches the new runs' step times, ``memory`` their memory peaks."""

    def plant(result: Result) -> Result:
        if planted != 1.0:
            result = slowed_down(result, planted)
        return grown(result, memory) if memory != 1.0 else result

    rng = random.Random(0)
    trials = []
    for new_index in range(len(new_runs) if new_runs is not None else len(runs)):
        pool = list(range(len(runs)))
        if new_runs is None:
            pool.remove(new_index)
        for chosen in itertools.combinations(pool, min(history, len(pool))):
            trials.append((new_index, chosen))
    rng.shuffle(trials)
    trials = trials[:limit]
    per_metric: dict[str, list[bool]] = defaultdict(list)
    per_suite = []
    for new_index, chosen in trials:
        new_run = (new_runs if new_runs is not None else runs)[new_index]
        spare = [i for i in range(len(runs)) if i not in chosen and (new_runs or i != new_index)]
        any_regressed = False
        for case_id, new in new_run.items():
            new = plant(new)
            baseline = [runs[i][case_id] for i in chosen if case_id in runs[i]]
            verdict = compare(new, baseline, rules)
            if verdict.regressed and rules.confirm:
                reruns = [runs[i][case_id] for i in spare[: rules.confirm] if case_id in runs[i]]
                if new_runs is not None:  # a slowed run's reruns would be slowed too
                    reruns = [new_runs[new_index][case_id]] * len(reruns)
                else:
                    reruns = [plant(r) for r in reruns]
                verdict = compare(new, baseline, rules, reruns)
            any_regressed = any_regressed or verdict.regressed
            per_metric["status"].append(verdict.status_decision == REGRESSION)
            for m in verdict.metrics:
                per_metric[m.metric].append(m.decision == REGRESSION)
        per_suite.append(any_regressed)
    shares = {name: sum(flags) / len(flags) for name, flags in per_metric.items() if flags}
    shares["suite"] = sum(per_suite) / len(per_suite) if per_suite else 0.0
    shares["trials"] = len(trials)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "quiet", type=Path, nargs="+", help="runs (dirs or results files), nothing else running"
    )
    parser.add_argument("--slowed", type=Path, nargs="*", default=[], help="slowed runs")
    parser.add_argument("--history", type=int, default=5, help="baseline runs per trial")
    parser.add_argument(
        "--planted", type=float, nargs="+", default=[1.10], help="step-time factors"
    )
    parser.add_argument(
        "--memory", type=float, nargs="*", default=[1.05, 1.08, 1.1], help="memory-peak factors"
    )
    parser.add_argument("--threshold", type=parse_thresholds, default=None)
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--confirm", type=int, default=None, help="reruns (default: the gate's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rules = GateRules().with_thresholds(args.threshold or {})
    if args.alpha is not None:
        rules = dataclasses.replace(rules, alpha=args.alpha)
    if args.confirm is not None:
        rules = dataclasses.replace(rules, confirm=args.confirm)
    quiet = load_runs(args.quiet)
    slowed = load_runs(args.slowed)
    report = {
        "command": "python benchmarks/gate_noise.py " + " ".join(map(str, args.quiet)),
        "quiet_runs": len(quiet),
        "slowed_runs": len(slowed),
        "history": args.history,
        "thresholds": dict(rules.thresholds),
        "alpha": rules.alpha,
        "confirm": rules.confirm,
        "spread_cv": spread(quiet),
        "false_alarms": replay(quiet, None, args.history, rules),
    }
    for factor in args.planted:
        report[f"planted_slowdown_{factor:g}"] = replay(quiet, None, args.history, rules, factor)
    for factor in args.memory:
        report[f"planted_memory_{factor:g}"] = replay(
            quiet, None, args.history, rules, memory=factor
        )
    if slowed:
        report["slowed_detected"] = replay(quiet, slowed, args.history, rules)
    for name, shares in report.items():
        if isinstance(shares, dict) and "trials" in shares:
            line = ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if k != "trials")
            print(f"{name} ({shares['trials']} trials): {line}")
    print("run-to-run CV per case:")
    for case_id, row in report["spread_cv"].items():
        print(f"  {case_id}: " + ", ".join(f"{k} {v:.1%}" for k, v in row.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
