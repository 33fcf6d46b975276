"""The GPU validation kit: one command that proves or disproves every CUDA path.

    python -m gpubench.validation --out DIR            # on a GPU machine (the gpu scale)
    python -m gpubench.validation --out DIR --smoke    # anywhere: the same kit on the cpu profile

A GPU is lent rarely and briefly, so the check is prepared before it is: the
kit runs the plan (:mod:`gpubench.validation.plan`) through the real pytest
plugin, once on ``--gpu-profile auto`` and once on a smaller emulated profile,
measures the harness ratio against a bare loop, judges every check
(:mod:`gpubench.validation.checks`) and, when the reference run misses its
MFU target, profiles one of its steps by kernel category. DeepSpeed's CPU
Adam op is built in the background while the torch cases run.

It writes at most 8 files to DIR, the evidence to commit under
``docs/validation/<date>-<gpu>/``: ``validation.json`` (one line per check with
its figure, rewritten after every phase, so a run cut short keeps what it
found), ``validation.md``, ``results.jsonl``, ``pytest.log``, ``nvidia-smi.txt``
(on a GPU), ``kernel-profile.txt`` (when profiled), and the run's ``report.html`` and
``report.md`` (both parts in one page). Exit status: 0 when no
check failed, 1 when one did, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gpubench.contracts.profiles import nvml_gpu0, resolve_profile
from gpubench.contracts.protocol import write_text_atomic
from gpubench.contracts.result import Result
from gpubench.storage import read_results
from gpubench.validation import plan as P
from gpubench.validation.checks import FAIL, PASS, SKIP, Check, case_checks
from gpubench.validation.diagnostic_checks import diagnostic_checks
from gpubench.validation.harness import HARNESS_TARGET, HarnessError, harness_ratio
from gpubench.validation.kernel_profile import format_profile
from gpubench.validation.plan import Plan, plan_for
from gpubench.validation.training_checks import training_checks

MAX_FILES = 8
SUITE = Path(__file__).resolve().parent / "suite.py"


@dataclass
class Evidence:
    """What the kit has found so far, written to DIR after every phase."""

    out: Path
    plan: Plan
    device: str | None  # NVML's name of GPU 0, None without one
    command: str
    started: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    def over_budget(self, budget_s: float) -> bool:
        return time.monotonic() - self.started > budget_s

    def phase(self, name: str, began: float) -> None:
        self.phases[name] = round(time.monotonic() - began, 1)
        self.write()

    def write(self) -> None:
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        data = {
            "kit": "gpubench.validation",
            "scale": self.plan.scale,
            "command": self.command,
            "device": self.device,
            "python": platform.python_version(),
            "gpubench": _version("gpubench"),
            "torch": _version("torch"),
            "deepspeed": _version("deepspeed"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": round(time.monotonic() - self.started, 1),
            "phases_s": self.phases,
            "complete": self.complete,
            "summary": counts,
            "checks": [c.to_dict() for c in self.checks],
            "figures": self.figures,
        }
        _write_text(self.out / "validation.json", json.dumps(data, indent=2, default=str) + "\n")
        _write_text(self.out / "validation.md", markdown(data))


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _open_log(path: Path) -> TextIO:
    """A log written as it grows: a symbolic link at ``path`` is refused (O_NOFOLLOW), not
    followed to what it points to."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "w", encoding="utf-8")


