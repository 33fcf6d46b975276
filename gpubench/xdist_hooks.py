"""The pytest-xdist controller's side of a run (``pytest -n N``): registered by the plugin
when xdist is active.

Every worker gets the controller's run id (and its session token, which claims the run
directory: :class:`~gpubench.storage.RunStore`), so all of them append to one
``results.jsonl``; each finished case a worker reports back (its test report carries
the case's properties: :mod:`gpubench.session.properties`) is counted for the
controller's progress lines. Workers work out their own GPUs from their ``workerid`` and
``workercount`` (:mod:`gpubench.session.devices`); under ``--gpubench-shard`` each worker
sends back the record of the slice it collected (its ``workeroutput``), which the
controller writes into invocation.json (the controller collects nothing itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpubench.session import properties
from gpubench.storage import ShardRecord

if TYPE_CHECKING:
    import pytest

    from gpubench.session.bench import BenchSession

RUN_ID_KEY = "gpubench_run_id"  # in each worker's workerinput
SESSION_TOKEN_KEY = "gpubench_session"  # the session's token, claimed in the run dir
SHARD_RECORD_KEY = "gpubench_shard"  # in each worker's workeroutput: its ShardRecord


class XdistHooks:
    def __init__(self, run_id: str, session: BenchSession) -> None:
        self.run_id = run_id
        self.session = session
        self.workers = 0

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[RUN_ID_KEY] = self.run_id
        node.workerinput[SESSION_TOKEN_KEY] = self.session.options.session
        self.workers += 1

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker's record of the shard it collected (every worker collects the same)."""
        record = getattr(node, "workeroutput", {}).get(SHARD_RECORD_KEY)
        if record is not None and self.session.shard_record is None:
            self.session.shard_record = ShardRecord.from_dict(record)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        progress = self.session.xdist_progress
        if progress is None or report.when != "teardown":
            return  # once per test; the fixture's properties are on every phase's report
        props: dict[str, Any] = dict(report.user_properties)
        if properties.STATUS not in props:
            return  # not a gpubench case, or skipped before it ran
        progress.clock.parallel = max(1, self.workers)
        progress.case_reported(
            str(props.get(properties.SUMMARY, report.nodeid)),
            float(props.get(properties.DURATION) or 0.0),
            total=int(props.get(properties.CASES_TOTAL) or 0),
            nodeid=report.nodeid,
        )
