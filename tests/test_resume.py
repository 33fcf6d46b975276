"""The resume check: a checkpoint saved after step k, resumed in a fresh worker, compared.

A correct checkpoint resumes bitwise on CPU for the torch and DeepSpeed engines; three
planted faults (``GPUBENCH_RESUME_FAULT``, the worker's test hook: the optimizer state,
the data position, the learning-rate schedule left unrestored) each fail the check with
a sentence naming that part. Each engine's reference run is made once and kept
(``keep=True``) so that every resume of it loads the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

import pytest

from gpubench.contracts.case import MIN_AUTO_STEPS, Case, make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result, ResumeCheck
from gpubench.outcomes import assert_healthy
from gpubench.runner import run_case
from gpubench.runner.resume import ResumePlan, comparison, planned_save_step
from gpubench.session.summary import format_summary
from gpubench.worker.resume.job import FAULT_ENV, ResumeJob
from gpubench.worker.resume.paths import UntrustedCheckpoint, trusted_directory, trusted_files

pytest_plugins = ("pytester",)

CPU = resolve_profile("cpu")
TIMEOUT_S = 600  # DeepSpeed's ops may compile on a cold cache: it only bounds a hang
# a cosine schedule with warm-up: an unrestored schedule gives other rates from step k+2
CASE = dict(
    model="gpt-tiny",
    batch_size=4,
    seq_len=32,
    steps=6,
    warmup=2,
    lr=3e-3,
    lr_schedule="cosine",
    lr_warmup_steps=2,
    resume_check=True,
)


@dataclasses.dataclass
class Reference:
    """A case's own run, its checkpoint kept for the resumes."""

    plan: ResumePlan
    result: Result
    launch: functools.partial[Result]

    def resume(self, fault: str | None = None) -> ResumeCheck:
        env = {FAULT_ENV: fault} if fault else {}
        checked = self.plan.check(
            self.result, lambda job: self.launch(resume=job, env=env), keep=True
        )
        assert checked.resume is not None
        return checked.resume


def reference(case: Case, run_dir: Path) -> Reference:
    plan = ResumePlan.for_case(case, CPU.name, run_dir)
    assert plan is not None
    launch = functools.partial(run_case, case, CPU, timeout_s=TIMEOUT_S, nodeid="t::resume")
    result = launch(resume=plan.save_job())
    assert result.status == "ok", result.describe()
    return Reference(plan, result, launch)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference(make_case(**CASE), tmp_path_factory.mktemp("run"))


needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)


