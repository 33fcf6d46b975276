"""The TensorBoard exporter: each case's per-step series as a run, read back with
TensorBoard's own reader; without tensorboard, the install hint."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pytest
from report_fixtures import MARKUP, RUN_CPU

from gpubench.report.load import load_runs
from gpubench.report.tensorboard import TensorBoardMissing, export_tensorboard, folder_name


def test_each_case_becomes_a_run_with_its_series(tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorboard", reason="tensorboard is not installed (the test extra has it)"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = list(load_runs([RUN_CPU]).results)
    written = export_tensorboard(results, tmp_path)
    assert len(written) == len(results)
    for result, folder in zip(results, written, strict=True):
        assert folder.resolve().is_relative_to(tmp_path.resolve())
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = events.Tags()["scalars"]
        finite = [v for v in result.series.loss if v is not None and math.isfinite(v)]
        loss = events.Scalars("loss") if "loss" in tags else []
        assert [e.value for e in loss] == pytest.approx(finite, rel=1e-6)
        if result.series.step_time_s:
            times = [e.value for e in events.Scalars("step_time_ms")]
            assert times == pytest.approx([1000 * t for t in result.series.step_time_s], rel=1e-6)


def test_a_case_id_never_leaves_the_folder() -> None:
    assert "/" not in folder_name(MARKUP) and "<" not in folder_name(MARKUP)
    assert folder_name("../../etc") != folder_name("etc")
    assert folder_name("gpt-mini-fp32") == "gpt-mini-fp32"


def test_without_tensorboard_the_export_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("TensorBoard logging requires TensorBoard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(TensorBoardMissing, match=r"pip install tensorboard"):
        export_tensorboard(list(load_runs([RUN_CPU]).results), tmp_path)
