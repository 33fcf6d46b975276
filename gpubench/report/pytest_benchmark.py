"""A gpubench run in pytest-benchmark's saved-run format, for ``pytest-benchmark compare``.

One benchmark per case that trained to the end: its rounds are the measured
optimizer steps (seconds per step, one iteration each), summarised by
pytest-benchmark's own :class:`pytest_benchmark.stats.Stats`, so its tables
and ``compare`` read them as they read any saved run. ``machine_info`` and
``commit_info`` describe where the cases ran (the Results' environment), with
gpubench's device fields added.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from gpubench.contracts.result import Result


def _stats(result: Result) -> dict[str, Any]:
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for seconds in result.series.step_time_s[result.metrics.warmup_steps :]:
        stats.update(seconds)
    data = stats.as_dict()
    data["data"] = list(stats.data)
    data["iterations"] = 1
    return data


def _benchmark(result: Result) -> dict[str, Any]:
    name = (result.nodeid or result.case.id).rsplit("::", 1)[-1]
    m = result.metrics
    return {
        "group": result.profile.name,
        "name": name,
        "fullname": result.nodeid or f"{result.case.id}-{result.profile.name}",
        "params": {"case": result.case.id, "profile": result.profile.name},
        "param": f"{result.case.id}-{result.profile.name}",
        "extra_info": {
            "status": result.status,
            "tokens_per_step": m.tokens_per_step,
            "tokens_per_s_median": result.tokens_per_s,
            "peak_memory_bytes": m.peak_memory_bytes,
            "peak_memory_source": m.peak_memory_source,
            "loss_start": m.loss_start,
            "loss_end": m.loss_end,
            "warmup_steps": m.warmup_steps,
        },
        "options": {
            "timer": m.timing,
            "min_rounds": m.measured_steps,
            "warmup": m.warmup_steps > 0,
            "disable_gc": False,
            "max_time": None,
            "min_time": None,
        },
        "stats": _stats(result),
    }


def _machine_info(result: Result) -> dict[str, Any]:
    env = result.environment
    system, _, release = env.platform.partition("-")
    return {
        "node": env.hostname,
        "processor": env.cpu,
        "machine": "",
        "python_implementation": "CPython",
        "python_version": env.python,
        "system": system,
        "release": release,
        "cpu": {"brand_raw": env.cpu, "count": env.cpu_count},
        "gpubench": {
            "device": env.device,
            "driver": env.driver,
            "cuda": env.cuda,
            "torch": env.torch,
            "deepspeed": env.deepspeed,
            "version": env.gpubench,
        },
    }


def _commit_info(result: Result) -> dict[str, Any]:
    env = result.environment
    return {
        "id": env.git_commit or "unversioned",
        "dirty": bool(env.git_dirty),
        "project": "gpubench",
        "branch": None,
        "time": result.started_at or None,
    }


def pytest_benchmark_json(results: Sequence[Result]) -> dict[str, Any]:
    """The saved-run document of ``results`` (the cases that trained to the end)."""
    from pytest_benchmark import __version__

    ran = [r for r in results if r.ran and r.metrics.measured_steps > 0]
    first = ran[0] if ran else (results[0] if results else None)
    return {
        "machine_info": _machine_info(first) if first else {},
        "commit_info": _commit_info(first) if first else {"id": "unversioned", "dirty": False},
        "benchmarks": [_benchmark(r) for r in ran],
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": __version__,
    }
