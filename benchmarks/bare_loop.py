"""The bare, hand-written training loop gpubench is compared against.

Same model (built by gpubench.models so the weights and shapes are identical),
same data stream, same AdamW settings and grad clipping as the torch engine;
none of the harness: no trackers, no progress, no result file. Prints one JSON
line: median tokens/s over the measured steps and the seconds spent inside
the measured steps (the sum of their times; warm-up steps excluded).

    python benchmarks/bare_loop.py '{"model": "gpt-mini", "batch_size": 8, ...}'
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gpubench.case import Case, make_case
from gpubench.data.synthetic import TokenStream
from gpubench.models import build_model


def bare_step(case: Case) -> Callable[[], float]:
    """Build ``case``'s model, data and optimizer on CPU; return one training step (data,
    forward, backward, clip, optimizer step, loss read), which returns the loss."""
    torch.manual_seed(case.seed)
    built = build_model(case, "cpu")
    stream = TokenStream(
        case.data, built.vocab_size, case.batch_size, case.seq_len, case.seed, "cpu"
    )
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=case.lr, betas=(0.9, 0.95), weight_decay=0.1)
    max_norm = math.inf if case.grad_clip is None else case.grad_clip
    built.module.train()

    def step() -> float:
        x, y = stream.next_batch()
        logits = built.logits(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def measured_step_times(case: Case) -> list[float]:
    """Train ``case`` on CPU in the bare loop; the measured steps' times (warm-up dropped)."""
    step = bare_step(case)
    step_times = []
    for _ in range(int(case.warmup) + case.steps):
        t0 = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - t0)
    return step_times[int(case.warmup) :]


def main() -> None:
    case = make_case(**json.loads(sys.argv[1]))
    measured = measured_step_times(case)
    print(
        json.dumps(
            {
                "tokens_per_s": case.tokens_per_step / statistics.median(measured),
                "measured_s": sum(measured),
            }
        )
    )


if __name__ == "__main__":
    main()
