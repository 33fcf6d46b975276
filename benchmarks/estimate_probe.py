"""The memory estimate against what the real worker needs, on a cpu profile.

Two measurements, both with the real worker (2 steps, no warm-up), each case's estimate
printed beside them:

- ``cap``: the smallest memory cap at which a one-process case trains, bisected to 3 %.
  The worker caps ``RLIMIT_DATA`` at its runtime's resident set plus the profile's
  memory (gpubench/worker/capacity.py), so that cap is the training's own peak
  (docs/estimate.md, "Measured on a CPU").
- ``rss``: a case of several ranks (torchrun, gloo), run once under a roomy cap, and
  rank 0's peak resident set above its runtime compared with the estimate the way an
  executed case's estimate is (``gpubench.estimate.measured.compared``). A cap is not
  bisected there: a rank that runs out of memory alone leaves the others waiting in a
  collective until the time limit.

    python benchmarks/estimate_probe.py cap '[{"precision": "fp32"}, {"precision": "bf16"}]' \
        --with '{"model": "gpt-mini", "batch_size": 8, "seq_len": 256, "engine": "fsdp"}'
    python benchmarks/estimate_probe.py rss '[{"precision": "fp32"}, {"precision": "bf16"}]' \
        --with '{"model": "gpt-mini", "batch_size": 8, "seq_len": 256, "engine": "fsdp",
                 "nproc": 2}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpubench.contracts.case import Case, make_case  # noqa: E402
from gpubench.contracts.profiles import resolve_profile  # noqa: E402
from gpubench.contracts.result import Result  # noqa: E402
from gpubench.contracts.units import MiB  # noqa: E402
from gpubench.estimate import estimate_case, estimate_peak_bytes  # noqa: E402
from gpubench.estimate.measured import compared  # noqa: E402
from gpubench.runner import run_case  # noqa: E402

ROOMY = "8GiB"  # the rss measurement's cap: far above any case this probe is for
RESOLUTION = 0.03  # the cap bisection stops when its bracket is this share of the cap


def run(case: Case, memory: str) -> Result:
    """The case's Result from the real worker (torchrun for several ranks) under ``memory``."""
    return run_case(case, resolve_profile(f"cpu:{memory}"), timeout_s=300)


def smallest_cap(case: Case, estimate: int) -> int:
    """The smallest cap, in bytes, at which ``case`` trains (within :data:`RESOLUTION`)."""
    low, high = int(estimate * 0.4), int(estimate * 1.6)
    if run(case, str(high)).status != "ok":
        raise SystemExit(f"{case.id} does not train under {high / MiB:.0f} MiB: widen the bracket")
    while high - low > RESOLUTION * high:
        middle = (low + high) // 2
        low, high = (low, middle) if run(case, str(middle)).status == "ok" else (middle, high)
    return high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("cap", "rss"))
    parser.add_argument("cases", help="a JSON list of case settings (make_case keywords)")
    parser.add_argument(
        "--with", dest="common", default="{}", help="a JSON object of settings every case has"
    )
    args = parser.parse_args(argv)
    settings: list[dict[str, Any]] = json.loads(args.cases)
    common: dict[str, Any] = json.loads(args.common)
    for kwargs in settings:
        case = make_case(**{"steps": 2, "warmup": 0, **common, **kwargs})
        if args.mode == "cap":
            if case.nproc > 1:
                raise SystemExit(f"{case.id}: cap takes one-process cases; use rss for nproc > 1")
            estimate = estimate_peak_bytes(case, resolve_profile("cpu"))
            cap = smallest_cap(case, estimate)
            error = 100 * (estimate - cap) / cap
            print(
                f"{case.id}: estimate {estimate / MiB:.1f} MiB, smallest cap that trains "
                f"{cap / MiB:.1f} MiB, {error:+.1f} %",
                flush=True,
            )
            continue
        result = run(case, ROOMY)
        if not result.ran:
            raise SystemExit(f"{case.id} did not train: {result.describe()}")
        estimate_now = compared(estimate_case(case, resolve_profile(f"cpu:{ROOMY}")), result)
        if estimate_now.measured_bytes is None or estimate_now.error_pct is None:
            raise SystemExit(f"{case.id}: no measured figure to compare ({result.describe()})")
        print(
            f"{case.id}: estimate {estimate_now.peak_bytes / MiB:.1f} MiB, measured "
            f"{estimate_now.measured_bytes / MiB:.1f} MiB ({estimate_now.measured_source}), "
            f"{estimate_now.error_pct:+.1f} %",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
