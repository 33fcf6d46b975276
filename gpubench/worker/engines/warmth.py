"""A cold run's other mark: torch.compile filling its caches in this run.

torch.compile keeps what it compiled (inductor's FX graphs, AOT autograd's graphs, the
kernels they call) in a cache on disk (``TORCHINDUCTOR_CACHE_DIR``); the first run of a
case compiles and writes it, every later one reads it back. On a 2-vCPU VM a small MLP
compiled in 26 s with an empty cache and in 3.7 s from it (docs/baselines.md, "Cold
start"), and the compile's memory stays in the worker's high-water mark. Its counters
(``torch._dynamo.utils.counters``) say how many graphs missed the cache: a run with
misses filled it. DeepSpeed's ops, the other thing a run builds, are found where they
are built (:func:`gpubench.worker.engines.deepspeed_setup.load_ops`).
"""

from __future__ import annotations

import sys

# (counter group, counter) that count a graph compiled because it was not in the cache
CACHE_MISS_COUNTERS = (
    ("inductor", "fxgraph_cache_miss"),
    ("aot_autograd", "autograd_cache_miss"),
)


def compile_cache_misses() -> dict[str, int]:
    """torch.compile's cache misses so far in this process; {} when it was never imported
    (nothing compiled: reading the counters must not import dynamo)."""
    if "torch._dynamo" not in sys.modules:
        return {}
    from torch._dynamo.utils import counters

    return {f"{group}.{name}": int(counters[group][name]) for group, name in CACHE_MISS_COUNTERS}


def compile_cold_start(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """What torch.compile filled between two readings, said with the cache's folder."""
    missed = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    graphs = missed.get("inductor.fxgraph_cache_miss", 0)
    aot = missed.get("aot_autograd.autograd_cache_miss", 0)
    if graphs <= 0 and aot <= 0:
        return []
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        where = f" in {cache_dir()}"
    except Exception:  # a newer torch moved it: the counts still say enough
        where = ""
    return [
        f"torch.compile compiled {graphs} inductor graph(s) and {aot} AOT autograd graph(s) "
        f"not in its cache{where} yet"
    ]