def markdown(data: dict[str, Any]) -> str:
    """validation.json as a Markdown page (what docs/validation/ shows)."""
    s = data["summary"]
    lines = [
        f"# gpubench validation, {data['scale']} scale",
        "",
        f"- device: {data['device'] or 'no GPU (cpu profile)'}",
        f"- gpubench {data['gpubench']}, torch {data['torch']}, DeepSpeed {data['deepspeed']}, "
        f"Python {data['python']}",
        f"- {data['date']}, {data['wall_s']:.0f} s wall"
        + ("" if data["complete"] else " (**incomplete**: the kit did not finish)"),
        f"- command: `{data['command']}`",
        f"- {s[PASS]} passed, {s[FAIL]} failed, {s[SKIP]} skipped",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for check in data["checks"]:
        detail = str(check["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check['name']} | {check['status']} | {detail} |")
    return "\n".join(lines) + "\n"


# -- phases -------------------------------------------------------------------------------------


def record_gpu(out: Path) -> None:
    """nvidia-smi's view of the card (read-only queries; nothing is set)."""
    with _open_log(out / "nvidia-smi.txt") as fh:
        for args in (
            ["nvidia-smi"],
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                "clocks.max.mem,power.limit,pstate,compute_mode",
                "--format=csv",
            ],
        ):
            fh.write("$ " + " ".join(args) + "\n")
            try:
                done = subprocess.run(args, capture_output=True, text=True, timeout=30)
                fh.write(done.stdout + done.stderr + "\n")
            except (OSError, subprocess.TimeoutExpired) as exc:
                fh.write(f"could not run: {exc}\n")


def start_op_build(plan: Plan, log: TextIO) -> subprocess.Popen[bytes] | None:
    """Build the DeepSpeed ops the plan's offload case loads, in the background, into the
    ``TORCH_EXTENSIONS_DIR`` its workers will read; None without DeepSpeed."""
    if _version("deepspeed") is None:
        return None
    case = plan.main.get(P.ZERO2_OFFLOAD)
    if case is None:
        return None
    code = (
        "import json, os, sys\n"
        "from gpubench.contracts.case import make_case\n"
        "from gpubench.contracts.profiles import resolve_profile\n"
        "from gpubench.worker.engines.deepspeed_setup import set_up_deepspeed\n"
        "set_up_deepspeed(make_case(**json.loads(sys.argv[1])), resolve_profile(sys.argv[2]))\n"
        "print('DeepSpeed ops built into', os.environ['TORCH_EXTENSIONS_DIR'])\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(case), plan.main_profile],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_part(part: str, profile: str, plan: Plan, work: Path, log: TextIO) -> list[Result]:
    """The suite's ``part`` through pytest and the plugin; the Results it wrote."""
    reports = work / f"reports-{part}"
    ini = work / "pytest.ini"  # the kit's own config: a project's pyproject must not apply
    ini.write_text("[pytest]\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE),
        "-c",
        str(ini),
        "--rootdir",
        str(work),
        "-p",
        "no:cacheprovider",
        "-rA",
        "--gpu-profile",
        profile,
        "--gpubench-dir",
        str(reports),
        "--gpubench-no-compare",
        "--gpubench-timeout",
        str(plan.timeout_s),
        "--gpubench-report",
        "none",  # the kit renders one report of both parts
    ]
    env = dict(os.environ, GPUBENCH_VALIDATION_SCALE=plan.scale, GPUBENCH_VALIDATION_PART=part)
    log.write(f"\n== {part}: {' '.join(command)}\n")
    log.flush()
    subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.flush()
    return [r for path in sorted(reports.glob("*/results.jsonl")) for r in read_results(path)]


def harness_check(plan: Plan, timeout_s: float, evidence: Evidence) -> Check:
    profile = resolve_profile(plan.main_profile)
    try:
        figures = harness_ratio(plan.harness, profile, plan.harness_pairs, timeout_s)
    except HarnessError as exc:
        return Check("harness-ratio", FAIL, str(exc))
    evidence.figures["harness"] = figures
    ratio = figures["ratio"]
    detail = (
        f"gpubench / bare loop tokens/s, median of {len(figures['pair_ratios'])} pairs: "
        f"{ratio:.3f} (target >= {HARNESS_TARGET})"
    )
    if profile.is_cpu:
        # a few seconds of a tiny model on a shared CPU measure the machine, not the harness
        return Check(
            "harness-ratio",
            SKIP,
            detail + "; not judged on the smoke scale (docs/benchmarks has the CPU figures)",
            ratio,
        )
    return Check("harness-ratio", PASS if ratio >= HARNESS_TARGET else FAIL, detail, ratio)


def kernel_profile(plan: Plan, out: Path, timeout_s: float, log: TextIO) -> dict[str, Any] | None:
    """Profile one step of the reference case into kernel-profile.txt; its figures."""
    device = "cpu" if resolve_profile(plan.main_profile).is_cpu else "cuda"
    command = [
        sys.executable,
        "-m",
        "gpubench.validation.kernel_profile",
        json.dumps(plan.main[P.REFERENCE]),
        device,
    ]
    log.write(f"\n== kernel profile: {' '.join(command)}\n")
    log.flush()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.write(f"kernel profile ran past {timeout_s:.0f} s\n")
        return None
    log.write(done.stderr[-4000:])
    if done.returncode != 0:
        log.write(f"kernel profile exited {done.returncode}\n")
        return None
    profile: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    write_text_atomic(out / "kernel-profile.txt", format_profile(profile))
    return profile


def validate(out: Path, plan: Plan, command: str, budget_s: float | None = None) -> int:
    """Run the kit (the module doc); ``budget_s`` defaults to the plan's."""
    budget_s = plan.budget_s if budget_s is None else budget_s
    gpu = nvml_gpu0()
    device = gpu[0] if gpu else None
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_extensions_dir()))
    evidence = Evidence(out, plan, device, command)
    evidence.write()
    if device is not None:
        record_gpu(out)
    with (
        tempfile.TemporaryDirectory(prefix="gpubench-validate-") as tmp,
        _open_log(out / "pytest.log") as log,
    ):
        work = Path(tmp)
        began = time.monotonic()
        build_log = open(work / "op-build.log", "w+", encoding="utf-8")  # noqa: SIM115
        builder = start_op_build(plan, build_log)
        results = run_part("main", plan.main_profile, plan, work, log)
        judge(evidence, results, work)  # a kit cut short later keeps these verdicts
        evidence.phase("main cases", began)
        began = time.monotonic()
        results += run_part("emulated", plan.emulated_profile, plan, work, log)
        by_name = judge(evidence, results, work)
        evidence.phase("emulated cases", began)
        if builder is not None:
            if builder.poll() is None:
                builder.kill()
            builder.wait()
            build_log.seek(0)
            log.write(f"\n== DeepSpeed op build (background), exit {builder.returncode}\n")
            log.write(build_log.read()[-8000:])
        build_log.close()

        began = time.monotonic()
        if evidence.over_budget(budget_s):
            why = f"the kit's time budget ({budget_s:.0f} s, --budget-s) was spent before it"
            evidence.checks.append(Check("harness-ratio", SKIP, why))
        else:
            evidence.checks.append(harness_check(plan, plan.timeout_s, evidence))
        evidence.phase("harness ratio", began)

        mfu = next(c for c in evidence.checks if c.name == "reference-mfu")
        reference = by_name.get(P.REFERENCE)
        if evidence.over_budget(budget_s):
            log.write(
                f"\n== kernel profile: skipped, the time budget ({budget_s:.0f} s) is spent\n"
            )
        elif mfu.status != PASS and reference is not None and reference.ran:
            began = time.monotonic()
            profile = kernel_profile(plan, out, plan.timeout_s, log)
            if profile is not None:
                evidence.figures["reference_kernel_profile"] = {
                    k: profile[k] for k in ("step_wall_s", "kernel_s", "idle_share", "categories")
                }
            evidence.phase("kernel profile", began)
        began = time.monotonic()
        write_run_report(out, work, log)
        evidence.phase("report", began)
    evidence.complete = True
    evidence.write()
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert len(written) <= MAX_FILES, written
    _print_summary(evidence, written)
    return 1 if any(c.status == FAIL for c in evidence.checks) else 0


