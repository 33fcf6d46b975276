"""The validation kit's checks of training correctness (issue 20): fp16's loss scale recorded
step by step, pure bf16 training beside autocast bf16 with both held-out losses stated, and
the readiness cell's resume check passing in a fresh worker (on CUDA within its relative
tolerance: the comparison it records says which).

On the ``cpu`` profile the fp16 check skips (fp16 needs CUDA); the other two run at the
smoke scale too, so they cannot rot between GPU sessions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gpubench.validation import plan as P
from gpubench.validation.checks import FAIL, PASS, SKIP, Check, Results, _missing, _trained


def fp16_loss_scale(results: Results) -> Check:
    """The fp16 case recorded its GradScaler's scale after every step, and its skipped steps."""
    name = "fp16-loss-scale"
    result = results.get(P.FP16)
    if result is None:
        return _missing(name, P.FP16)
    m, scales = result.metrics, result.series.loss_scale
    figure = {
        "loss_scale_min": m.loss_scale_min,
        "loss_scale_final": m.loss_scale_final,
        "skipped_steps": m.skipped_steps,
        "steps": len(result.series.loss),
    }
    wrong = []
    if len(scales) != len(result.series.loss):
        wrong.append(f"{len(scales)} loss scales for {len(result.series.loss)} steps")
    if not (m.loss_scale_final and math.isfinite(m.loss_scale_final) and m.loss_scale_final > 0):
        wrong.append(f"final loss scale {m.loss_scale_final!r}")
    if m.skipped_steps is None:
        wrong.append("no skipped-step count")
    if wrong:
        return Check(name, FAIL, "; ".join(wrong), figure)
    return Check(
        name,
        PASS,
        f"loss scale {m.loss_scale_min:g} to {m.loss_scale_final:g} at the end over "
        f"{len(scales)} steps, {m.skipped_steps} skipped",
        figure,
    )


def bf16_pure(results: Results) -> Check:
    """Pure bf16 trains, and its held-out loss is stated against autocast bf16's (the cost
    the quality check shows; not judged against 2 % here: a kit's run is short)."""
    name = "bf16-pure"
    pure, autocast = results.get(P.BF16_PURE), results.get(P.BF16)
    if pure is None:
        return _missing(name, P.BF16_PURE)
    if autocast is None:
        return _missing(name, P.BF16)
    problem = _trained(pure)
    losses = (pure.metrics.eval_loss, autocast.metrics.eval_loss)
    figure = {"eval_loss_bf16_pure": losses[0], "eval_loss_bf16": losses[1]}
    if problem:
        return Check(name, FAIL, f"pure bf16: {problem}", figure)
    if not all(loss is not None and math.isfinite(loss) for loss in losses):
        return Check(name, FAIL, f"a held-out loss is missing: {figure}", figure)
    assert losses[0] is not None and losses[1] is not None
    diff = (losses[0] - losses[1]) / losses[1]
    figure["relative_diff"] = diff
    return Check(
        name,
        PASS,
        f"pure bf16 trains; held-out loss {losses[0]:.4f} against autocast bf16's "
        f"{losses[1]:.4f} ({100 * diff:+.2f} %)",
        figure,
    )


def resume_check(results: Results) -> Check:
    """The readiness cell's checkpoint resumed in a fresh worker gave the run's losses."""
    name = "resume-check"
    result = results.get(P.RESUME)
    if result is None:
        return _missing(name, P.RESUME)
    check = result.resume
    if check is None:
        return Check(name, FAIL, f"no resume check recorded: {result.describe()}")
    figure = {
        "verdict": check.verdict,
        "comparison": check.comparison,
        "tolerance": check.tolerance,
        "max_relative_diff": check.max_relative_diff,
        "save_s": check.save_s,
        "load_s": check.load_s,
        "checkpoint_bytes": check.checkpoint_bytes,
    }
    if check.verdict != "passed":
        why = "; ".join(check.differences) or check.note
        return Check(name, FAIL, f"resume check {check.verdict}: {why}", figure)
    return Check(
        name,
        PASS,
        f"resumed after step {check.save_step}, {len(check.resumed_loss)} steps "
        f"{check.comparison}, largest difference {check.max_relative_diff or 0:.2e}; save "
        f"{check.save_s or 0:.2f} s, load {check.load_s or 0:.2f} s, "
        f"{(check.checkpoint_bytes or 0) / 1e9:.2f} GB",
        figure,
    )


CHECKS = (
    ("fp16-loss-scale", fp16_loss_scale),
    ("bf16-pure", bf16_pure),
    ("resume-check", resume_check),
)


def training_checks(results: Results, skipped: Mapping[str, str]) -> list[Check]:
    """The three checks, in the order the kit reports them; a skipped one says why."""
    return [
        Check(name, SKIP, skipped[name]) if name in skipped else check(results)
        for name, check in CHECKS
    ]
