"""No false alarms, end to end: a new user's first day (issue 17).

- The first run after install builds DeepSpeed's ops (an empty op cache): the run is
  cold, says so, and ``--gpubench-save-baseline`` does not record it; the next run is
  warm and is recorded; the run after that, judged against it, flags nothing.
- Two runs of one seed whose warm-ups took different numbers of steps train to
  different final losses, and are judged equal: the loss is compared at the same step.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

# numpy (under pandas) cannot be imported twice in one process: load the tables first
import gpubench.baseline.table  # noqa: F401
import gpubench.session.summary  # noqa: F401
from gpubench.baseline.compare import UNCHANGED, compare
from gpubench.baseline.rules import GateRules
from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.runner import run_case

pytest_plugins = ("pytester",)

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install 'gpubench[deepspeed]')",
)

DEEPSPEED_SUITE = """
import gpubench


@gpubench.single_case(model="gpt-tiny", batch_size=4, seq_len=32, steps=4, warmup=1,
                      engine="deepspeed", zero_stage=2)
def test_zero2(gpubench_result):
    assert gpubench_result.fits, gpubench_result.describe()
"""


@needs_deepspeed
def test_a_first_run_that_builds_ops_is_not_saved_and_the_next_is(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """~45 s of the shm_comm build from an empty op cache on the 2-vCPU VM, then 3 runs."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))  # empty
    monkeypatch.setenv("COLUMNS", "120")
    pytester.makepyfile(test_first_day=DEEPSPEED_SUITE)
    baseline = pytester.path / "baselines" / "cpu" / "test_first_day.json"

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "--gpu-profile", "cpu", "-p", "no:cacheprovider", "-q", *args, timeout=600
        )

    first = run("--gpubench-save-baseline")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        [
            "*cold start: built DeepSpeed op(s) deepspeed_shm_comm into*",
            "*not saved as a baseline*",
        ]
    )
    assert not baseline.exists() or not json.loads(baseline.read_text())["cases"]
    cold = json.loads((pytester.path / "reports" / "latest" / "results.jsonl").read_text())
    assert cold["cold_start"] and cold["gate_thresholds"]["tokens_per_s"] == 0.10

    second = run("--gpubench-save-baseline")
    second.assert_outcomes(passed=1)
    assert "cold start" not in second.stdout.str()
    assert [len(e["history"]) for e in json.loads(baseline.read_text())["cases"].values()] == [1]

    third = run()
    third.assert_outcomes(passed=1)
    assert "REGRESSION" not in third.stdout.str()


def test_two_runs_of_one_seed_with_different_warm_ups_are_judged_equal() -> None:
    """gpt-tiny, one seed: 2 and 10 warm-up steps before the same 12 measured ones. The
    final losses differ (14 and 22 steps trained); the loss after 14 steps is the same, to
    the bit on CPU, and the gate compares that."""
    short_case = make_case(
        model="gpt-tiny", batch_size=8, seq_len=64, steps=12, warmup=2, lr=3e-3, seed=7
    )
    long_case = dataclasses.replace(short_case, warmup=10)
    cpu = resolve_profile("cpu")
    short = run_case(short_case, cpu, timeout_s=300)
    longer = run_case(long_case, cpu, timeout_s=300)
    assert short.ran and longer.ran, (short.describe(), longer.describe())
    # as an automatic warm-up would have it: one case, two warm-up lengths
    longer = dataclasses.replace(longer, case=short.case)
    assert longer.metrics.warmup_steps == 10 and short.metrics.warmup_steps == 2
    assert longer.series.loss[:14] == short.series.loss
    final_short, final_long = short.metrics.loss_end, longer.metrics.loss_end
    assert final_short is not None and final_long is not None
    drift = final_short / final_long - 1
    assert drift > 0.01, (final_short, final_long)
    tight = GateRules().with_thresholds({"loss": drift / 2})  # the final losses would fail it
    for new, old in ((short, longer), (longer, short)):
        loss = next(m for m in compare(new, [old], tight).metrics if m.metric == "loss")
        assert loss.decision == UNCHANGED and loss.at_step == 14
        assert loss.old == loss.new == short.series.loss_at(14)


def test_torch_compile_filling_its_cache_makes_a_run_cold() -> None:
    """Counters read before and after a run: misses mean this run compiled and wrote what a
    later run reads back (26 s against 3.7 s for a small MLP on the 2-vCPU VM)."""
    from gpubench.worker.engines.warmth import compile_cold_start

    before = {"inductor.fxgraph_cache_miss": 1, "aot_autograd.autograd_cache_miss": 0}
    warm = compile_cold_start(before, dict(before))
    cold = compile_cold_start(
        before, {"inductor.fxgraph_cache_miss": 3, "aot_autograd.autograd_cache_miss": 1}
    )
    assert warm == []
    assert len(cold) == 1 and cold[0].startswith(
        "torch.compile compiled 2 inductor graph(s) and 1 AOT autograd graph(s) not in its cache"
    )


def test_a_rebuilt_op_library_is_found(tmp_path: Path) -> None:
    from gpubench.worker.engines.deepspeed_setup import op_library_versions

    library = tmp_path / "cpu_adam" / "cpu_adam.so"
    assert op_library_versions(["cpu_adam"], tmp_path) == {"cpu_adam": None}
    library.parent.mkdir()
    library.write_bytes(b"old")
    before = op_library_versions(["cpu_adam"], tmp_path)
    assert op_library_versions(["cpu_adam"], tmp_path) == before  # untouched: warm
    fresh = library.with_suffix(".tmp")
    fresh.write_bytes(b"new")
    fresh.replace(library)  # as a build writes it
    assert op_library_versions(["cpu_adam"], tmp_path) != before
