"""One GPU (or k) per pytest-xdist worker, over a fake device list: which GPUs each
worker holds, what a case's worker is pinned to, what is skipped and what is refused."""

from __future__ import annotations

import pytest

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import parse_profile_list
from gpubench.declaration import Matrix
from gpubench.session.collection import case_params
from gpubench.session.devices import (
    DeviceError,
    DevicePlan,
    XdistWorker,
    visible_devices,
    worker_devices,
    worker_index,
)

CPU, GPU = parse_profile_list("cpu,rtx5080")
CASE = Case(model="gpt-tiny", steps=3)


def no_nvml() -> int:
    raise AssertionError("CUDA_VISIBLE_DEVICES is set: NVML must not be asked")


def test_the_parent_list_wins_and_stops_where_cuda_stops() -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "3,1, 2"}, no_nvml) == ("3", "1", "2")
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}, no_nvml) == (
        "GPU-aa",
        "GPU-bb",
    )
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, no_nvml) == ("0",)
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}, no_nvml) == ()
    assert visible_devices({}, lambda: 4) == ("0", "1", "2", "3")
    assert visible_devices({}, lambda: 0) == ()


@pytest.mark.parametrize(
    ("visible", "workers", "requested", "slices"),
    [
        (("0", "1", "2", "3"), 2, None, [("0", "1"), ("2", "3")]),  # evenly by default
        (("0", "1", "2", "3"), 4, None, [("0",), ("1",), ("2",), ("3",)]),
        (("0", "1", "2", "3", "4"), 2, None, [("0", "1"), ("2", "3")]),  # the odd one left
        (("0", "1", "2", "3"), 2, 1, [("0",), ("1",)]),
        (("7", "5"), 1, None, [("7", "5")]),  # the parent's own order and names
    ],
)
def test_each_worker_holds_its_own_slice(
    visible: tuple[str, ...], workers: int, requested: int | None, slices: list[tuple[str, ...]]
) -> None:
    got = [worker_devices(visible, i, workers, requested) for i in range(workers)]
    assert got == slices
    flat = [d for s in got for d in s]
    assert len(flat) == len(set(flat))  # no GPU in two workers


@pytest.mark.parametrize(
    ("visible", "workers", "requested", "figures"),
    [
        (("0",), 2, None, "-n 2 workers x 1 GPU(s) each needs 2 GPUs, and 1 are visible (0)"),
        (("0", "1", "2"), 2, 2, "-n 2 workers x 2 GPU(s) each needs 4 GPUs, and 3 are visible"),
    ],
)
def test_too_few_gpus_is_an_error_with_the_figures(
    visible: tuple[str, ...], workers: int, requested: int | None, figures: str
) -> None:
    with pytest.raises(DeviceError, match="run fewer workers") as error:
        worker_devices(visible, 0, workers, requested)
    assert figures in str(error.value)


def test_worker_ids_are_xdists() -> None:
    assert worker_index("gw0") == 0 and worker_index("gw12") == 12
    with pytest.raises(DeviceError, match="'node-a' is not gw<N>"):
        worker_index("node-a")


def plan(worker: str, workers: int, visible: str, requested: int | None = None) -> DevicePlan:
    return DevicePlan(
        XdistWorker(worker, workers), requested, {"CUDA_VISIBLE_DEVICES": visible}, no_nvml
    )


def test_a_case_gets_nproc_of_its_workers_gpus_and_a_bigger_one_skips() -> None:
    second = plan("gw1", 2, "0,1,2,3")
    assert second.held == ("2", "3")
    assert second.env(CASE, GPU) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert second.env(CASE.replace(nproc=2), GPU) == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert second.skip_reason(CASE.replace(nproc=2), GPU) is None
    reason = second.skip_reason(CASE.replace(nproc=4), GPU)
    assert reason is not None
    assert "needs 4 GPUs (nproc=4) and xdist worker gw1 holds 2" in reason


def test_nothing_is_pinned_on_cpu_outside_xdist_without_gpus_or_when_asked() -> None:
    assert plan("gw0", 2, "0,1").env(CASE, CPU) == {}
    assert plan("gw0", 2, "0,1").skip_reason(CASE.replace(nproc=8), CPU) is None
    assert DevicePlan(None, None, {"CUDA_VISIBLE_DEVICES": "0"}, no_nvml).env(CASE, GPU) == {}
    assert DevicePlan(XdistWorker("gw0", 2), None, {}, lambda: 0).env(CASE, GPU) == {}
    assert plan("gw0", 2, "0,1", requested=0).env(CASE, GPU) == {}


def test_without_xdist_a_case_needing_more_gpus_than_the_machine_shows_skips() -> None:
    one_gpu = DevicePlan(None, None, {"CUDA_VISIBLE_DEVICES": "0"}, no_nvml)
    assert one_gpu.skip_reason(CASE, GPU) is None
    reason = one_gpu.skip_reason(CASE.replace(nproc=2), GPU)
    assert reason is not None and "needs 2 GPUs (nproc=2) and this machine shows 1" in reason
    assert one_gpu.skip_reason(CASE.replace(nproc=2), CPU) is None  # gloo ranks: no GPU
    no_gpu = DevicePlan(None, None, {}, lambda: 0)  # the worker refuses a GPU profile there
    assert no_gpu.skip_reason(CASE.replace(nproc=2), GPU) is None


def test_the_device_list_is_read_only_when_a_gpu_case_asks() -> None:
    asked = []

    def count() -> int:
        asked.append(1)
        return 2

    lazy = DevicePlan(XdistWorker("gw0", 2), None, {}, count)
    assert lazy.env(CASE, CPU) == {} and not asked
    assert lazy.env(CASE, GPU) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert lazy.env(CASE, GPU) == {"CUDA_VISIBLE_DEVICES": "0"} and asked == [1]


def test_collection_skips_a_case_bigger_than_the_worker_and_refuses_too_few_gpus() -> None:
    matrix = Matrix((CASE, CASE.replace(nproc=2)))
    params = case_params(matrix, [GPU], estimate_only=False, devices=plan("gw0", 2, "0,1"))
    assert [p.skip for p in params][0] is None
    assert "needs 2 GPUs (nproc=2) and xdist worker gw0 holds 1" in str(params[1].skip)
    # predicted, not run: no GPU is held, nothing skips
    assert all(
        p.skip is None
        for p in case_params(matrix, [GPU], estimate_only=True, devices=plan("gw0", 2, "0,1"))
    )
    with pytest.raises(DeviceError, match="needs 3 GPUs, and 2 are visible"):
        case_params(matrix, [GPU], estimate_only=False, devices=plan("gw0", 3, "0,1"))
