from __future__ import annotations

import json
import math

import pytest

from gpubench.contracts.case import MAX_NAME_CHARS, Case, CaseError, Flags, make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result, Stats

CPU = resolve_profile("cpu")


def test_id_names_model_precision_and_non_default_flags() -> None:
    assert make_case(model="gpt2-small", precision="bf16", grad_ckpt=True).id == (
        "gpt2-small-bf16-ckpt"
    )
    assert make_case(model="gpt2-small").id == "gpt2-small-fp32"
    case = make_case(model="gpt2-medium", grad_accum=4, attention="math", batch_size=16)
    assert case.id == "gpt2-medium-fp32-accum4-math-b16"
    assert make_case(model="gpt-tiny", name="custom").id == "custom"


def test_every_setting_a_matrix_can_sweep_shows_in_the_id() -> None:
    from gpubench import matrix

    assert matrix(model="gpt-tiny", lr=[1e-3, 3e-4], warmup=[0, "auto"]).ids == [
        "gpt-tiny-fp32-lr0.001-warm0",
        "gpt-tiny-fp32-lr0.001",
        "gpt-tiny-fp32-warm0",
        "gpt-tiny-fp32",
    ]
    case = make_case(model="gpt-tiny", model_config={"n_layer": 3}, vocab_size=512, grad_clip=0.5)
    assert case.id == "gpt-tiny-fp32-clip0.5-vocab512-n_layer3"
    ds = make_case(model="gpt-500m", engine="deepspeed", zero_stage=2, offload_optimizer=True)
    assert ds.id == "gpt-500m-fp32-zero2-offopt-deepspeed"


def test_id_of_external_model_is_pytest_friendly() -> None:
    assert make_case(model="my_models.zoo:build").id == "my_models.zoo.build-fp32"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"precision": "fp8"}, "precision='fp8' is not valid; valid values: fp32, bf16, fp16"),
        ({"attention": "flash"}, "valid values: sdpa, math"),
        ({"grad_accum": 0}, "grad_accum=0 must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"grad_ckpt": "yes"}, "grad_ckpt='yes' must be True or False"),
        ({"data": "wikitext"}, "valid values: learnable, random"),
        ({"engine": "jax"}, "engine='jax'"),
        ({"warmup": "sometimes"}, "warmup='sometimes'"),
        ({"precison": "bf16"}, "unknown case setting(s) precison; valid settings:"),
        ({"grad_clip": 0}, "grad_clip=0 must be a positive, finite number, or None for no"),
        ({"grad_clip": -1.0}, "grad_clip=-1.0 must be a positive, finite number"),
        ({"grad_clip": float("nan")}, "grad_clip=nan must be a positive, finite number"),
        ({"grad_clip": "1"}, "grad_clip='1' must be a positive, finite number"),
        ({"grad_clip": math.inf}, "grad_clip=inf is not valid; use grad_clip=None for no clip"),
        ({"model_config": [("n_layer",)]}, "model_config entry ('n_layer',) must be a (str"),
        ({"model_config": (("n_layer", 2), ("n_layer", 3))}, "n_layer given more than once"),
        ({"lr": True}, "lr=True must be a positive, finite number"),
        ({"lr": float("inf")}, "lr=inf must be a positive, finite number"),
        ({"seed": "x"}, "seed='x' must be an integer >= 0"),
        ({"timeout_s": "abc"}, "timeout_s='abc' must be a positive, finite number"),
        ({"zero_stage": 2}, "zero_stage/offload flags need engine='deepspeed'"),
        ({"engine": "deepspeed", "zero_stage": 4}, "zero_stage=4 is not valid; valid values"),
        ({"engine": "deepspeed", "offload_params": True, "zero_stage": 2}, "needs zero_stage=3"),
        (
            {
                "engine": "deepspeed",
                "zero_stage": 2,
                "offload_optimizer": True,
                "fused_adamw": True,
            },
            "fused_adamw=True cannot apply with offload_optimizer=True",
        ),
    ],
)
def test_bad_values_name_the_value_and_the_valid_ones(settings: dict, message: str) -> None:
    with pytest.raises(CaseError) as excinfo:
        make_case(model="gpt-tiny", **settings)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    "name",
    [5, "", "   ", "clear\x1b[2J", "two\nlines", "tab\there", "x" * (MAX_NAME_CHARS + 1)],
    ids=["int", "empty", "blank", "escape", "newline", "tab", "too-long"],
)
def test_a_name_must_be_printable_text_of_sane_length(name: object) -> None:
    with pytest.raises(CaseError, match="must be printable text of 1 to 120 characters"):
        make_case(model="gpt-tiny", name=name)


@pytest.mark.parametrize("name", ["ladder: 1.3B, bf16 (Ümlaut)", "x" * MAX_NAME_CHARS])
def test_a_printable_name_is_the_id(name: str) -> None:
    assert make_case(model="gpt-tiny", name=name).id == name


def test_case_round_trips_through_json() -> None:
    case = make_case(
        model="gpt-tiny", precision="bf16", grad_accum=2, model_config={"n_layer": 1}, warmup=3
    )
    again = Case.from_dict(json.loads(case.to_json()))
    assert again == case
    assert again.id == case.id
    assert dict(again.model_config) == {"n_layer": 1}


def test_replace_accepts_flag_names() -> None:
    case = make_case(model="gpt-tiny").replace(precision="bf16", batch_size=2)
    assert case.flags == Flags(precision="bf16")
    assert case.batch_size == 2
    assert case.tokens_per_step == 2 * case.seq_len


def test_stats_percentiles_and_cv() -> None:
    stats = Stats.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert stats.median == 3.0
    assert stats.p10 == pytest.approx(1.4)
    assert stats.p90 == pytest.approx(4.6)
    assert stats.cv == pytest.approx(stats.stdev / 3.0)
    assert Stats.of([2.0, 2.0]).cv == 0.0


