"""``gpubench estimate``: the table and verdict lines, the JSON shape, and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest

from gpubench.cli import main

TINY = ["estimate", "--model", "gpt-tiny", "--batch-size", "2", "--seq-len", "16", "--no-trace"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*TINY, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_one_profile_is_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--profile", "rtx5080", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["profile"] == "rtx5080" and record["case"] == "gpt-tiny-fp32-b2-s16"
    assert isinstance(record["peak_bytes"], int)
    assert record["peak_bytes"] == sum(record["breakdown"].values())
    assert record["headroom_bytes"] == record["capacity_bytes"] - record["peak_bytes"]
    assert record["verdict"] == "fits"
    for key in ("method", "host_bytes", "host_breakdown", "traced_peak_bytes", "notes"):
        assert key in record


def test_several_profiles_give_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--profile", "rtx5080,cpu:2GiB", "--profile", "h100-sxm", "--json")
    assert code == 0
    records = json.loads(out)
    assert [r["profile"] for r in records] == ["rtx5080", "cpu", "h100-sxm"]
    assert records[1]["capacity_bytes"] == 2 * 1024**3
    assert records[1]["breakdown"]["cuda_context"] == 0 < records[0]["breakdown"]["cuda_context"]


def test_table_and_verdict_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--profile", "rtx5080", "--precision", "bf16", "--grad-ckpt")
    assert code == 0
    assert "gpt-tiny-bf16-ckpt-b2-s16 on rtx5080 (cuda)" in out
    assert "activations" in out and "traced MiB" in out  # a peak under 1 GiB: MiB
    assert out.strip().splitlines()[-1].startswith("rtx5080: peak ")
    assert "-> fits (not traced)" in out


def test_offload_reports_host_memory(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--engine", "deepspeed", "--zero-stage", "3", "--precision", "bf16"]
    code, out, _ = run(
        capsys, *args, "--offload-optimizer", "--offload-params", "--profile", "l4", "--json"
    )
    assert code == 0
    record = json.loads(out)
    assert record["host_bytes"] == sum(record["host_breakdown"].values()) > 0
    assert record["breakdown"]["parameters"] == 0


def test_oom_on_a_small_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--batch-size", "64", "--seq-len", "128", "--profile", "cpu:16MiB")
    assert code == 0
    assert "-> oom" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-tinyy"], "did you mean 'gpt-tiny'?"),
        (["--profile", "rtx9090"], "unknown hardware profile 'rtx9090'; valid: cpu, rtx3060"),
        (["--precision", "fp8"], "precision='fp8' is not valid; valid values: fp32, bf16, fp16"),
        (["--zero-stage", "2"], "zero_stage=2: zero_stage/offload flags need engine='deepspeed'"),
        (
            ["--engine", "deepspeed", "--zero-stage", "2", "--offload-params"],
            "offload_params=True needs zero_stage=3",
        ),
        (["--precision", "fp16", "--profile", "cpu"], "valid on cpu: fp32, bf16"),
        (["--model", "no_such_pkg.mod:make"], "no module 'no_such_pkg' on the import path"),
        (["--model", "hf:gpt3"], "did you mean"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if "hf:gpt3" in args:
        pytest.importorskip("transformers")
    code = main([*TINY, *args])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("gpubench estimate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
