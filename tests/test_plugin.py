"""The plugin end to end, the way pytest plugins test themselves: pytester runs a
throw-away test file through pytest and we match its output and its results.jsonl.

Cases here are gpt-tiny for a handful of steps: each one is a real worker
process (python + torch import, ~3 s on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

# pytester restores sys.modules after each in-process run; numpy (under pandas) cannot be
# imported twice in one process, so load the summary table's modules before any run.
import gpubench.session.collection
import gpubench.session.summary  # noqa: F401

pytest_plugins = ("pytester",)

TINY = 'model="gpt-tiny", batch_size=4, seq_len=32, steps=3, warmup=1'


def _results(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "reports" / "latest" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _screen(text: str) -> list[str]:
    """What a terminal shows for ``text``: colours dropped; \\n, \\r, cursor up (ESC[1A)
    and cursor forward (ESC[nC) applied, written characters overwriting."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[\d*[AC]|.|\n", text, flags=re.S):
        if token == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append([])
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b"):
            count = int(token[2:-1] or 1)
            if token.endswith("A"):
                row = max(0, row - count)
            else:
                col += count
        else:
            line = lines[row]
            line.extend(" " * (col - len(line) + 1) if col >= len(line) else [])
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in lines]


def test_ids_are_case_then_profile_for_every_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_ids="""
        import gpubench

        @gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"],
                         grad_ckpt=[False, True])
        def test_ladder(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q", "--gpu-profile", "cpu,rtx5080")
    result.stdout.fnmatch_lines(
        [
            "test_ids.py::test_ladder[gpt2-small-fp32-cpu]",
            "test_ids.py::test_ladder[gpt2-small-fp32-rtx5080]",
            "test_ids.py::test_ladder[gpt2-small-fp32-ckpt-cpu]",
            "test_ids.py::test_ladder[gpt2-small-bf16-ckpt-rtx5080]",
            "test_ids.py::test_ladder[gpt2-medium-bf16-ckpt-rtx5080]",
            "16 tests collected*",
        ]
    )


DECLARES_SAME = """
import gpubench

@gpubench.single_case(model="gpt-tiny", batch_size={batch}, name="same")
def test_{name}(gpubench_result):
    pass

@gpubench.matrix(model="gpt-tiny", batch_size=[1, 2])
def test_{name}_ladder(gpubench_result):
    pass
"""


def test_two_tests_declaring_one_case_id_are_refused_naming_both(
    pytester: pytest.Pytester,
) -> None:
    """Issue 18: a case's baseline entry is its id in <profile>/<suite stem>.json; two tests
    with the same name= judged each other's runs as their own history."""
    pytester.makepyfile(
        test_dupes=DECLARES_SAME.format(batch=1, name="small")
        + DECLARES_SAME.format(batch=4, name="big").split("@gpubench.matrix")[0]
    )
    result = pytester.runpytest("--collect-only", "-q", "--gpu-profile", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*case 'same' is declared by two tests, test_dupes.py::test_small and "
            "test_dupes.py::test_big: they would share one baseline entry*"
        ]
    )
    # suites of one stem in two folders share a baseline file: refused as well
    pytester.path.joinpath("test_dupes.py").unlink()
    for folder, batch in (("a", 1), ("b", 4)):
        suite = pytester.mkpydir(folder) / "test_same_stem.py"
        suite.write_text(DECLARES_SAME.format(batch=batch, name=folder))
    result = pytester.runpytest("--collect-only", "-q", "--gpu-profile", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*'same' is declared by two tests, a/test_same_stem.py::test_a and b/test_same*"]
    )
    # distinct ids in both: collected (the ladders' ids differ from 'same')
    (pytester.path / "b" / "test_same_stem.py").write_text(
        DECLARES_SAME.format(batch=4, name="b")
        .replace('name="same"', 'name="other"')
        .replace("batch_size=[1, 2]", "batch_size=[3]")
    )
    result = pytester.runpytest("--collect-only", "-q", "--gpu-profile", "cpu")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["5 tests collected*"])