def judge(evidence: Evidence, results: list[Result], work: Path) -> dict[str, Result]:
    """The Results so far into results.jsonl and the case checks; the Results by name."""
    _write_results(evidence.out / "results.jsonl", work)
    by_name = {r.case.id: r for r in results}
    evidence.checks = case_checks(
        by_name, skipped_here(evidence.plan), evidence.device, evidence.plan.estimate_tolerance
    ) + diagnostic_checks(by_name)
    evidence.checks += training_checks(by_name, skipped_here(evidence.plan))
    evidence.write()
    return by_name


def write_run_report(out: Path, work: Path, log: TextIO) -> None:
    """Both parts' runs as one report.html and report.md in ``out`` (rendered in ``work``, so
    the recommended.json beside it does not take one of the 8 files)."""
    from gpubench.report.document import ReportData
    from gpubench.report.load import load_runs
    from gpubench.report.write import write_report

    runs = sorted(p.parent for p in work.glob("reports-*/*/results.jsonl"))
    if not runs:
        return
    try:
        loaded = load_runs(runs)
        data = ReportData(results=loaded.results, invocations=loaded.invocations)
        written = write_report(data, work / "report.html", work / "report.md")
    except Exception as exc:  # the evidence matters more than its page: say why, go on
        log.write(f"\n== report: not written: {type(exc).__name__}: {exc}\n")
        return
    for path in (written.html, written.markdown):
        if path is not None:
            shutil.copy(path, out / path.name)


