"""``gpubench estimate``: the table and verdict lines, the JSON shape, every memory setting of
the Case as an option, and exit 2 with one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpubench.cli import main
from gpubench.cli.estimate import config_value
from gpubench.contracts.case import make_case
from gpubench.contracts.catalog.sizes import builtin_config, gpt_param_count

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
        (["--model-config", "n_head=5"], "n_embd=64 must be divisible by n_head=5"),
        (["--model-config", "n_layr=2"], "n_layr not known to built-in 'gpt-tiny'; valid keys"),
        (["--model-config", "n_layer"], "--model-config 'n_layer' must be KEY=VALUE"),
        (["--model-config", "=2"], "--model-config '=2' must be KEY=VALUE"),
        (["--model-config", "n_layer=1", "--model-config", "n_layer=2"], "given more than once"),
        (["--model-config", "dropout=1.5"], "dropout=1.5 must be in [0, 1)"),
        (["--model-config", "bias=maybe"], "bias='maybe' must be True or False"),
        (["--data", "zipf"], "data='zipf' is not valid; valid values: learnable, random"),
        (["--grad-clip", "abc"], "grad_clip='abc' must be a positive, finite number, or none"),
        (["--grad-clip", "0"], "grad_clip=0.0 must be a positive, finite number"),
        (["--engine", "fsdp", "--zero-stage", "2"], "engine='fsdp' always shards"),
        (["--engine", "gloo"], "engine='gloo' is not valid; valid values: torch, deepspeed, fsdp"),
        (["--attention", "flash"], "attention='flash' is not valid; valid values: sdpa, math"),
        (["--offload-optimizer"], "offload_optimizer=True needs zero_stage 1, 2 or 3"),
        (["--tf32", "--profile", "cpu"], "tf32=True means nothing on profile 'cpu'"),
        (["--expect-params", "124000000"], "the model built has 124,672 (-100 %"),
        (
            ["--model", "hf:gpt2", "--model-config", "n_head=5", "--model-config", "n_layer=1"],
            "model 'hf:gpt2' cannot be built with n_head=5, n_layer=1",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if any(a.startswith("hf:") for a in args):
        pytest.importorskip("transformers")
    code = main([*TINY, *args])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("gpubench estimate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", 8),
        ("-2", -2),
        ("0.1", 0.1),
        ("1e-5", 1e-5),
        ("true", True),
        ("False", False),
        ("none", None),
        ("gelu", "gelu"),
        ("inf", "inf"),  # no finite float: text, which the model's config then judges
        ("", ""),
    ],
)
def test_a_model_config_value_reads_as_what_it_looks_like(text: str, value: object) -> None:
    assert config_value(text) == value and type(config_value(text)) is type(value)


def test_every_memory_setting_of_the_case_is_an_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The options build the Case a suite would declare (the same id), and a model_config
    that removes layers shrinks what the estimate counts for them."""
    settings = [
        *("--model-config", "n_layer=1", "--model-config", "dropout=0.1"),
        *("--data", "random", "--grad-clip", "none", "--vocab-size", "512"),
        *("--precision", "fp16", "--tf32", "--grad-accum", "2", "--attention", "math"),
    ]
    code, out, _ = run(capsys, *settings, "--profile", "rtx5080", "--json")
    assert code == 0
    record = json.loads(out)
    declared = make_case(
        model="gpt-tiny",
        batch_size=2,
        seq_len=16,
        model_config={"n_layer": 1, "dropout": 0.1},
        data="random",
        grad_clip=None,
        vocab_size=512,
        precision="fp16",
        tf32=True,
        grad_accum=2,
        attention="math",
    )
    assert record["case"] == declared.id
    _, out, _ = run(capsys, "--profile", "rtx5080", "--json")
    two_layers = json.loads(out)
    _, out, _ = run(capsys, "--model-config", "n_layer=1", "--profile", "rtx5080", "--json")
    one_layer = json.loads(out)
    # gpt-tiny has 2 blocks of 12 x 64^2 + 13 x 64 parameters, 4 bytes each in fp32
    removed = 4 * (12 * 64**2 + 13 * 64)
    assert two_layers["breakdown"]["parameters"] - one_layer["breakdown"]["parameters"] == removed


def _built_params(**settings: object) -> int:
    config = builtin_config(make_case(model="gpt-tiny", seq_len=16, **settings))
    return gpt_param_count(config.n_layer, config.n_embd, config.vocab_size, config.block_size)


def test_expect_params_is_checked_against_the_built_in_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The count the worker would check: the exact one passes, within ±10 % passes, beyond
    it is refused before anything is estimated."""
    exact = _built_params()
    for declared in (exact, int(exact * 1.09)):
        code, out, _ = run(capsys, "--expect-params", str(declared), "--profile", "cpu", "--json")
        assert code == 0 and json.loads(out)["verdict"] == "fits"
    code, out, err = run(capsys, "--expect-params", str(int(exact * 1.2)), "--profile", "cpu")
    assert code == 2 and out == ""
    assert f"the model built has {exact:,} (-17 %, beyond ±10 %)" in err


def test_a_factory_refusing_its_model_config_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory's own refusal, even over two lines, comes back as the CLI's one line."""
    (tmp_path / "refusing_models.py").write_text(
        "import torch\n"
        "def make(width: int = 64, heads: int = 4):\n"
        "    if width % heads:\n"
        "        raise ValueError(f'width={width} is not divisible\\nby heads={heads}')\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(256, width))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    code = main(
        [*TINY, "--model", "refusing_models:make", "--model-config", "heads=5", "--profile", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "width=64 is not divisible by heads=5" in err
