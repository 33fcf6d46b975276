"""CPU time one case's guardian costs: start, wait for ``released``, exit.

    python benchmarks/guardian_cost.py [--repeats 20]

Runs ``python -I -S gpubench/runner/guardian_main.py`` as the runner does, releases it at
once, and reads the child's user + system CPU from ``RUSAGE_CHILDREN``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

GUARDIAN = Path(__file__).resolve().parent.parent / "gpubench" / "runner" / "guardian_main.py"


def cpu_ms_of_one_guardian() -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    guardian = subprocess.Popen(
        [sys.executable, "-I", "-S", str(GUARDIAN), "token", "/nonexistent-workdir"],
        stdin=subprocess.PIPE,
        text=True,
    )
    assert guardian.stdin is not None
    guardian.stdin.write("released\n")
    guardian.stdin.close()
    guardian.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return 1000 * used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    costs = [cpu_ms_of_one_guardian() for _ in range(args.repeats)]
    print(
        f"guardian CPU per case: median {statistics.median(costs):.1f} ms "
        f"(range {min(costs):.1f} to {max(costs):.1f} ms, {args.repeats} runs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
