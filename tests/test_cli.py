"""The ``gpubench`` console script: ``gpubench profiles`` as a function, a module and a command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpubench.cli import main
from gpubench.contracts.profiles import HardwareProfile, builtin_profiles
from gpubench.contracts.units import GiB

COLUMNS = (
    "name",
    "kind",
    "memory GiB",
    "bf16 TFLOP/s",
    "fp32 TFLOP/s",
    "bandwidth GB/s",
    "$/h",
)


def test_profiles_prints_a_table_and_the_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profiles", "--rootdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    for column in COLUMNS:
        assert column in header
    table_rows = {line.split()[0]: line.split() for line in rows[: len(builtin_profiles())]}
    assert set(table_rows) == set(builtin_profiles())
    assert table_rows["h100-sxm"][1:] == ["cuda", "79.6", "989.5", "67.0", "3350", "3.78"]
    assert table_rows["cpu"][1:] == ["cpu", "8.0", "-", "-", "-", "-"]
    sources = out.split("Sources:\n", 1)[1]
    unwrapped = " ".join(sources.split())  # wrapped to the terminal's width, at spaces
    for profile in builtin_profiles().values():
        assert f"{profile.name}: {' '.join(profile.source.split())}" in unwrapped
    # no line wider than 120 but a URL that is longer on its own
    assert all(len(line) <= 120 or " " not in line.strip() for line in sources.splitlines())


def test_profiles_json_round_trips_through_from_dict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profiles", "--json", "--rootdir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    profiles = [HardwareProfile.from_dict(item) for item in data]
    assert {p.name: p for p in profiles} == builtin_profiles()


def test_profiles_include_user_profiles_from_rootdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gpubench.profiles.cpu]\nmemory = "2GiB"\n\n'
        '[tool.gpubench.profiles.my-3090]\nmemory = "24GiB"\nbf16_tflops = 71\n',
        encoding="utf-8",
    )
    assert main(["profiles", "--json", "--rootdir", str(tmp_path)]) == 0
    by_name = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert by_name["cpu"]["memory_bytes"] == 2 * GiB
    assert by_name["my-3090"]["bf16_flops"] == 71e12
    assert main(["profiles", "--rootdir", str(tmp_path)]) == 0
    assert "User-defined or overridden here: cpu, my-3090" in capsys.readouterr().out


def test_bad_user_profile_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gpubench.profiles.mine]\nmemory = "8GiB"\nflops = 1\n', encoding="utf-8"
    )
    assert main(["profiles", "--rootdir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gpubench profiles: error: ")
    assert "unknown key 'flops'" in captured.err and "valid keys: memory" in captured.err


def test_profiles_file_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = tmp_path / "hw.toml"
    extra.write_text('[profiles.box]\nmemory = "4GiB"\nkind = "cpu"\n', encoding="utf-8")
    assert main(["profiles", "--json", "--rootdir", str(tmp_path), "--file", str(extra)]) == 0
    names = [item["name"] for item in json.loads(capsys.readouterr().out)]
    assert names[-1] == "box"


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert "usage: gpubench" in capsys.readouterr().err
    assert main(["--help"]) == 0


def _console_script() -> str | None:
    beside_python = Path(sys.executable).with_name("gpubench")
    return str(beside_python) if beside_python.exists() else shutil.which("gpubench")


def test_installed_console_script_runs(tmp_path: Path) -> None:
    script = _console_script()
    if script is None:
        pytest.skip("the gpubench console script is not installed (pip install -e .)")
    done = subprocess.run(
        [script, "profiles", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = [item["name"] for item in json.loads(done.stdout)]
    assert names == list(builtin_profiles())


def test_python_dash_m_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gpubench.cli", "profiles"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "h100-sxm" in done.stdout and "Sources:" in done.stdout


# -- gpubench compare / export (on the real suite runs of tests/data/gate) -----------------------
GATE_DATA = Path(__file__).parent / "data" / "gate"


def test_compare_a_busy_run_with_a_quiet_one_exits_1_with_the_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    md = tmp_path / "gate.md"
    code = main(
        [
            "compare",
            str(GATE_DATA / "quiet-3.jsonl"),
            str(GATE_DATA / "busy-1.jsonl"),
            "--md",
            str(md),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "tokens_per_s" in out and "regression" in out
    words = " ".join(out.split())  # the table wraps its last column to the terminal's width
    assert "steps vs the last baseline run's" in words  # one baseline run: within-run rule
    assert "10 of 10 case(s) regressed." in out
    assert md.read_text().startswith("## ")


def test_compare_a_baseline_dir_with_an_unchanged_run_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gpubench.baseline.store import save_runs
    from gpubench.storage import read_results

    # quiet-3 against quiet-4..8 (quiet-8 against quiet-3..7 would flag two cases: offline
    # there are no confirmation reruns, and quiet-8 has one outlier; tests/test_gate_compare.py
    # holds the rates over every choice)
    path = tmp_path / "baselines" / "cpu" / "test_cpu_smoke.json"
    for i in (4, 5, 6, 7, 8):
        save_runs(path, read_results(GATE_DATA / f"quiet-{i}.jsonl"))
    code = main(["compare", str(tmp_path / "baselines"), str(GATE_DATA / "quiet-3.jsonl")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "vs the spread of 5 baseline runs" in " ".join(out.split())  # wrapped or not
    assert "0 of 10 case(s) regressed." in out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["compare", "/nonexistent", "/nonexistent2"], "/nonexistent: no such file or directory"),
        (["compare", "{readme}", "{readme}"], "not a results file (*.jsonl), a run directory"),
        (["compare", "{bad_json}", "{bad_json}"], "not valid JSON, truncated?"),
        (["compare", "{empty_dir}", "{empty_dir}"], "no results.jsonl and no baseline files"),
        (["compare", "--threshold", "tokens_per_s=7", "a", "b"], "tokens_per_s=7.0 must be"),
    ],
)
def test_compare_bad_input_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"format": "gpubench-baseline", "cases": {')
    (tmp_path / "empty").mkdir()
    paths = {
        "readme": str(GATE_DATA / "README.md"),
        "bad_json": str(bad_json),
        "empty_dir": str(tmp_path / "empty"),
    }
    assert main([a.format(**paths) for a in args]) == 2
    assert problem in capsys.readouterr().err


def test_export_writes_what_pytest_benchmark_compare_reads(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert main(["export", str(GATE_DATA / "quiet-1.jsonl"), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["benchmarks"]) == 10
    bench = data["benchmarks"][0]
    assert bench["stats"]["rounds"] == len(bench["stats"]["data"]) > 0
    assert data["machine_info"]["gpubench"]["torch"].startswith("2.13")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "gpt-mini-learns" in done.stdout
