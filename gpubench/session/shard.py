"""Sharding a collection over machines: ``--gpubench-shard INDEX/COUNT`` (INDEX from 1).

Every machine collects the same tests; each keeps its own slice and deselects the rest,
so a SLURM job array or a CI matrix runs one suite on many nodes and ``gpubench merge``
joins their run directories into one run.

The slice depends on the node ids alone, never on collection order (pytest-randomly
shuffles it): the gpubench cases' ids, sorted, are dealt out in turn, so the slices
differ in size by one case at most; other tests are dealt out the same way, apart, so
every test runs on exactly one shard. A go/no-go test judges the whole of its matrix,
which no single shard runs: it is deselected on every shard (the merged report shows
each case).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpubench.storage import SHARD_FLAG, ShardRecord


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` (1..count) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, flag: str = SHARD_FLAG) -> Shard:
    """``I/N`` with 1 <= I <= N; ValueError naming the value and the valid form."""
    index_text, slash, count_text = text.strip().partition("/")
    form = (
        f"expected INDEX/COUNT with INDEX from 1 to COUNT, e.g. 1/3 "
        f"(SLURM: --array=1-COUNT and {flag} $SLURM_ARRAY_TASK_ID/COUNT; "
        "a 0-based index: add 1)"
    )
    if not slash or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError(f"{flag}={text!r}: {form}")
    index, count = int(index_text), int(count_text)
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{flag}={text!r}: {form}")
    return Shard(index, count)


def collection_digest(node_ids: Iterable[str]) -> str:
    """A digest of a collection's gpubench cases, whatever their order: sha256 of the
    sorted node ids, one a line."""
    text = "\n".join(sorted(set(node_ids)))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def dealt(node_ids: Iterable[str], shard: Shard) -> set[str]:
    """The ids shard ``shard`` gets when the sorted ids are dealt out in turn."""
    ordered = sorted(set(node_ids))
    return set(ordered[shard.index - 1 :: shard.count])


@dataclass(frozen=True)
class Selection:
    kept: set[str]  # node ids this shard runs
    record: ShardRecord  # for invocation.json


def select(
    shard: Shard,
    cases: Sequence[str],
    others: Sequence[str] = (),
    whole_matrix: Sequence[str] = (),
    skipped: Iterable[str] = (),
) -> Selection:
    """What shard ``shard`` keeps of a collection: its deal of the gpubench ``cases`` and,
    dealt apart, of the ``others``; none of the ``whole_matrix`` tests (go/no-go). The
    record holds the digest and size of every case collected, and the cases of this slice
    that are to run (``skipped``: those skipped at collection, left out)."""
    mine = dealt(cases, shard)
    kept = mine | dealt(others, shard)
    kept -= set(whole_matrix)
    skipped = set(skipped)
    record = ShardRecord(
        index=shard.index,
        count=shard.count,
        collection_digest=collection_digest(cases),
        collection_size=len(set(cases)),
        cases=tuple(sorted(mine - skipped)),
    )
    return Selection(kept, record)
