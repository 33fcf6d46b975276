"""The child side of the worker protocol: ``python -m gpubench.worker --job J --result R
--progress P``.

Reads ``job.json`` (``{"case", "profile", "nodeid", "run_id"}``), runs it
(:func:`gpubench.worker.job.run_job`) and writes ``result.json`` atomically.
Exit codes (docs/architecture.md): 0 when a Result was written (``ok``,
``over_capacity``, ``oom``, ``diverged``), 1 after an unexpected exception (a
``crashed`` Result with the traceback is still written when the job could be
read). Under torchrun every rank writes its Result (rank 0 to ``--result``,
rank N beside it: :func:`~gpubench.contracts.protocol.rank_result_path`), and
a rank whose case did not train to the end exits ``EXIT_RANK_FAILED``: torchrun
then stops the other ranks at once instead of leaving them blocked in a
collective until the case's time limit (:func:`gpubench.runner.classify.merge_rank_results`
finds the rank that failed first, and :mod:`gpubench.runner.ranks` makes each rank's
own figures of them). The worker dies with its parent, the runner
or torchrun (:mod:`gpubench.worker.tether`).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from gpubench.contracts.protocol import ProgressWriter, rank_result_path, write_json_atomic
from gpubench.worker.engines.distributed import Ranks
from gpubench.worker.job import run_job
from gpubench.worker.tether import tether_to_parent

EXIT_OK = 0  # a Result was written, whatever its status
EXIT_ERROR = 1  # an unexpected exception; a crashed Result was written if possible
EXIT_RANK_FAILED = 3  # torchrun, several ranks: this rank's Result is not ok; stop the rest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpubench.worker", description="Run one gpubench case (child side)."
    )
    parser.add_argument("--job", required=True, type=Path, help="job.json to read")
    parser.add_argument("--result", required=True, type=Path, help="result.json to write")
    parser.add_argument("--progress", type=Path, default=None, help="progress.jsonl to append")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    tether_to_parent()  # a worker never outlives the runner (or torchrun) that started it
    args = parse_args(argv)
    ranks = Ranks.from_env()
    progress = ProgressWriter(args.progress if ranks.rank == 0 else None)
    try:
        progress.emit("starting")
        job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        result = run_job(job, progress)
        write_json_atomic(rank_result_path(args.result, ranks.rank), result.to_dict())
        if result.status == "crashed":
            if result.error is not None:
                print(result.error.traceback, file=sys.stderr, end="")
            return EXIT_ERROR
        if ranks.distributed and not result.ran:
            if result.error is not None:
                print(
                    f"rank {ranks.rank}: {result.status}: {result.error.message}", file=sys.stderr
                )
            return EXIT_RANK_FAILED
        return EXIT_OK
    except Exception:  # the job itself is unreadable: no Result can be built
        traceback.print_exc()
        return EXIT_ERROR
    finally:
        progress.close()
