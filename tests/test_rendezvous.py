"""torchrun's rendezvous options, passed through: the argv each case's torchrun gets, the
same id on every node for one case and another for the next, and a multi-node case
without an endpoint refused before it runs. Two nodes are not started here."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpubench import options
from gpubench.contracts.case import Case, CaseError
from gpubench.contracts.profiles import parse_profile_list
from gpubench.contracts.protocol import WorkerPaths
from gpubench.declaration import Matrix
from gpubench.runner.launchers import (
    ProcessLauncher,
    Rendezvous,
    RendezvousError,
    TorchrunLauncher,
    case_key,
    launcher_for,
)
from gpubench.session.collection import case_params

CASE = Case(model="gpt-tiny", steps=3)
PATHS = WorkerPaths(Path("/w"))
(CPU,) = parse_profile_list("cpu")


def torchrun_options(argv: list[str]) -> list[str]:
    """What comes between ``torch.distributed.run`` and ``-m gpubench.worker``."""
    start = argv.index("torch.distributed.run") + 1
    return argv[start : argv.index("gpubench.worker") - 1]


def test_one_machine_stays_standalone() -> None:
    launcher = launcher_for(CASE.replace(nproc=2))
    assert torchrun_options(launcher.argv(PATHS)) == ["--standalone", "--nproc-per-node", "2"]


def test_a_multi_node_case_passes_torchruns_rendezvous_options() -> None:
    rdzv = Rendezvous("node001:29400")
    case = CASE.replace(nproc=4, nnodes=2)
    launcher = launcher_for(case, rdzv, profile="h100-sxm")
    rdzv_id = rdzv.id_for(case_key(case, "h100-sxm"))
    assert torchrun_options(launcher.argv(PATHS)) == [
        "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node001:29400",
        "--rdzv-id", rdzv_id, "--nproc-per-node", "4",
    ]  # fmt: skip
    assert rdzv_id.startswith("gpubench-") and len(rdzv_id) == len("gpubench-") + 16


def test_the_id_is_the_same_on_every_node_and_new_for_the_next_case() -> None:
    case = CASE.replace(nproc=2, nnodes=2)
    here, there = Rendezvous("n1:29400"), Rendezvous("n1:29400")
    assert here.id_for(case_key(case, "a100-80gb")) == there.id_for(case_key(case, "a100-80gb"))
    others = {
        here.id_for(case_key(case, "a100-80gb", repeat=1)),
        here.id_for(case_key(case.replace(seed=2), "a100-80gb")),
        here.id_for(case_key(case, "h100-sxm")),
        here.id_for(case_key(case, "a100-80gb")),
    }
    assert len(others) == 4
    job = Rendezvous("n1:29400", "etcd-v2", job_id="4711")
    launcher = launcher_for(case, job, profile="a100-80gb")
    assert isinstance(launcher, TorchrunLauncher)
    argv = torchrun_options(launcher.argv(PATHS))
    assert argv[argv.index("--rdzv-backend") + 1] == "etcd-v2"
    assert argv[argv.index("--rdzv-id") + 1].startswith("4711-")


def test_a_single_process_case_stays_a_process_and_a_torchrun_case_meets_at_the_endpoint() -> None:
    rdzv = Rendezvous("n1:29400")
    assert launcher_for(CASE, rdzv) == ProcessLauncher()
    argv = torchrun_options(launcher_for(CASE.replace(nproc=2), rdzv).argv(PATHS))
    assert argv[:2] == ["--nnodes", "1"] and "--standalone" not in argv
    # one process on each of two machines is torchrun too
    assert isinstance(launcher_for(CASE.replace(nnodes=2), rdzv), TorchrunLauncher)


def test_nnodes_without_an_endpoint_is_refused() -> None:
    with pytest.raises(RendezvousError, match="--gpubench-rdzv-endpoint"):
        launcher_for(CASE.replace(nproc=2, nnodes=2))
    matrix = Matrix((CASE.replace(nnodes=2),))
    with pytest.raises(CaseError, match=r"nnodes=2 spans 2 machines.*--gpubench-rdzv-endpoint"):
        case_params(matrix, [CPU], estimate_only=False)
    assert case_params(matrix, [CPU], estimate_only=False, rendezvous=Rendezvous("n:1"))
    assert case_params(matrix, [CPU], estimate_only=True)  # predicted: nothing meets


@pytest.mark.parametrize("good", ["node001:29400", "10.0.0.1:1", "[fd00::1]:29400"])
def test_endpoints(good: str) -> None:
    assert options.endpoint(good, "--gpubench-rdzv-endpoint") == good


@pytest.mark.parametrize("bad", ["node001", ":29400", "node001:0", "node001:70000", "n:x"])
def test_bad_endpoints_name_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match=f"--gpubench-rdzv-endpoint={bad!r}: expected HOST:PORT"):
        options.endpoint(bad, "--gpubench-rdzv-endpoint")


def test_the_options_reach_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_two_nodes="""
        import gpubench

        @gpubench.single_case(model="gpt-tiny", steps=3, nproc=2, nnodes=2)
        def test_big(gpubench_result):
            pass
        """
    )
    refused = pytester.runpytest("--collect-only", "--gpu-profile", "cpu")
    refused.stdout.fnmatch_lines(["*nnodes=2 spans 2 machines*--gpubench-rdzv-endpoint*"])
    assert refused.ret != 0
    given = pytester.runpytest(
        "--collect-only", "-q", "--gpu-profile", "cpu", "--gpubench-rdzv-endpoint",
        "node001:29400", "--gpubench-rdzv-id", "4711",
    )  # fmt: skip
    given.stdout.fnmatch_lines(["test_two_nodes.py::test_big*", "1 test collected*"])
    lonely = pytester.runpytest("--collect-only", "--gpubench-rdzv-id", "4711")
    lonely.stderr.fnmatch_lines(["*--gpubench-rdzv-id without --gpubench-rdzv-endpoint*"])
