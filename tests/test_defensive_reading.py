"""A bad record costs only itself (issue 18, finding 3): every reader of gpubench's files
(results.jsonl, verdicts, outcomes, baselines, profiles files) meets a line or a value it
cannot use (bytes that are not UTF-8, nesting too deep, a value of the wrong type, an int
too large for a float, NaN, an infinity) with a warning naming the file and the line, and
keeps the records around it; a profiles file, which the user wrote, is a clear error
naming the file and the line, never a traceback. ``test_fuzz_records.py`` mutates valid
records at random for the same promise."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpubench.baseline.compare import compare
from gpubench.baseline.rules import GateRules
from gpubench.baseline.store import BaselineError, read_baseline, save_runs
from gpubench.contracts.profiles import ProfileError
from gpubench.contracts.profiles.user import load_user_profiles
from gpubench.contracts.result import Result
from gpubench.storage import read_results

pytest_plugins = ("pytester",)

V1 = Path(__file__).parent / "data" / "result-v1-6ecbd18.json"
MARK = "HOSTMARK"  # a string value of the record the byte-level mutations replace
DEEP = 100_000  # deeper than json's parser recurses: RecursionError
TINY = 'model="gpt-tiny", batch_size=4, seq_len=32, steps=3, warmup=1'


def record(run_id: str) -> dict[str, Any]:
    """The real gpt-tiny Result of tests/data as the run ``run_id``, as JSON writes it."""
    data = Result.from_json(V1.read_text()).to_dict()
    data["run_id"] = run_id
    data["environment"]["hostname"] = MARK
    return data


def _tokens(value: Any) -> Callable[[dict[str, Any]], bytes]:
    def line(data: dict[str, Any]) -> bytes:
        data["metrics"]["tokens_per_s"]["median"] = value
        return json.dumps(data).encode()  # NaN and inf as Python's json writes them

    return line


def _bytes(replacement: bytes) -> Callable[[dict[str, Any]], bytes]:
    return lambda data: json.dumps(data).encode().replace(f'"{MARK}"'.encode(), replacement)


def _nested(data: dict[str, Any]) -> bytes:
    value: Any = 1
    for _ in range(40):  # parses, but deeper than a record's free-form value may be
        value = [value]
    data["case"]["model_config"] = {"n_layer": value}
    return json.dumps(data).encode()


# one bad kind each: (id, the bad record's line from a valid record, words of the warning)
BAD = [
    ("non-utf8", _bytes(b'"HOST\xff\xfeMARK"'), "UTF-8"),
    ("deep-nesting", _bytes(b"[" * DEEP + b"]" * DEEP), "nested too deeply"),
    ("nested-value", _nested, "nested more than"),
    ("wrong-type", _tokens("fast"), "tokens_per_s.median='fast' must be a finite number"),
    ("int-overflows-float", _tokens(10**400), "tokens_per_s.median=1000"),
    ("inf", _tokens(math.inf), "Infinity"),
    ("nan", _tokens(math.nan), "NaN"),
]
BAD_IDS = [kind for kind, _, _ in BAD]


def _results_file(path: Path, bad: Callable[[dict[str, Any]], bytes]) -> Path:
    lines = [
        json.dumps(record("good-1")).encode(),
        bad(record("bad")),
        json.dumps(record("good-2")).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(("kind", "bad", "why"), BAD, ids=BAD_IDS)
def test_a_bad_line_of_results_costs_only_itself(
    tmp_path: Path, kind: str, bad: Callable[[dict[str, Any]], bytes], why: str
) -> None:
    path = _results_file(tmp_path / "results.jsonl", bad)
    with pytest.warns(UserWarning) as caught:
        assert [r.run_id for r in read_results(path)] == ["good-1", "good-2"]
    assert [str(w.message) for w in caught if why in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert all(str(w.message).startswith(f"{path}:2: skipped a line") for w in caught)


def _baseline_text(bad: Callable[[dict[str, Any]], bytes]) -> bytes:
    """A baseline whose case has three runs, one per line: the second (line 3) is bad."""
    case_id = Result.from_json(V1.read_text()).case.id
    runs = [
        json.dumps(record("good-1")).encode(),
        bad(record("bad")),
        json.dumps(record("good-2")).encode(),
    ]
    head = json.dumps({"format": "gpubench-baseline", "version": 1})[:-1]
    return (
        f'{head}, "cases": {{"{case_id}": {{"history": [\n'.encode()
        + b",\n".join(runs)
        + b"\n]}}}\n"
    )


@pytest.mark.parametrize(
    ("kind", "bad", "why"),
    [b for b in BAD if b[0] != "deep-nesting"],
    ids=BAD_IDS[:1] + BAD_IDS[2:],
)
def test_a_bad_run_of_a_baseline_costs_only_itself_and_the_file_is_never_saved_over(
    tmp_path: Path, kind: str, bad: Callable[[dict[str, Any]], bytes], why: str
) -> None:
    why = {"inf": "median=inf", "nan": "median=nan"}.get(kind, why)  # parsed, then refused
    path = tmp_path / "cpu" / "suite.json"
    path.parent.mkdir()
    path.write_bytes(_baseline_text(bad))
    with pytest.warns(UserWarning) as caught:
        baseline = read_baseline(path)
    [(case_id, runs)] = baseline.histories.items()
    assert [r.run_id for r in runs] == ["good-1", "good-2"]
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"{path}:3: skipped run 1 of case {case_id!r}") and why in message
    assert baseline.skipped == (message,)
    # saving would lose the run this gpubench cannot read: refused, the file left as it was
    before = path.read_bytes()
    with pytest.warns(UserWarning), pytest.raises(BaselineError, match="not saved over"):
        save_runs(path, [Result.from_dict(record("new"))])
    assert path.read_bytes() == before


def test_a_run_missing_its_fields_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    path.write_bytes(_baseline_text(lambda data: b"{}"))
    with pytest.warns(UserWarning, match=r"suite.json:3: skipped run 1 .*schema_version=None"):
        [runs] = read_baseline(path).histories.values()
    assert [r.run_id for r in runs] == ["good-1", "good-2"]


def test_a_baseline_nested_too_deep_to_parse_is_refused_by_name_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "suite.json"
    path.write_bytes(_baseline_text(_bytes(b"[" * DEEP + b"]" * DEEP)))
    with pytest.raises(BaselineError, match="nested too deeply") as info:
        read_baseline(path)
    assert str(path) in str(info.value)


PROFILE_A = b'[profiles.good]\nmemory = "1GiB"\n\n'


@pytest.mark.parametrize(
    ("kind", "table", "why"),
    [
        (
            "non-utf8",
            b'[profiles.b]\nmemory = "2GiB"\ndescription = "\xff\xfe"\n',
            ":6: invalid TOML: not UTF-8",
        ),
        (
            "deep-nesting",
            b"[profiles.b]\nmemory = " + b"[" * DEEP + b"]" * DEEP + b"\n",
            "nested too deeply",
        ),
        (
            "wrong-type",
            b'[profiles.b]\nmemory = "2GiB"\nbf16_tflops = "fast"\n',
            "(line 4) bf16_tflops='fast'",
        ),
        (
            "int-overflows-float",
            b'[profiles.b]\nmemory = "2GiB"\nbf16_tflops = 1' + b"0" * 400 + b"\n",
            "(line 4) bf16_tflops=1000",
        ),
        (
            "memory-overflows",
            b"[profiles.b]\nmemory = 1" + b"0" * 400 + b"\n",
            "(line 4) memory: memory 1000",
        ),
        ("inf", b'[profiles.b]\nmemory = "2GiB"\nbf16_tflops = inf\n', "(line 4) bf16_tflops=inf"),
        (
            "nan",
            b'[profiles.b]\nmemory = "2GiB"\nusd_per_hour = nan\n',
            "(line 4) usd_per_hour=nan",
        ),
    ],
)
def test_a_bad_profiles_file_is_a_clear_error_naming_the_file_and_line(
    tmp_path: Path, kind: str, table: bytes, why: str
) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(PROFILE_A + table)
    with pytest.raises(ProfileError) as info:
        load_user_profiles(file=path)
    assert str(info.value).startswith(str(path)) and why in str(info.value)
    path.write_bytes(PROFILE_A)  # the good table alone loads
    assert list(load_user_profiles(file=path)) == ["good"]


def test_a_non_utf8_profiles_file_is_a_usage_error_not_an_internal_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_x=f"import gpubench\n\n@gpubench.single_case({TINY})\ndef test_x(gpubench_result):\n"
        "    pass\n"
    )
    path = pytester.path / "profiles.toml"
    path.write_bytes(b'[profiles.mine]\nmemory = "1GiB"\ndescription = "\xff"\n')
    run = pytester.runpytest_subprocess(
        "--gpu-profile", "mine", "--gpubench-profiles-file", str(path), "-p", "no:cacheprovider"
    )
    assert "INTERNALERROR" not in run.stdout.str() + run.stderr.str()
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    run.stderr.fnmatch_lines([f"*{path}:3: invalid TOML: not UTF-8*"])


def test_nan_tokens_per_s_is_never_judged_unchanged() -> None:
    good = Result.from_dict(record("old"))
    assert good.metrics.tokens_per_s is not None
    stats = dataclasses.replace(good.metrics.tokens_per_s, median=math.nan)
    new = dataclasses.replace(
        good, run_id="new", metrics=dataclasses.replace(good.metrics, tokens_per_s=stats)
    )
    verdict = compare(new, [good], GateRules())
    assert "tokens_per_s" not in [m.metric for m in verdict.metrics]
    nan_history = compare(good, [new], GateRules())  # a NaN baseline is no figure either
    assert [m.decision for m in nan_history.metrics if m.metric == "tokens_per_s"] in ([], ["new"])


def _run_dir(path: Path, bad: Callable[[dict[str, Any]], bytes]) -> Path:
    path.mkdir()
    _results_file(path / "results.jsonl", bad)
    (path / "verdicts.jsonl").write_bytes(b'{"case_id": "x", "profile": \xff}\n{"case_id": 1}\n')
    (path / "outcomes.jsonl").write_bytes(
        b'{"nodeid": "t.py::x", "outcome": "passed", "reason": 7}\n'
    )
    return path


def _gpubench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-m", "gpubench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_report_and_compare_of_runs_with_bad_lines_exit_normally_with_warnings(
    tmp_path: Path,
) -> None:
    old = _run_dir(tmp_path / "old", _tokens(math.nan))
    new = _run_dir(tmp_path / "new", _bytes(b'"HOST\xffMARK"'))
    report = _gpubench("report", str(old), str(new), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr
    for line in (f"{old}/results.jsonl:2: skipped", f"{new}/results.jsonl:2: skipped"):
        assert line in report.stderr
    assert f"{old}/verdicts.jsonl:1: skipped a line that is not UTF-8" in report.stderr
    assert f"{old}/verdicts.jsonl:2: skipped a line that is not a verdict" in report.stderr
    assert f"{old}/outcomes.jsonl:1: skipped a line that is not a outcome" in report.stderr
    assert (tmp_path / "r.html").is_file()
    judged = _gpubench("compare", str(old), str(new), cwd=tmp_path)
    assert judged.returncode == 0, judged.stderr
    assert "Traceback" not in judged.stderr
    assert f"{new}/results.jsonl:2: skipped a line that is not UTF-8" in judged.stderr


def test_a_baseline_with_a_bad_run_does_not_error_the_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_gated=f"import gpubench\n\n@gpubench.single_case({TINY})\n"
        "def test_one(gpubench_result):\n    assert gpubench_result.fits\n"
    )
    args = ("--gpu-profile", "cpu", "-p", "no:cacheprovider", "-q")
    pytester.runpytest_subprocess(*args, "--gpubench-save-baseline", timeout=300).assert_outcomes(
        passed=1
    )
    path = pytester.path / "baselines" / "cpu" / "test_gated.json"
    data = json.loads(path.read_text())
    [entry] = data["cases"].values()
    bad = json.loads(json.dumps(entry["history"][0]))
    bad["series"]["loss"] = ["x"] * len(bad["series"]["loss"])  # compare.py choked on it
    bad["run_id"] = "bad"
    entry["history"].insert(0, bad)
    path.write_text(json.dumps(data, indent=1))
    run = pytester.runpytest_subprocess(*args, timeout=300)
    run.assert_outcomes(passed=1)
    run.stdout.fnmatch_lines([f"*{path}:*: skipped run 0 of case*series.loss[[]0[]]='x'*"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # matplotlib
def test_charts_draw_non_finite_figures_as_gaps() -> None:
    """The readers refuse NaN and infinities; a Result made in memory may still hold them,
    and the charts draw what is finite (a guard: today's charts already do)."""
    from gpubench.report import charts

    good = Result.from_dict(record("good"))
    assert good.metrics.tokens_per_s is not None
    odd = []
    for i, value in enumerate((math.nan, math.inf, -math.inf)):
        stats = dataclasses.replace(good.metrics.tokens_per_s, median=value, p10=value, p90=value)
        metrics = dataclasses.replace(good.metrics, tokens_per_s=stats, loss_end=value)
        series = dataclasses.replace(good.series, loss=[value] * len(good.series.loss))
        case = good.case.replace(name=f"odd-{i}")
        odd.append(dataclasses.replace(good, case=case, metrics=metrics, series=series))
    for chart in (charts.throughput_chart, charts.memory_chart, charts.loss_chart):
        chart([good, *odd])
    charts.trend_chart([good, *odd[:2]], odd[2], "trend")