@pytest.fixture(scope="module")
def deepspeed_run(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    case = make_case(**CASE, engine="deepspeed", zero_stage=2, precision="bf16")
    return reference(case, tmp_path_factory.mktemp("run"))


def check_passed(check: ResumeCheck, ref: Reference, fmt: str) -> None:
    k = planned_save_step(ref.result.case, ref.result.metrics.warmup_steps)
    assert check.verdict == "passed", check.differences
    assert check.save_step == k == 2 + 3  # warm-up + half the measured steps
    assert check.comparison == "bitwise" and check.differences == []
    assert check.reference_loss == ref.result.series.loss[k:] and len(check.reference_loss) == 3
    assert check.resumed_loss == check.reference_loss and check.max_relative_diff == 0.0
    assert check.checkpoint_format == fmt
    assert check.checkpoint_bytes and check.checkpoint_bytes > 4 * 124_672  # fp32 weights+
    assert check.save_s is not None and check.save_s > 0
    assert check.load_s is not None and check.load_s > 0


def test_torch_resume_is_bitwise_on_cpu(torch_run: Reference) -> None:
    check_passed(torch_run.resume(), torch_run, "torch.save")


@needs_deepspeed
def test_deepspeed_zero2_bf16_resume_is_bitwise_on_cpu(deepspeed_run: Reference) -> None:
    check_passed(deepspeed_run.resume(), deepspeed_run, "deepspeed")


# each planted fault: the sentence that names its part, and the step its losses part from
FAULTS = {
    "optimizer": ("optimizer state not restored: 0 of 28 parameters have AdamW moments", 7),
    "data": ("data position differs: the next batch is not the one the run drew after step 5", 6),
    "lr": ("learning-rate schedule not restored: it is at step 0, the checkpoint's at step 5", 8),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_part_left_unrestored_fails_naming_it(torch_run: Reference, fault: str) -> None:
    sentence, first_step = FAULTS[fault]
    check = torch_run.resume(fault)
    assert check.verdict == "failed"
    assert any(d.startswith(sentence) for d in check.differences), check.differences
    assert any(d.startswith(f"losses differ from step {first_step}:") for d in check.differences)
    others = {"optimizer": "optimizer state", "data": "data position", "lr": "learning-rate"}
    named = [p for p, said in others.items() if any(said in d for d in check.differences)]
    assert named == [fault]
    assert check.max_relative_diff and check.max_relative_diff > 1e-4
    if fault == "lr":  # the rates themselves, against the run's Series.lr
        assert any(d.startswith("learning rate ") and "at step 7" in d for d in check.differences)


@needs_deepspeed
def test_deepspeed_without_its_optimizer_state_fails(deepspeed_run: Reference) -> None:
    check = deepspeed_run.resume("optimizer")
    assert check.verdict == "failed"
    # ZeRO's optimizer holds one flat fp32 partition per parameter group
    assert "optimizer state not restored: 0 of 1 parameters" in check.differences[0]


def test_a_failed_resume_check_fails_the_test_and_flags_the_summary(torch_run: Reference) -> None:
    failed = ResumeCheck("failed", save_step=5, differences=["data position differs: x"])
    result = dataclasses.replace(torch_run.result, resume=failed)
    with pytest.raises(AssertionError, match="resume check failed: data position differs: x"):
        assert_healthy(result)
    assert_healthy(dataclasses.replace(result, resume=ResumeCheck("passed")))
    assert "flag resume = the resume check failed" in format_summary([result], width=200)


def test_a_run_that_ends_at_the_save_step_is_not_checked(tmp_path: Path) -> None:
    case = make_case(**{**CASE, "steps": 2, "warmup": 1, "resume_check": 3})
    ref = reference(case, tmp_path)
    check = ref.resume()
    assert check.verdict == "not_checked" and check.save_step == 3
    assert "the run took 3 steps, ending at or before step 3" in check.note
    assert not ref.plan.directory.exists() or not any(ref.plan.directory.iterdir())


def test_save_step_rule() -> None:
    assert planned_save_step(make_case(**CASE), warmup_steps=2) == 5
    assert planned_save_step(make_case(**{**CASE, "resume_check": 4}), warmup_steps=9) == 4
    auto = make_case(**{**CASE, "steps": "auto"})
    assert planned_save_step(auto, warmup_steps=3) == 3 + MIN_AUTO_STEPS // 2
    assert ResumePlan.for_case(make_case(**CASE), "cpu", Path("/r"), repeat=1) is None
    assert (
        ResumePlan.for_case(make_case(**{**CASE, "resume_check": False}), "cpu", Path("/r")) is None
    )
    fsdp = ResumePlan.for_case(make_case(**CASE, engine="fsdp"), "cpu", Path("/r"))
    assert fsdp is not None and fsdp.save_job() is None
    assert (
        comparison(dataclasses.replace(Result(make_case(**CASE), CPU, "ok")))["comparison"]
        == "bitwise"
    )


def test_a_checkpoint_outside_the_run_directory_is_refused(tmp_path: Path) -> None:
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (run_dir / "checkpoints").mkdir(parents=True)
    elsewhere.mkdir()
    with pytest.raises(UntrustedCheckpoint, match="is not inside the run's directory"):
        trusted_directory(elsewhere, run_dir)
    with pytest.raises(UntrustedCheckpoint, match="is not inside"):
        trusted_directory(run_dir / ".." / "elsewhere", run_dir)
    link = run_dir / "checkpoints" / "link"
    link.symlink_to(elsewhere)  # a link inside that leads outside
    with pytest.raises(UntrustedCheckpoint, match="resolved"):
        ResumeJob.from_job(
            {"resume": {"mode": "load", "directory": str(link), "run_dir": str(run_dir)}}
        )
    inside = run_dir / "checkpoints" / "case"
    inside.mkdir()
    (elsewhere / "train.pt").write_bytes(b"x")
    (inside / "train.pt").symlink_to(elsewhere / "train.pt")
    with pytest.raises(UntrustedCheckpoint, match="points outside its directory"):
        trusted_files(inside, run_dir)
    with pytest.raises(ValueError, match="valid: save, load"):
        ResumeJob.from_job(
            {"resume": {"mode": "resume", "directory": str(inside), "run_dir": str(run_dir)}}
        )


def test_an_unknown_planted_fault_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpubench.worker.resume.job import planted_fault

    monkeypatch.setenv(FAULT_ENV, "scaler")
    with pytest.raises(ValueError, match="valid: optimizer, data, lr"):
        planted_fault()
    monkeypatch.delenv(FAULT_ENV)
    assert planted_fault() is None and FAULT_ENV not in os.environ


def test_the_report_shows_the_check_and_both_loss_sequences(tmp_path: Path) -> None:
    from gpubench.report.document import ReportData
    from gpubench.report.write import write_report

    check = ResumeCheck(
        "failed",
        save_step=5,
        comparison="bitwise",
        tolerance=0.0,
        reference_loss=[5.3, 5.2],
        resumed_loss=[5.3, 5.25],
        max_relative_diff=0.05 / 5.2,
        differences=["losses differ from step 7: 5.25 resumed vs 5.2 in the run, 0.96 % apart"],
        save_s=0.03,
        load_s=0.05,
        checkpoint_bytes=1_540_246,
        checkpoint_format="torch.save",
    )
    result = Result(make_case(**CASE), CPU, "ok", run_id="r1", resume=check)
    write_report(ReportData(results=[result]), tmp_path / "r.html", tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    row = next(
        line for line in md.splitlines() if line.startswith("| gpt-tiny") and "FAILED" in line
    )
    assert "| 5 | bitwise | 0.03 | 0.05 | 1.5 MiB (torch.save) | 0.96 | losses differ" in row
    assert "| 7 | 5.200000 | 5.250000 | 0.96 |" in md
    assert 'id="resume"' in (tmp_path / "r.html").read_text(encoding="utf-8")


SUITE = """
import gpubench

@gpubench.matrix(model="gpt-tiny", batch_size=4, seq_len=32, steps=4, warmup=1, lr=3e-3,
                 resume_check=True)
def test_cell(gpubench_result):
    gpubench.assert_healthy(gpubench_result)
"""


def test_a_session_checks_fails_the_test_and_keeps_one_result(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through pytest: the case's test fails with what differed, results.jsonl holds the
    case's run only (the resumed worker's is no case run), the checkpoint is deleted."""
    import json

    monkeypatch.setenv(FAULT_ENV, "data")
    pytester.makepyfile(test_suite=SUITE)
    outcome = pytester.runpytest_subprocess("--gpu-profile", "cpu", "-q", "-p", "no:randomly")
    outcome.assert_outcomes(failed=1)
    outcome.stdout.fnmatch_lines(["*resume check failed: data position differs*"])
    latest = pytester.path / "reports" / "latest"
    lines = (latest / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    resume = json.loads(lines[0])["resume"]
    assert resume["verdict"] == "failed" and resume["save_step"] == 1 + 2
    assert not any((latest.resolve() / "checkpoints").glob("*"))
