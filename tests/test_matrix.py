from __future__ import annotations

import subprocess
import sys

import pytest

from gpubench import CaseError, matrix, single_case


def test_matrix_is_the_product_of_list_settings_in_declaration_order() -> None:
    m = matrix(
        model=["gpt2-small", "gpt2-medium"],
        precision=["fp32", "bf16"],
        grad_ckpt=[False, True],
        seq_len=512,
    )
    assert m.ids == [
        "gpt2-small-fp32-s512",
        "gpt2-small-fp32-ckpt-s512",
        "gpt2-small-bf16-s512",
        "gpt2-small-bf16-ckpt-s512",
        "gpt2-medium-fp32-s512",
        "gpt2-medium-fp32-ckpt-s512",
        "gpt2-medium-bf16-s512",
        "gpt2-medium-bf16-ckpt-s512",
    ]
    assert all(case.seq_len == 512 for case in m)


def test_matrices_add_and_filter() -> None:
    ladder = matrix(model=["gpt2-small", "gpt2-xl"], precision=["fp32", "bf16"])
    kept = ladder.where(lambda c: not (c.model == "gpt2-xl" and c.flags.precision == "fp32"))
    assert len(kept) == 3
    gpu = single_case(model="gpt-tiny", requires_gpu=True)
    both = kept + gpu
    assert len(both) == 4
    # only the GPU-declared case skips on cpu: a sum must not drag CPU cases along
    assert [both.requires_gpu(c) for c in both] == [False, False, False, True]
    assert not kept.where(lambda c: True).gpu_only


def test_identical_cases_collapse_but_clashing_ids_are_refused() -> None:
    assert len(matrix(model="gpt-tiny", precision=["bf16", "bf16"])) == 1
    with pytest.raises(CaseError, match="share the id 'same'"):
        matrix(model="gpt-tiny", precision=["fp32", "bf16"], name="same")


def test_bad_axis_values_fail_at_declaration() -> None:
    with pytest.raises(CaseError, match="precision='fp8'"):
        matrix(model="gpt-tiny", precision=["bf16", "fp8"])
    with pytest.raises(CaseError, match="is empty"):
        matrix(model="gpt-tiny", precision=[])
    with pytest.raises(CaseError, match="is a list"):
        single_case(model="gpt-tiny", precision=["bf16"])


def test_importing_gpubench_imports_neither_pytest_nor_torch() -> None:
    code = "import gpubench, sys; print('pytest' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