def skipped_here(plan: Plan) -> dict[str, str]:
    """The plan's skipped checks, and the DeepSpeed ones when DeepSpeed is not installed
    (its cases are skipped at collection then, and leave no Result)."""
    skipped = dict(plan.skipped)
    if _version("deepspeed") is None:
        why = "DeepSpeed is not installed here (pip install 'gpubench[deepspeed]')"
        skipped |= {"deepspeed-zero2": why, "deepspeed-zero2-offload": why, "resume-check": why}
    return skipped


def _extensions_dir() -> Path:
    from gpubench.worker.engines.deepspeed_setup import default_torch_extensions_dir

    return default_torch_extensions_dir()


def _write_results(path: Path, work: Path) -> None:
    """Both parts' results.jsonl, line for line, as one file."""
    parts = sorted(work.glob("reports-*/*/results.jsonl"))
    write_text_atomic(path, "".join(part.read_text(encoding="utf-8") for part in parts))


def _print_summary(evidence: Evidence, written: list[str]) -> None:
    width = max(len(c.name) for c in evidence.checks)
    for check in evidence.checks:
        print(f"{check.name:{width}s}  {check.status:4s}  {check.detail}")
    failed = sum(c.status == FAIL for c in evidence.checks)
    print(f"\n{failed} failed; wrote {', '.join(written)} to {evidence.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpubench.validation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="where the evidence goes")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smoke scale on the cpu profile (any machine; what the tests run)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="past this, the harness ratio and the kernel profile are skipped and say so "
        "(default: 420 on a GPU, so the kit ends inside a 10-minute command; 1800 with --smoke)",
    )
    args = parser.parse_args(argv)
    if args.budget_s is not None and not args.budget_s > 0:
        parser.error(f"--budget-s {args.budget_s!r}: must be a number of seconds > 0")
    scale = "smoke" if args.smoke else "gpu"
    if scale == "gpu" and nvml_gpu0() is None:
        parser.error("no NVIDIA GPU is visible (NVML sees none); use --smoke on a CPU machine")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} exists and is not a directory")
    resolve_profile(plan_for(scale).emulated_profile)  # a typo in the plan fails here, not later
    command = "python -m gpubench.validation " + " ".join(sys.argv[1:] if argv is None else argv)
    return validate(args.out, plan_for(scale), command, args.budget_s)


if __name__ == "__main__":
    sys.exit(main())