def test_result_round_trip_and_schema_check() -> None:
    result = Result(case=make_case(model="gpt-tiny"), profile=CPU, status="oom")
    data = json.loads(result.to_json())
    assert Result.from_dict(data).status == "oom"
    assert not Result.from_dict(data).fits
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version=99"):
        Result.from_dict(data)
    with pytest.raises(ValueError, match="status='exploded'"):
        Result(case=result.case, profile=CPU, status="exploded")


def test_a_case_from_a_newer_gpubench_is_refused_by_name() -> None:
    data = make_case(model="gpt-tiny").to_dict()
    data["flags"]["fp4_magic"] = True
    with pytest.raises(CaseError, match="case.flags.fp4_magic .*newer gpubench"):
        Case.from_dict(data)


def test_non_finite_numbers_are_written_as_null() -> None:
    from gpubench.contracts.result import Series

    result = Result(
        case=make_case(model="gpt-tiny"),
        profile=CPU,
        status="diverged",
        series=Series(
            step_time_s=[0.1, 0.1], loss=[5.0, float("nan")], grad_norm=[1.0, float("inf")]
        ),
    )
    data = json.loads(result.to_json())  # strict: allow_nan=False would raise on NaN
    assert data["series"]["loss"] == [5.0, None]
    assert data["series"]["grad_norm"] == [1.0, None]
    assert Result.from_dict(data).series.loss == [5.0, None]


# -- identity survives the JSON the worker protocol carries --------------------------------------


def test_no_clipping_is_none_and_crosses_the_json_protocol() -> None:
    # grad_clip=inf could not cross: job.json is strict JSON, and a Result wrote the inf as
    # null, which Case.from_dict then refused; None is "no clipping" and is plain JSON
    case = make_case(model="gpt-tiny", grad_clip=None)
    assert case.id == "gpt-tiny-fp32-clipnone"
    again = Case.from_dict(json.loads(case.to_json()))
    assert again == case and again.id == case.id and again.grad_clip is None
    result = Result(case=case, profile=CPU, status="ok")
    back = Result.from_dict(json.loads(result.to_json()))
    assert back.case == case and back.case.id == case.id
    assert back.to_dict() == result.to_dict()


def test_model_config_order_does_not_change_the_id() -> None:
    pairs = Case(model="gpt-tiny", model_config=(("n_layer", 3), ("n_head", 4)))
    mapping = Case(model="gpt-tiny", model_config={"n_layer": 3, "n_head": 4})
    again = Case.from_dict(pairs.to_dict())
    assert pairs.model_config == (("n_head", 4), ("n_layer", 3))
    assert pairs.id == mapping.id == again.id == "gpt-tiny-fp32-n_head4-n_layer3"
    assert pairs == mapping == again
    assert Case.from_dict(json.loads(pairs.to_json())) == pairs


def test_floats_in_the_id_are_exact_and_short_where_that_is_exact() -> None:
    near = make_case(model="gpt-tiny", lr=3.00001e-4)
    nearer = make_case(model="gpt-tiny", lr=3.000012e-4)
    assert near.id == "gpt-tiny-fp32-lr0.000300001"  # :g reads back as the same float
    assert nearer.id == "gpt-tiny-fp32-lr0.0003000012"  # it would not: repr
    assert near.id != nearer.id
    assert make_case(model="gpt-tiny", lr=1e-3).id == "gpt-tiny-fp32-lr0.001"
    assert make_case(model="gpt-tiny", lr=1e-5).id == "gpt-tiny-fp32-lr1e-05"
    assert make_case(model="gpt-tiny", grad_clip=2).id == "gpt-tiny-fp32-clip2"
    for case in (near, nearer):
        assert Case.from_dict(json.loads(case.to_json())).id == case.id


# -- engine="fsdp" (issue 21) ---------------------------------------------------------------------


def test_fsdp_takes_offload_params_alone() -> None:
    case = make_case(model="gpt-tiny", engine="fsdp", offload_params=True, precision="bf16")
    assert case.id == "gpt-tiny-bf16-offparam-fsdp"
    assert Case.from_dict(json.loads(case.to_json())) == case
    assert make_case(model="gpt-tiny", engine="fsdp", nproc=2).id == "gpt-tiny-fp32-x2-fsdp"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"zero_stage": 3}, "zero_stage=3: engine='fsdp' always shards"),
        ({"zero_stage": 3, "offload_params": True}, "zero_stage=3: engine='fsdp' always shards"),
        ({"zero_stage": 1, "offload_optimizer": True}, "zero_stage=1, offload_optimizer: engine"),
    ],
)
def test_fsdp_refuses_zero_flags_naming_the_valid_combination(
    settings: dict[str, object], named: str
) -> None:
    with pytest.raises(CaseError) as err:
        make_case(model="gpt-tiny", engine="fsdp", **settings)
    message = str(err.value)
    assert message.startswith(named)
    assert "offload_params=True moves all three to the CPU" in message
    assert "for ZeRO stages use engine='deepspeed'" in message


def test_offload_params_names_both_engines_that_take_it() -> None:
    with pytest.raises(CaseError, match="also runs with engine='fsdp'"):
        make_case(model="gpt-tiny", offload_params=True)  # the torch engine
    with pytest.raises(CaseError, match=r"needs zero_stage=3 with engine='deepspeed' \(zero_"):
        make_case(model="gpt-tiny", engine="deepspeed", offload_params=True)
    with pytest.raises(CaseError, match="or no zero_stage with engine='fsdp'"):
        Flags(offload_params=True, zero_stage=2)
