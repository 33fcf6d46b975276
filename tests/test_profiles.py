"""Hardware profiles: the cited table, byte sizes, NAME[:MEMORY], NVML detection, user TOML."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from gpubench.contracts.profiles import (
    AUTO,
    USER_PROFILE_KEYS,
    HardwareProfile,
    ProfileError,
    available_profiles,
    builtin_profiles,
    detect_profile,
    device_slug,
    load_user_profiles,
    parse_profile_list,
    profile_name_for_device,
    resolve_profile,
)
from gpubench.contracts.units import GiB, MiB, format_bytes, parse_bytes

REQUIRED = (
    "cpu",
    "rtx3060",
    "rtx5070ti",
    "rtx5080",
    "rtx4090",
    "l4",
    "a100-40gb",
    "a100-80gb",
    "h100-pcie",
    "h100-sxm",
    "h200",
)
GPU_NAMES = tuple(name for name in REQUIRED if name != "cpu")


# -- the built-in table -------------------------------------------------------------------------
def test_every_required_builtin_is_present_and_named_by_its_key() -> None:
    table = builtin_profiles()
    assert set(REQUIRED) <= set(table)
    assert all(profile.name == name for name, profile in table.items())


@pytest.mark.parametrize("name", GPU_NAMES)
def test_gpu_builtins_have_positive_plausible_figures_and_a_cited_source(name: str) -> None:
    p = builtin_profiles()[name]
    assert p.kind == "cuda" and not p.is_cpu
    assert 8 * GiB <= p.memory_bytes <= 160 * GiB
    assert p.bf16_flops is not None and p.fp32_flops is not None
    assert p.memory_bandwidth is not None
    assert 10e12 < p.bf16_flops < 1.2e15  # dense: an H100's sparse 1,979 TFLOP/s would fail
    assert 5e12 < p.fp32_flops < p.bf16_flops  # tensor cores beat CUDA-core FP32 everywhere
    assert 100e9 < p.memory_bandwidth < 6e12
    assert p.usd_per_hour is None or p.usd_per_hour > 0
    assert "https://" in p.source and p.description


def test_cpu_builtin_is_a_cap_without_flops() -> None:
    cpu = builtin_profiles()["cpu"]
    assert cpu.kind == "cpu" and cpu.is_cpu
    assert cpu.memory_bytes == 8 * GiB
    assert cpu.bf16_flops is None and cpu.fp32_flops is None and cpu.memory_bandwidth is None
    assert cpu.source


def test_datasheet_figures_that_are_easy_to_get_wrong() -> None:
    t = builtin_profiles()
    assert t["h100-sxm"].bf16_flops == pytest.approx(989.5e12)  # half the sparse 1,979
    assert t["h200"].bf16_flops == t["h100-sxm"].bf16_flops  # same GH100 compute
    assert t["l4"].bf16_flops == pytest.approx(121e12)  # half the sparse 242
    assert t["rtx4090"].bf16_flops == pytest.approx(165.2e12)  # FP32 accumulate, not 330.4
    assert t["rtx3060"].bf16_flops == pytest.approx(25.5e12, rel=0.01)
    assert t["rtx3060"].memory_bytes == 12 * GiB  # "12 GB" GDDR is 12 GiB
    assert t["l4"].memory_bytes == 23034 * MiB  # what NVML reports with ECC on
    assert t["h100-sxm"].memory_bytes == 81559 * MiB
    assert t["l4"].usd_per_hour == pytest.approx(0.70)


def test_builtins_round_trip_through_dicts() -> None:
    for profile in builtin_profiles().values():
        assert HardwareProfile.from_dict(profile.to_dict()) == profile


def test_builtin_profiles_returns_a_fresh_dict() -> None:
    builtin_profiles().pop("cpu")
    assert "cpu" in builtin_profiles()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "tpu"}, "kind='tpu' is not valid; valid: cuda, cpu"),
        ({"memory_bytes": 0}, "memory_bytes=0 must be a positive integer"),
        ({"memory_bytes": 1.5e9}, "memory_bytes=1500000000.0 must be an integer"),
        ({"bf16_flops": -1.0}, "bf16_flops=-1.0 must be a number > 0 or None"),
        ({"usd_per_hour": -0.1}, "usd_per_hour=-0.1 must be a number >= 0"),
        ({"name": ""}, "must be a non-empty string"),
    ],
)
def test_hardware_profile_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    fields = builtin_profiles()["l4"].to_dict() | changes
    with pytest.raises(ProfileError) as info:
        HardwareProfile.from_dict(fields)
    assert message in str(info.value)


# -- units --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12GiB", 12 * 1024**3),
        ("12 GiB", 12 * 1024**3),
        ("12gib", 12 * 1024**3),
        ("12GB", 12 * 1000**3),
        ("512MiB", 512 * 1024**2),
        ("1.5G", 3 * 1024**3 // 2),
        ("2T", 2 * 1024**4),
        ("100KB", 100_000),
        ("0.5 KiB", 512),
        ("1073741824", 1024**3),
        ("  64 B ", 64),
        (1024, 1024),
    ],
)
def test_parse_bytes_accepts_the_documented_forms(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["12 XB", "", "GiB", "-1GiB", "1e9", "12 GiBs", "1,5G", True, -5])
def test_parse_bytes_names_the_bad_value_and_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_bytes(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message
    if bad != -5:
        assert "12GiB" in message and "16GB" in message


@pytest.mark.parametrize(
    ("n", "text"),
    [(12_780_000_000, "11.9 GiB"), (12 * GiB, "12.0 GiB"), (512, "512 B"), (1536, "1.5 KiB")],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


# -- NAME[:MEMORY] and lists --------------------------------------------------------------------
def test_resolve_a_plain_name_is_the_builtin() -> None:
    assert resolve_profile("rtx5080") == builtin_profiles()["rtx5080"]
    assert resolve_profile(" RTX5080 ") == builtin_profiles()["rtx5080"]


def test_resolve_memory_override_keeps_name_and_figures() -> None:
    base = builtin_profiles()["rtx5080"]
    small = resolve_profile("rtx5080:12GiB")
    assert small.name == "rtx5080"
    assert small.memory_bytes == 12 * GiB
    assert (small.bf16_flops, small.fp32_flops, small.source) == (
        base.bf16_flops,
        base.fp32_flops,
        base.source,
    )
    assert "12.0 GiB" in small.description


def test_resolve_cpu_memory_cap_may_be_any_size() -> None:
    assert resolve_profile("cpu:2GiB").memory_bytes == 2 * GiB
    assert resolve_profile("cpu:64GiB").memory_bytes == 64 * GiB


def test_resolve_rejects_more_memory_than_the_card_has() -> None:
    with pytest.raises(ProfileError, match=r"20\.0 GiB is more than rtx5080's 16\.0 GiB"):
        resolve_profile("rtx5080:20GiB")


def test_resolve_unknown_name_lists_every_valid_name_and_auto() -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile("rtx9090")
    message = str(info.value)
    assert "'rtx9090'" in message
    for name in REQUIRED:
        assert name in message
    assert AUTO in message


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "expected NAME or NAME:MEMORY"),
        ("cpu:", "nothing after ':'"),
        ("cpu:12XB", "invalid byte size '12XB'"),
        ("cpu:512", "below 1 MiB"),
    ],
)
def test_resolve_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile(spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize("memory", ["0", "0.0", "0.0001", "0MiB", "512", "0.5", "1KiB"])
def test_a_capacity_below_one_mib_is_refused_with_a_hint_that_works(memory: str) -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile(f"cpu:{memory}")
    message = str(info.value)
    assert f"memory {memory!r}" in message and "below 1 MiB" in message
    hint = message.split("below 1 MiB; ", 1)[1]
    suggested = re.findall(r"'([^']+)'", hint)
    assert suggested, message
    for value in suggested:  # every value the hint offers is one that is accepted
        assert resolve_profile(f"cpu:{value}").memory_bytes >= 2**20, (value, message)


def test_parse_profile_list() -> None:
    profiles = parse_profile_list("cpu, rtx5080:12GiB")
    assert [p.name for p in profiles] == ["cpu", "rtx5080"]
    assert profiles[1].memory_bytes == 12 * GiB


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("cpu,,rtx5080", "expected NAME or NAME:MEMORY items separated by commas"),
        ("cpu,,rtx5080", "item 2 of 'cpu,,rtx5080' is empty"),
        ("cpu,", "item 2 of 'cpu,' is empty"),
        ("", "got an empty list ''"),
        ("cpu,rtx5080,cpu", "names 'cpu' twice ('cpu' and 'cpu')"),
        ("rtx5080,rtx5080:12GiB", "names 'rtx5080' twice"),
        ("cpu,nope", "unknown hardware profile 'nope'"),
    ],
)
def test_parse_profile_list_rejects_empty_items_and_duplicates(value: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile_list(value)
    assert fragment in str(info.value)


# -- device name -> profile ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "profile"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 5080", "rtx5080"),
        ("NVIDIA GeForce RTX 5070 Ti", "rtx5070ti"),
        ("NVIDIA GeForce RTX 3060", "rtx3060"),
        # parts with other figures must not borrow a built-in's
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA L40S", None),
        ("NVIDIA L40", None),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("NVIDIA GeForce RTX 5080 Laptop GPU", None),
        ("NVIDIA GeForce RTX 3060 Ti", None),
        ("NVIDIA GeForce RTX 5070", None),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None),
        ("NVIDIA RTX A6000", None),
    ],
)
def test_profile_name_for_device(device: str, profile: str | None) -> None:
    assert profile_name_for_device(device) == profile


def test_device_slug() -> None:
    assert device_slug("NVIDIA RTX A6000") == "nvidia-rtx-a6000"
    assert device_slug("NVIDIA A100-SXM4-40GB MIG 1g.5gb") == "nvidia-a100-sxm4-40gb-mig-1g-5gb"


# -- detection with NVML ------------------------------------------------------------------------
class FakeNVMLError(Exception):
    pass


def fake_pynvml(
    devices: list[tuple[str, int]] | None = None, *, init_fails: bool = False
) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's ``pynvml`` with ``devices`` as (name, total bytes)."""
    gpus = devices or []
    module = types.ModuleType("pynvml")
    module.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    module.calls = []  # type: ignore[attr-defined]

    def init() -> None:
        module.calls.append("init")  # type: ignore[attr-defined]
        if init_fails:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def by_index(index: int) -> int:
        if index >= len(gpus):
            raise FakeNVMLError("Invalid Argument")
        return index

    def by_uuid(uuid: str) -> int:
        if not uuid.startswith("GPU-") or int(uuid[4:]) >= len(gpus):
            raise FakeNVMLError("Not Found")
        return int(uuid[4:])

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: module.calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = by_index  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByUUID = by_uuid  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda handle: gpus[handle][0]  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=gpus[handle][1], used=0, free=gpus[handle][1]
    )
    return module


