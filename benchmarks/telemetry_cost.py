"""What one telemetry row costs: Telemetry.sample() timed in a process like the worker's.

    python benchmarks/telemetry_cost.py [--samples 2000] [--children 0 4] [--nvml]

The process imports torch and runs a matmul (torch's intra-op threads started, as in a
worker), then times ``samples`` rows with ``children`` idle child processes in its tree
(a data loader's workers); ``--nvml`` adds the GPU readings of device 0 (needs a GPU and
pynvml). Prints the wall and CPU time of one row and the share of one core the sampler
takes at gpubench's interval (docs/diagnostics.md, "Telemetry and energy").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from gpubench.worker.trackers.telemetry import TELEMETRY_INTERVAL_S, Telemetry


def nvml_handle() -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetHandleByIndex(0)


def row_cost(samples: int, children: int, handle: Any) -> dict[str, float]:
    """Seconds of wall and of this thread's CPU per row, with ``children`` in the tree."""
    kids = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        for _ in range(children)
    ]
    try:
        time.sleep(0.5)  # the children's interpreters are up
        telemetry = Telemetry(os.getpid(), nvml_handle=handle)
        telemetry.start()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(samples):
            telemetry.sample()
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        telemetry.stop()
    finally:
        for kid in kids:
            kid.kill()
            kid.wait()
    return {"wall_s": wall / samples, "cpu_s": cpu / samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--children", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--nvml", action="store_true", help="add device 0's NVML readings")
    args = parser.parse_args()
    import torch

    torch.randn(256, 256) @ torch.randn(256, 256)  # torch's threads, as in a worker
    handle = nvml_handle() if args.nvml else None
    figures = []
    for children in args.children:
        cost = row_cost(args.samples, children, handle)
        share = cost["cpu_s"] / TELEMETRY_INTERVAL_S
        figures.append({"children": children, **cost, "core_share": share})
        print(
            f"tree of {1 + children}: {cost['wall_s'] * 1e6:.0f} us wall, "
            f"{cost['cpu_s'] * 1e6:.0f} us CPU a row; {share:.3%} of one core at one row "
            f"every {TELEMETRY_INTERVAL_S} s"
        )
    print(json.dumps({"nvml": args.nvml, "interval_s": TELEMETRY_INTERVAL_S, "rows": figures}))


if __name__ == "__main__":
    main()