def test_each_case_runs_in_its_own_process_and_an_oom_does_not_spill(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_isolation=f"""
        import gpubench

        @gpubench.single_case({TINY}, name="first")
        def test_first(gpubench_result):
            assert gpubench_result.status == "ok", gpubench_result.describe()

        # 4096 x 128 tokens x 256-way float32 logits = 512 MiB per copy: above the cap.
        @gpubench.single_case(model="gpt-tiny", batch_size=4096, seq_len=128, steps=3,
                              warmup=1, name="too-big")
        def test_too_big(gpubench_result):
            assert gpubench_result.status == "oom", gpubench_result.describe()
            assert "allocate" in gpubench_result.error.message.lower()

        @gpubench.single_case({TINY}, name="after-oom")
        def test_after_oom(gpubench_result):
            assert gpubench_result.status == "ok", gpubench_result.describe()
            assert gpubench_result.metrics.tokens_per_s.median > 0
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu:512MiB", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    records = _results(pytester)
    assert [r["case"]["id"] for r in records] == ["first", "too-big", "after-oom"]
    assert [r["status"] for r in records] == ["ok", "oom", "ok"]
    pids = [r["worker_pid"] for r in records]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert records[0]["nodeid"] == "test_isolation.py::test_first[first-cpu]"
    assert records[0]["profile"]["memory_bytes"] == 512 * 2**20
    result.stdout.fnmatch_lines(
        [
            "*= gpubench summary =*",
            "*case*profile*status*tok/s*",
            "*too-big*cpu*oom*",
            "results: *results.jsonl",
        ]
    )


def test_a_hung_case_times_out_and_a_killed_case_crashes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        badmodels="""
        import os, signal, sys, time

        def hang():
            time.sleep(3600)

        def die():
            print("about to die by SIGKILL", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        test_bad="""
        import gpubench

        @gpubench.single_case(model="badmodels:hang", vocab_size=256, steps=2)
        def test_hang(gpubench_result):
            assert gpubench_result.status == "timeout"

        @gpubench.single_case(model="badmodels:die", vocab_size=256, steps=2, timeout_s=120)
        def test_die(gpubench_result):
            assert gpubench_result.status == "crashed"
            assert gpubench_result.error.signal == "SIGKILL"
            assert "about to die" in gpubench_result.error.stderr_tail
        """,
    )
    result = pytester.runpytest("--gpu-profile", "cpu", "--gpubench-timeout", "8")
    result.assert_outcomes(passed=2)
    hung = _results(pytester)[0]
    # the 8 s limit, 3 s of grace, and the start of a worker on a loaded machine
    assert hung["status"] == "timeout" and hung["duration_s"] < 45
    pid = hung["worker_pid"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    ("args", "source", "expected"),
    [
        (
            ["--gpu-profile", "rtx9090"],
            "",
            ["*rtx9090*", "*rtx5080*"],
        ),
        (
            ["--gpu-profile", "rtx5080"],  # this test machine has no GPU
            "",
            ["*profile 'rtx5080' needs an NVIDIA GPU and NVML sees none here*"],
        ),
        (
            ["--gpu-profile", "cpu,"],
            "",
            ["*--gpu-profile='cpu,': expected NAME*"],
        ),
        (
            ["--gpubench-timeout", "soon"],
            "",
            ["*--gpubench-timeout='soon': expected a positive number of seconds*"],
        ),
        (
            ["--gpu-profile", "cpu"],
            '@gpubench.matrix(model="gpt2-smal")\ndef test_x(gpubench_result): pass',
            ["*gpt2-smal*", "*gpt2-small*"],
        ),
        (
            ["--gpu-profile", "cpu"],
            '@gpubench.matrix(model="gpt-tiny", precision="fp16")\n'
            "def test_x(gpubench_result): pass",
            ["*precision='fp16' cannot run on profile 'cpu'*valid on cpu: fp32, bf16*"],
        ),
    ],
    ids=[
        "unknown-profile",
        "gpu-profile-without-gpu",
        "empty-profile",
        "bad-timeout",
        "unknown-model",
        "fp16-on-cpu",
    ],
)
def test_bad_input_fails_before_any_case_runs(
    pytester: pytest.Pytester, args: list[str], source: str, expected: list[str]
) -> None:
    pytester.makepyfile(test_bad="import gpubench\n\n" + (source or "def test_x(): pass"))
    result = pytester.runpytest(*args)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED)
    output = "\n".join(result.outlines + result.errlines)
    for pattern in expected:
        assert any(__import__("fnmatch").fnmatch(line, pattern) for line in output.splitlines()), (
            f"{pattern!r} not in:\n{output}"
        )
    assert not (pytester.path / "reports").exists()


