"""The training-correctness figures of docs/training.md, reproduced on a CPU.

- ``quality``: held-out loss of gpt-tiny on the learnable stream (batch 8 x 32, 40 steps
  at lr 3e-3, 64 held-out sequences) in fp32 (the reference), bf16 autocast, bf16-pure and
  fp32 at a far too high learning rate (1.0), per seed, each against the fp32 reference:
  the margin the quality check's 2 % threshold has; beside it the training loss's first and
  last steps and the clip rate (``grad_clip`` 1.0). Losses, not timings: a busy machine
  does not change them.
- ``resume``: the resume check of a small case per engine through the real worker (save
  after step 5 of 8, the steps after it resumed in a fresh worker), with its verdict, save
  and load seconds and checkpoint bytes. Seconds depend on the machine and its load.

    python benchmarks/correctness.py quality --seeds 0,1,2
    python benchmarks/correctness.py resume --engines torch,deepspeed
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gpubench.contracts.case import make_case  # noqa: E402
from gpubench.contracts.profiles import resolve_profile  # noqa: E402
from gpubench.runner import run_case  # noqa: E402
from gpubench.runner.resume import ResumePlan  # noqa: E402

QUALITY_CASE = dict(model="gpt-tiny", batch_size=8, seq_len=32, steps=40, warmup=0, eval_batches=8)
VARIANTS = {
    "fp32 (reference)": dict(precision="fp32", lr=3e-3),
    "bf16 autocast": dict(precision="bf16", lr=3e-3),
    "bf16-pure": dict(precision="bf16-pure", lr=3e-3),
    "fp32, lr 1.0": dict(precision="fp32", lr=1.0),
}


def quality(seeds: list[int]) -> None:
    from in_process import train  # tests/in_process.py: an engine run in this process

    print(
        "| case | seed | training loss, first -> last | clip rate | held-out loss | vs reference |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for seed in seeds:
        reference = None
        for label, settings in VARIANTS.items():
            result = train(make_case(**QUALITY_CASE, seed=seed, **settings))
            loss = result.metrics.eval_loss
            if reference is None:
                reference = loss
            versus = (
                f"{100 * (loss - reference) / reference:+.2f} %"
                if loss is not None and reference and label != "fp32 (reference)"
                else ""
            )
            shown = f"{loss:.4f}" if loss is not None else result.status
            m = result.metrics
            trained = f"{m.loss_start:.3f} -> {m.loss_end:.3f}" if m.loss_end is not None else "-"
            clipped = f"{m.clip_rate:.2f}" if m.clip_rate is not None else "-"
            print(f"| {label} | {seed} | {trained} | {clipped} | {shown} | {versus} |", flush=True)


def _resumed(launch: functools.partial, job: dict) -> object:
    return launch(resume=job)


def resume(engines: list[str]) -> None:
    profile = resolve_profile("cpu")
    print("| engine | verdict | comparison | save, s | load, s | checkpoint, bytes |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for engine in engines:
        flags = dict(zero_stage=2, precision="bf16") if engine == "deepspeed" else {}
        case = make_case(
            model="gpt-tiny",
            engine=engine,
            batch_size=4,
            seq_len=32,
            steps=6,
            warmup=2,
            lr=3e-3,
            lr_schedule="cosine",
            lr_warmup_steps=2,
            resume_check=5,
            **flags,
        )
        with tempfile.TemporaryDirectory() as run_dir:
            plan = ResumePlan.for_case(case, profile.name, Path(run_dir))
            assert plan is not None
            launch = functools.partial(run_case, case, profile, timeout_s=600)
            run = launch(resume=plan.save_job())
            result = plan.check(run, functools.partial(_resumed, launch))
        check = result.resume
        assert check is not None, result.describe()
        print(
            f"| {case.id} | {check.verdict} | {check.comparison} | {check.save_s or 0:.3f} | "
            f"{check.load_s or 0:.3f} | {check.checkpoint_bytes or 0:,} |",
            flush=True,
        )
        for difference in check.differences:
            print(f"  {difference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("quality").add_argument("--seeds", default="0,1,2")
    sub.add_parser("resume").add_argument("--engines", default="torch,deepspeed")
    args = parser.parse_args()
    if args.what == "quality":
        quality([int(s) for s in args.seeds.split(",")])
    else:
        resume(args.engines.split(","))


if __name__ == "__main__":
    main()