@pytest.fixture
def no_visible_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_detect_profile_on_this_cpu_machine_is_cpu(no_visible_env: pytest.MonkeyPatch) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert detect_profile() == builtin_profiles()["cpu"]
        return
    pynvml.nvmlShutdown()
    pytest.skip("NVML works on this machine: there is a GPU to detect")


def test_detect_profile_is_cpu_when_nvml_fails(no_visible_env: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([("NVIDIA H100 80GB HBM3", 81559 * MiB)], init_fails=True)
    no_visible_env.setitem(sys.modules, "pynvml", fake)
    assert detect_profile() == builtin_profiles()["cpu"]


def test_detect_profile_is_cpu_without_nvidia_ml_py(no_visible_env: pytest.MonkeyPatch) -> None:
    no_visible_env.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert detect_profile() == builtin_profiles()["cpu"]


def test_detect_profile_is_cpu_without_gpus(no_visible_env: pytest.MonkeyPatch) -> None:
    no_visible_env.setitem(sys.modules, "pynvml", fake_pynvml([]))
    assert detect_profile() == builtin_profiles()["cpu"]


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_detect_profile_respects_hidden_gpus(monkeypatch: pytest.MonkeyPatch, hidden: str) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([("NVIDIA L4", 23034 * MiB)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert detect_profile().name == "cpu"


def test_detect_profile_maps_a_known_gpu_and_shuts_nvml_down(
    no_visible_env: pytest.MonkeyPatch,
) -> None:
    fake = fake_pynvml([("NVIDIA H100 80GB HBM3", 81559 * MiB)])
    no_visible_env.setitem(sys.modules, "pynvml", fake)
    assert detect_profile() == builtin_profiles()["h100-sxm"]
    assert fake.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_detect_profile_takes_the_smaller_nvml_memory(no_visible_env: pytest.MonkeyPatch) -> None:
    # the 8 GB RTX 3060 has the same device name as the 12 GB one
    no_visible_env.setitem(
        sys.modules, "pynvml", fake_pynvml([("NVIDIA GeForce RTX 3060", 8 * GiB)])
    )
    detected = detect_profile()
    assert detected.name == "rtx3060" and detected.memory_bytes == 8 * GiB


def test_detect_profile_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [("NVIDIA L4", 23034 * MiB), ("NVIDIA H200", 143771 * MiB)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpus))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert detect_profile().name == "h200"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1")
    assert detect_profile().name == "h200"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert detect_profile().name == "cpu"


def test_detect_profile_names_an_unknown_gpu_after_the_device(
    no_visible_env: pytest.MonkeyPatch,
) -> None:
    no_visible_env.setitem(sys.modules, "pynvml", fake_pynvml([("NVIDIA RTX A6000", 48 * GiB)]))
    detected = detect_profile()
    assert detected.name == "nvidia-rtx-a6000"
    assert detected.kind == "cuda" and detected.memory_bytes == 48 * GiB
    assert detected.bf16_flops is None and detected.fp32_flops is None
    assert "NVIDIA RTX A6000" in detected.description


def test_auto_resolves_through_detection_and_takes_a_memory_cap(
    no_visible_env: pytest.MonkeyPatch,
) -> None:
    fake = fake_pynvml([("NVIDIA H100 80GB HBM3", 81559 * MiB)])
    no_visible_env.setitem(sys.modules, "pynvml", fake)
    assert resolve_profile("auto").name == "h100-sxm"
    capped = resolve_profile("auto:40GiB")
    assert capped.name == "h100-sxm" and capped.memory_bytes == 40 * GiB
    with pytest.raises(ProfileError, match="more than h100-sxm's"):
        resolve_profile("auto:100GiB")


def test_auto_uses_a_user_profile_named_like_the_unknown_device(
    no_visible_env: pytest.MonkeyPatch,
) -> None:
    no_visible_env.setitem(sys.modules, "pynvml", fake_pynvml([("NVIDIA RTX A6000", 48 * GiB)]))
    mine = HardwareProfile("nvidia-rtx-a6000", "cuda", 48 * GiB, 155e12, 38.7e12, 768e9)
    assert resolve_profile("auto", user_profiles={mine.name: mine}) == mine


def test_detect_profile_never_initialises_cuda_in_this_process() -> None:
    code = (
        "import sys\n"
        "from gpubench.contracts.profiles import detect_profile\n"
        "detect_profile()\n"
        "torch = sys.modules.get('torch')\n"
        "assert torch is None or not torch.cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- user profiles ------------------------------------------------------------------------------
PYPROJECT = """
[project]
name = "my-benchmarks"

[tool.gpubench.profiles.my-3090]
memory = "24GiB"
bf16_tflops = 71
fp32_tflops = 35.6
bandwidth_gbps = 936
usd_per_hour = 0.22
description = "the RTX 3090 under my desk"
source = "GA102 whitepaper"

[tool.gpubench.profiles.cpu]
memory = "2GiB"

[tool.gpubench.profiles.l4]
usd_per_hour = 0.85
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_user_profiles_from_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PYPROJECT)
    user = load_user_profiles(rootdir=tmp_path)
    assert list(user) == ["my-3090", "cpu", "l4"]
    mine = user["my-3090"]
    assert mine == HardwareProfile(
        name="my-3090",
        kind="cuda",
        memory_bytes=24 * GiB,
        bf16_flops=71e12,
        fp32_flops=35.6e12,
        memory_bandwidth=936e9,
        usd_per_hour=0.22,
        description="the RTX 3090 under my desk",
        source="GA102 whitepaper",
    )


def test_user_profile_overrides_a_builtin_and_inherits_the_rest(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PYPROJECT)
    user = load_user_profiles(rootdir=tmp_path)
    builtin = builtin_profiles()
    assert user["cpu"].memory_bytes == 2 * GiB and user["cpu"].kind == "cpu"
    assert user["l4"].usd_per_hour == 0.85
    assert user["l4"].bf16_flops == builtin["l4"].bf16_flops
    assert user["l4"].memory_bytes == builtin["l4"].memory_bytes
    assert builtin["l4"].source in user["l4"].source and "usd_per_hour" in user["l4"].source
    # the override is what resolution and detection then use
    assert resolve_profile("cpu", user_profiles=user).memory_bytes == 2 * GiB
    assert available_profiles(user)["l4"].usd_per_hour == 0.85


def test_resolve_unknown_name_lists_user_profiles_too(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PYPROJECT)
    user = load_user_profiles(rootdir=tmp_path)
    assert resolve_profile("my-3090:12GiB", user_profiles=user).memory_bytes == 12 * GiB
    with pytest.raises(ProfileError, match=r"user: my-3090"):
        resolve_profile("nope", user_profiles=user)


def test_profiles_file_is_read_after_pyproject_and_wins(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", PYPROJECT)
    extra = write(
        tmp_path / "profiles.toml",
        """
        [profiles.my-3090]
        memory = 25769803776
        kind = "cuda"

        [profiles.tiny-cpu]
        memory = "512MiB"
        kind = "cpu"
        """,
    )
    user = load_user_profiles(rootdir=tmp_path, file=extra)
    assert user["my-3090"].memory_bytes == 24 * GiB
    assert user["my-3090"].bf16_flops == 71e12  # inherited from the pyproject definition
    assert user["tiny-cpu"].is_cpu and user["tiny-cpu"].bf16_flops is None
    assert str(extra) in user["tiny-cpu"].source


def test_no_pyproject_or_no_section_means_no_user_profiles(tmp_path: Path) -> None:
    assert load_user_profiles(rootdir=tmp_path) == {}
    write(tmp_path / "pyproject.toml", "[project]\nname = 'x'\n")
    assert load_user_profiles(rootdir=tmp_path) == {}
    assert load_user_profiles() == {}


def test_unknown_key_error_names_file_profile_key_and_valid_keys(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path / "pyproject.toml",
        """
        [tool.gpubench.profiles.my-3090]
        memory = "24GiB"
        bf16_tflop = 71
        """,
    )
    with pytest.raises(ProfileError) as info:
        load_user_profiles(rootdir=tmp_path)
    message = str(info.value)
    assert str(pyproject) in message
    assert "[tool.gpubench.profiles.my-3090]" in message
    assert "'bf16_tflop'" in message
    assert "valid keys: " + ", ".join(USER_PROFILE_KEYS) in message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('memory = "24 XB"', "invalid byte size '24 XB'"),
        ("memory = 24", "below 1 MiB"),
        ("memory = true", "memory=True"),
        ('memory = "8GiB"\nbf16_tflops = -1', "bf16_tflops=-1: expected dense BF16 peak"),
        ('memory = "8GiB"\nbandwidth_gbps = "fast"', "bandwidth_gbps='fast'"),
        ('memory = "8GiB"\nfp32_tflops = inf', "fp32_tflops=inf"),
        ('memory = "8GiB"\nkind = "tpu"', "kind='tpu': expected one of cuda, cpu"),
        ('memory = "8GiB"\ndescription = 3', "description=3: expected a string"),
        ("bf16_tflops = 10", "missing required key 'memory'"),
    ],
)
def test_bad_user_values_name_file_profile_and_key(
    tmp_path: Path, body: str, fragment: str
) -> None:
    write(tmp_path / "pyproject.toml", f"[tool.gpubench.profiles.mine]\n{body}\n")
    with pytest.raises(ProfileError) as info:
        load_user_profiles(rootdir=tmp_path)
    message = str(info.value)
    assert "pyproject.toml [tool.gpubench.profiles.mine]" in message
    assert fragment in message


@pytest.mark.parametrize("name", ["auto", "My Card", "a:b"])
def test_unusable_user_profile_names(tmp_path: Path, name: str) -> None:
    write(
        tmp_path / "pyproject.toml",
        f'[tool.gpubench.profiles."{name}"]\nmemory = "8GiB"\n',
    )
    with pytest.raises(ProfileError, match="is not usable"):
        load_user_profiles(rootdir=tmp_path)


def test_profiles_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_user_profiles(file=tmp_path / "missing.toml")
    bad = write(tmp_path / "bad.toml", "[profiles.x\nmemory = 1\n")
    with pytest.raises(ProfileError, match="invalid TOML"):
        load_user_profiles(file=bad)
    stray = write(tmp_path / "stray.toml", '[other]\nx = 1\n[profiles.x]\nmemory = "1GiB"\n')
    with pytest.raises(ProfileError, match="unknown top-level key 'other'"):
        load_user_profiles(file=stray)


def test_a_profile_must_fit_on_the_gpu_it_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpubench.contracts import profiles
    from gpubench.contracts.profiles import detect

    monkeypatch.setattr(detect, "nvml_gpu0", lambda: ("NVIDIA H100 80GB HBM3", 81559 * 2**20))
    profiles.check_runnable_here(profiles.resolve_profile("h100-sxm"))
    profiles.check_runnable_here(profiles.resolve_profile("rtx3060"))  # smaller: emulated
    with pytest.raises(
        profiles.ProfileError, match="a larger card cannot be emulated.*h200:81559MiB"
    ):
        profiles.check_runnable_here(profiles.resolve_profile("h200"))
    monkeypatch.setattr(detect, "nvml_gpu0", lambda: None)
    with pytest.raises(profiles.ProfileError, match="needs an NVIDIA GPU and NVML sees none"):
        profiles.check_runnable_here(profiles.resolve_profile("l4"))
    profiles.check_runnable_here(profiles.resolve_profile("cpu"))
