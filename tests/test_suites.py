"""The shipped suites collect, with the ids and skips they declare (no case runs here;
running the CPU smoke suite is README's first command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_SUITES = [
    "suites/test_model_ladder.py",
    "suites/test_readiness.py",
    "suites/test_warmup_probe.py",
]


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_suites_collect_on_cpu_and_gpu_profiles() -> None:
    proc = _pytest("suites", "--collect-only", "-q", "--gpu-profile", "cpu,rtx5080")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    smoke = "suites/test_cpu_smoke.py::test_precision_and_checkpointing"
    assert f"{smoke}[gpt-mini-bf16-ckpt-b4-s64-n6-lr0.001-maxwarm4-cpu]" in ids
    assert any("test_ladder[gpt-1b-bf16-ckpt-s512-n30-rtx5080]" in i for i in ids)
    assert any("zero2-offopt" in i and i.endswith("-rtx5080]") for i in ids)
    # 10 smoke + 20 ladder + 6 readiness + 8 warm-up probe + 17 estimator + 6 batch probe
    assert len(ids) == 2 * 67


def test_gpu_suites_skip_on_cpu_with_their_reason() -> None:
    proc = _pytest(*GPU_SUITES, "--gpu-profile", "cpu", "-rs", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "declared for GPU profiles; profile 'cpu' has no GPU" in proc.stdout
    assert " passed" not in proc.stdout and "skipped" in proc.stdout
    assert not (ROOT / "reports" / "latest").exists() or "gpubench summary" not in proc.stdout