def test_gpu_suites_skip_on_cpu_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_gpu="""
        import gpubench

        @gpubench.matrix(model="gpt2-small", precision=["bf16", "fp16"], requires_gpu=True)
        def test_ladder(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*declared for GPU profiles; profile 'cpu' has no GPU*"])


def test_a_user_model_beside_the_test_file_imports_in_the_worker(
    pytester: pytest.Pytester,
) -> None:
    pytester.mkdir("bench")
    (pytester.path / "bench" / "my_models.py").write_text(
        "from torch import nn\n\n\n"
        "def make():\n"
        "    model = nn.Sequential(nn.Embedding(64, 8), nn.Linear(8, 64))\n"
        "    model.vocab_size = 64\n"
        "    return model\n"
    )
    (pytester.path / "bench" / "test_mine.py").write_text(
        "import gpubench\n\n\n"
        '@gpubench.single_case(model="my_models:make", batch_size=2, seq_len=8, steps=3, '
        "warmup=1)\n"
        "def test_mine(gpubench_result):\n"
        "    assert gpubench_result.fits, gpubench_result.describe()\n"
    )
    result = pytester.runpytest("bench", "--gpu-profile", "cpu")
    result.assert_outcomes(passed=1)


def test_a_factory_module_not_on_the_import_path_fails_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_missing=f"""
        import gpubench

        @gpubench.single_case({TINY.replace('"gpt-tiny"', '"no_such_pkg_xyz.models:make"')})
        def test_missing(gpubench_result):
            pass
        """
    )
    # -rN: no short summary, which repeats the message in full where CI=true is set
    # (pytest leaves it untruncated there) and cut to the terminal's width elsewhere
    result = pytester.runpytest("--gpu-profile", "cpu", "-rN")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the session
    result.stdout.fnmatch_lines(["*no module 'no_such_pkg_xyz' on the import path*"])
    output = "\n".join(result.outlines)
    assert output.count("no module 'no_such_pkg_xyz'") == 1, output  # said once, not chained
    assert "During handling of the above exception" not in output
    assert not (pytester.path / "reports").exists()


def test_an_hf_model_type_transformers_does_not_know_fails_collection(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("transformers")
    pytester.makepyfile(
        test_hf="""
        import gpubench

        @gpubench.matrix(model=["hf:gpt2", "hf:gtp2"], batch_size=2, seq_len=8, steps=2)
        def test_hf(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*model='hf:gtp2': 'gtp2' is not a causal language model type*did you mean 'hf:gpt2'*"]
    )
    assert "hf:gpt2':" not in "\n".join(result.outlines)  # the known one passes
    assert not (pytester.path / "reports").exists()


@pytest.mark.parametrize(
    "value", ["reports", "reports/runs", None], ids=["file", "under", "default"]
)
def test_a_reports_folder_no_run_could_write_is_a_usage_error_before_any_case(
    pytester: pytest.Pytester, value: str | None
) -> None:
    pytester.makepyfile(
        test_one=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            pass
        """
    )
    (pytester.path / "reports").write_text("not a folder")
    args = ["--gpu-profile", "cpu", "-p", "no:cacheprovider"]
    if value is not None:
        args += ["--gpubench-dir", value]
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--gpubench-dir='{value or 'reports'}': *reports is a file, not a folder; give a*"]
    )
    assert not any("passed" in line or "failed" in line for line in result.outlines)
    assert (pytester.path / "reports").read_text() == "not a folder"


def test_hf_models_without_transformers_skip_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        gpubench.session.collection.importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "transformers" else real_find_spec(name),
    )
    from gpubench.contracts.case import make_case

    reason = gpubench.session.collection.missing_requirement(make_case(model="hf:gpt2"))
    assert reason == (
        "model='hf:gpt2' needs the transformers package, which is not installed; "
        "pip install 'gpubench[hf]'"
    )
    assert gpubench.session.collection.missing_requirement(make_case(model="gpt-tiny")) is None


def test_a_case_whose_framework_is_missing_is_skipped_and_the_rest_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        gpubench.session.collection.importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "deepspeed" else real_find_spec(name, package),
    )
    pytester.makepyfile(
        test_engines=f"""
        import gpubench

        @gpubench.matrix({TINY}, engine=["torch", "deepspeed"])
        def test_engines(gpubench_result):
            assert gpubench_result.status == "ok"
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*engine='deepspeed' needs the deepspeed package*pip install 'gpubench?deepspeed?'*"]
    )
    assert [row["case"]["engine"] for row in _results(pytester)] == ["torch"]


