"""The bare, hand-written training loop gpubench is compared against, on CPU or CUDA.

Same model (built by :mod:`gpubench.worker.models`, so the weights and shapes are
identical), same token stream, AdamW settings, loss and gradient clipping as
the torch engine (:mod:`gpubench.worker.engines.recipe`); none of the harness: no
worker protocol, trackers, progress, memory cap or result file. It is what a
user writes by hand: ``torch.compile`` on the module, autocast for bf16, one
``loss.item()`` per step (which waits for the GPU), wall-clock time per step.

    python -m gpubench.validation.bare_loop '{"model": "gpt-mini", "batch_size": 8, ...}' [cuda]

prints one JSON line: median tokens/s over the measured steps and the seconds
spent in them. ``benchmarks/`` (CPU) and the GPU validation kit use it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from gpubench.contracts.case import Case, make_case
from gpubench.worker.data.synthetic import TokenStream
from gpubench.worker.engines.recipe import (
    AUTOCAST_DTYPES,
    adamw,
    lm_loss,
    max_grad_norm,
)
from gpubench.worker.models import build_model

DEFAULT_WARMUP_STEPS = 5  # when the case's warm-up is "auto": the bare loop detects nothing


def unsupported(case: Case) -> list[str]:
    """What the bare loop does not do (it is one process, one micro-batch, no scaler)."""
    found = []
    if case.engine != "torch":
        found.append(f"engine={case.engine!r}")
    if case.nproc != 1:
        found.append(f"nproc={case.nproc}")
    if case.flags.grad_accum != 1:
        found.append(f"grad_accum={case.flags.grad_accum}")
    if case.flags.precision == "fp16":
        found.append("precision='fp16' (GradScaler)")
    return found


def bare_step(case: Case, device: str = "cpu") -> Callable[[], float]:
    """Build ``case``'s model, data and optimizer on ``device``; return one training step
    (data, forward, loss, backward, clip, optimizer step, ``loss.item()``): the loss."""
    refused = unsupported(case)
    if refused:
        raise ValueError(f"the bare loop does not do {', '.join(refused)}")
    torch.manual_seed(case.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = case.flags.tf32
        torch.backends.cudnn.allow_tf32 = case.flags.tf32
    built = build_model(case, device)
    stream = TokenStream(
        case.data, built.vocab_size, case.batch_size, case.seq_len, case.seed, device
    )
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = adamw(case, params)
    if case.flags.compile:
        built.module = torch.compile(built.module)  # type: ignore[assignment]
    built.module.train()
    max_norm = max_grad_norm(case)
    dtype = AUTOCAST_DTYPES.get(case.flags.precision)
    device_type = torch.device(device).type

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))

    def step() -> float:
        x, y = stream.next_batch()
        with autocast():
            logits = built.logits(x)
        loss = lm_loss(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def warmup_steps(case: Case) -> int:
    return case.warmup if isinstance(case.warmup, int) else DEFAULT_WARMUP_STEPS


def measured_step_times(case: Case, device: str = "cpu") -> list[float]:
    """Train ``case`` in the bare loop; the measured steps' wall times (warm-up dropped)."""
    if not isinstance(case.steps, int):  # the adaptive stop is the harness's, not the loop's
        raise ValueError(
            f"the bare loop measures a fixed number of steps; steps={case.steps!r}: give an integer"
        )
    step = bare_step(case, device)
    skip = warmup_steps(case)
    step_times = []
    for _ in range(skip + case.steps):
        t0 = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - t0)
    return step_times[skip:]


def case_and_device(argv: list[str] | None, usage: str | None) -> tuple[Case, str] | None:
    """``'<case JSON>' [device]`` from the command line (device default cpu); None, with
    ``usage`` printed, on anything else. This module's and kernel_profile's command line."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(usage, file=sys.stderr)
        return None
    return make_case(**json.loads(args[0])), args[1] if len(args) == 2 else "cpu"


def main(argv: list[str] | None = None) -> int:
    parsed = case_and_device(argv, __doc__)
    if parsed is None:
        return 2
    case, device = parsed
    measured = measured_step_times(case, device)
    print(
        json.dumps(
            {
                "tokens_per_s": case.tokens_per_step / statistics.median(measured),
                "measured_s": sum(measured),
                "device": device,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
