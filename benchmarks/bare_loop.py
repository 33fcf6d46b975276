"""The bare, hand-written training loop gpubench is compared against (CPU here).

The loop itself lives in the package (:mod:`gpubench.validation.bare_loop`),
where the GPU validation kit uses it on CUDA; this script keeps the
benchmarks' command line:

    python benchmarks/bare_loop.py '{"model": "gpt-mini", "batch_size": 8, ...}'

prints one JSON line: median tokens/s over the measured steps and the seconds
spent inside them (warm-up steps excluded).
"""

from __future__ import annotations

from gpubench.validation.bare_loop import bare_step, main, measured_step_times

__all__ = ["bare_step", "measured_step_times"]

if __name__ == "__main__":
    raise SystemExit(main())