@pytest.mark.parametrize(
    ("verbosity", "expected_line"),
    [
        ("-v", r"^test_live\.py::test_one\[[^\]]+\] PASSED +\[100%\]$"),
        ("-rN", r"^test_live\.py \. +\[100%\]$"),
        ("-q", r"^\. +\[100%\]$"),
    ],
    ids=["verbose", "default", "quiet"],
)
def test_live_progress_leaves_pytests_lines_as_they_were(
    pytester: pytest.Pytester, verbosity: str, expected_line: str
) -> None:
    pytester.makepyfile(
        test_live=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            assert gpubench_result.fits
        """
    )
    # pytester splits output with str.splitlines(), which treats \\r as a line break:
    # run pytest directly and keep the raw bytes a terminal would receive.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--gpu-profile",
            "cpu",
            verbosity,
            "--color=yes",
            "--gpubench-progress=live",
            "-p",
            "no:cacheprovider",
        ],
        cwd=pytester.path,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")
    raw = proc.stdout.decode()
    live_line = "[gpubench 0/1 done] gpt-tiny-fp32-b4-s32-n3-warm1@cpu measuring step"
    assert live_line in _strip_ansi(raw)
    # What the terminal shows once the live line is erased: pytest's lines, as without it.
    screen = [line for line in _screen(raw) if line]
    assert sum(bool(re.search(expected_line, line)) for line in screen) == 1, "\n".join(screen)
    assert not any("[gpubench" in line for line in screen), "\n".join(screen)


def test_without_a_terminal_a_line_per_case_unless_quiet(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu", "-v")
    result.stdout.fnmatch_lines(
        ["gpubench: gpt-tiny-fp32-b4-s32-n3-warm1 on cpu: ok, * tok/s*1/1 done*", "*PASSED*"]
    )
    plain = pytester.runpytest("--gpu-profile", "cpu")  # a CI log: no terminal, no -v
    plain.stdout.fnmatch_lines(["gpubench: gpt-tiny-fp32-b4-s32-n3-warm1 on cpu: ok, *1/1 done*"])
    quiet = pytester.runpytest("--gpu-profile", "cpu", "-q")
    quiet.stdout.fnmatch_lines(["1 passed*"])
    assert not any(line.startswith("gpubench:") for line in quiet.outlines)


def test_xdist_workers_share_one_run(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        test_spread=f"""
        import gpubench

        @gpubench.matrix({TINY}, seed=[1, 2])
        def test_seeds(gpubench_result):
            assert gpubench_result.fits
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu", "-n", "2", "-v")
    result.assert_outcomes(passed=2)
    # the controller counts the cases its workers report: done / total and time left
    result.stdout.fnmatch_lines(
        ["gpubench: gpt-tiny-fp32-b4-s32-n3-seed?-warm1 on cpu: ok, * ?1/2 done, ~*s left?"]
    )
    result.stdout.fnmatch_lines(
        ["gpubench: gpt-tiny-fp32-b4-s32-n3-seed?-warm1 on cpu: ok, * ?2/2 done?"]
    )
    records = _results(pytester)
    assert sorted(r["case"]["seed"] for r in records) == [1, 2]
    assert len({r["run_id"] for r in records}) == 1
    runs = [p for p in (pytester.path / "reports").iterdir() if p.name != "latest"]
    assert len(runs) == 1
    result.stdout.fnmatch_lines(["*= gpubench summary =*"])


def test_results_survive_a_session_that_dies_mid_way(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_dies=f"""
        import os
        import gpubench

        @gpubench.single_case({TINY}, name="done-before")
        def test_a(gpubench_result):
            pass

        def test_b():
            os._exit(3)  # the pytest process itself dies
        """
    )
    result = pytester.runpytest_subprocess("--gpu-profile", "cpu", "-p", "no:cacheprovider")
    assert result.ret == 3
    assert [r["case"]["id"] for r in _results(pytester)] == ["done-before"]


def test_reports_dir_option(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        test_dir=f"""
        import gpubench

        @gpubench.single_case({TINY})
        def test_one(gpubench_result):
            pass
        """
    )
    out = tmp_path / "elsewhere"
    pytester.runpytest("--gpu-profile", "cpu", "--gpubench-dir", str(out)).assert_outcomes(passed=1)
    assert (out / "latest" / "results.jsonl").read_text().count("\n") == 1


def test_kept_worker_directories_are_in_the_run_directory(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(
        test_keep=f"""
        import gpubench

        @gpubench.single_case({TINY}, name="a/b")
        def test_one(gpubench_result):
            pass
        """
    )
    out = tmp_path / "runs"
    args = ("--gpu-profile", "cpu", "--gpubench-dir", str(out), "--gpubench-keep-workdirs")
    pytester.runpytest(*args).assert_outcomes(passed=1)
    (kept,) = (out / "latest" / "work").iterdir()
    assert kept.name == "a_b-cpu"  # the case's name made a single folder name
    assert (kept / "job.json").is_file()
    assert any(kept.iterdir())
