"""The suite behind tests/data/report/: one real case for each way a case can end on a CPU.

Not collected by `pytest tests/` (its name does not start with test_); README.md here
has the two commands that ran it. Each test only receives its Result: the report,
not the test, judges it.
"""

from __future__ import annotations

import gpubench
from gpubench import Result

TINY = dict(model="gpt-tiny", seq_len=32, steps=8, warmup=2)

# Run on `cpu`: a healthy case, the same at a larger batch (the advice's batch probe), a
# name that is markup, a loss that explodes, a case that outlives its limit, and a model
# that raises in its forward.
PLAIN = gpubench.matrix(**TINY, batch_size=[2, 8])
MARKUP_NAME = gpubench.single_case(**TINY, batch_size=2, name="<script>alert(1)</script>")
DIVERGES = gpubench.single_case(
    **TINY, batch_size=2, lr=1e6, grad_clip=None, name="gpt-tiny-lr1e6-diverges"
)
TIMES_OUT = gpubench.single_case(
    model="gpt-tiny",
    seq_len=32,
    batch_size=2,
    steps=1_000_000,
    warmup=1,
    timeout_s=4,
    name="gpt-tiny-outlives-4s",
)
CRASHES = gpubench.single_case(
    model="statuses_models:broken",
    seq_len=32,
    batch_size=2,
    steps=4,
    warmup=1,
    name="broken-forward",
)
# Run on the 64 MiB `small-cpu` profile (profiles.toml): a batch that fits, one that cannot.
UNDER_A_SMALL_CAP = gpubench.matrix(
    model="gpt-tiny", seq_len=128, steps=8, warmup=2, batch_size=[2, 256]
)


@PLAIN + MARKUP_NAME + DIVERGES + TIMES_OUT + CRASHES
def test_every_ending(gpubench_result: Result) -> None:
    pass


@UNDER_A_SMALL_CAP
def test_small_cap(gpubench_result: Result) -> None:
    pass
