"""What the phase split costs: the torch engine's step with and without its phase clock.

One process, one model: the step the torch engine times (``TorchEngine.build_step``)
timed the way the loop times it (``StepTimer``), in alternating blocks of steps with the
clock on (``PhaseClock``, the default) and off (``NoPhases``, ``time_phases=False``), so
that a drifting machine biases neither side. Prints the median step time of each side,
their ratio (steps per second with the split / without; target >= 0.99) and the clock's
own cost per step (its marks alone, no model), which is the figure the ratio's noise
hides. A small model and batch make the step short, and the clock's share of it large.

    python benchmarks/phase_cost.py --model gpt-tiny --batch-size 2 --seq-len 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpubench.contracts.case import make_case  # noqa: E402
from gpubench.contracts.profiles import resolve_profile  # noqa: E402
from gpubench.worker.engines.context import TrainingContext  # noqa: E402
from gpubench.worker.engines.distributed import Ranks  # noqa: E402
from gpubench.worker.engines.recipe import build_for_training  # noqa: E402
from gpubench.worker.engines.torch_engine import TorchEngine  # noqa: E402
from gpubench.worker.measure.phases import PHASES, PhaseClock  # noqa: E402
from gpubench.worker.trackers.timing import StepTimer  # noqa: E402


class Side:
    """The engine's step on its own model, the clock on or off, timed as the loop times it."""

    def __init__(self, time_phases: bool, args: argparse.Namespace) -> None:
        case = make_case(
            model=args.model,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            time_phases=time_phases,
        )
        self.ctx = TrainingContext(case, resolve_profile("cpu"), torch.device("cpu"), Ranks())
        model, stream = build_for_training(self.ctx)
        self.step = TorchEngine().build_step(self.ctx, model, stream)
        self.timer = StepTimer("cpu", phases=self.ctx.phases)
        self.steps = args.steps
        for _ in range(args.warmup):
            self.step()

    def block(self) -> None:
        for _ in range(self.steps):
            with self.timer:
                self.step()
            self.ctx.phases.read()  # as the loop does, outside the clock


def marks_cost_s(repeats: int = 20000) -> float:
    """The clock alone: one step's marks (a grad_accum=1 torch step's), no model."""
    clock = PhaseClock("cpu")
    names = ("data", "forward", "rest", "backward", "clip", "optimizer", "rest")
    assert set(names) <= set(PHASES)
    started = time.perf_counter()
    for _ in range(repeats):
        clock.begin(0.0)
        for name in names:
            clock.mark(name)
        clock.end(1.0)
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-tiny")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--blocks", type=int, default=10, help="blocks per side, alternating")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with_phases, without = Side(True, args), Side(False, args)
    for i in range(args.blocks):
        for side in (with_phases, without) if i % 2 == 0 else (without, with_phases):
            side.block()
    on = statistics.median(with_phases.timer.times_s)
    off = statistics.median(without.timer.times_s)
    summary = {
        "command": "python benchmarks/phase_cost.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "case": {"model": args.model, "batch_size": args.batch_size, "seq_len": args.seq_len},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "step_s_median_with_phases": on,
        "step_s_median_without": off,
        "throughput_ratio": off / on,
        "marks_cost_per_step_s": marks_cost_s(),
        "steps_per_side": len(with_phases.timer.times_s),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
