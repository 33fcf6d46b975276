"""Which cases a report ranks against each other, and which of their statistics it shows:
decided here, once, for the verdict, the advice, the matrix, the charts and the terminal.

**Comparable**: the same *workload* (:class:`Workload`): the same model (name, config
overrides, vocabulary), sequence length and data. Batch size, precision, engine and
the other flags are what a run chooses between; tokens/s of another model or sequence
length is not a faster setting of this one, and a loss on another stream is not
comparable. A run that mixes workloads is ranked per workload.

**Trustworthy** (:func:`distrust` finds nothing): at least :data:`MIN_MEASURED_STEPS`
measured steps, learnable data whose loss fell, and no implausible figure. On random
data the loss cannot fall, so nothing shows that the model trains (the "970 tok/s"
that was a tiny model loaded by mistake looked healthy too): such a case is measured
and shown, never recommended.

**A statistic from too few steps** (:func:`has_spread`): below :data:`MIN_MEASURED_STEPS`
the spread (CV, and p10/p90, which are then interpolated between the lowest and the
highest steps) is not shown, and "noisy" is not judged (:attr:`Stats.noisy
<gpubench.contracts.result.Stats.noisy>`, which all of them read, holds the same rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpubench.contracts.plausibility import implausible_reasons
from gpubench.contracts.result import MIN_MEASURED_STEPS, Result
from gpubench.report import figures


@dataclass(frozen=True)
class Workload:
    """What a case trains, as opposed to how: cases of one workload are ranked together."""

    model: str
    seq_len: int
    data: str
    model_config: tuple[tuple[str, Any], ...] = ()
    vocab_size: int | None = None

    @property
    def label(self) -> str:
        """``gpt-mini, 128 tokens, learnable data`` (config overrides and vocabulary named)."""
        model = self.model
        extra = [f"{k}={v}" for k, v in self.model_config]
        if self.vocab_size is not None:
            extra.append(f"vocab {self.vocab_size}")
        if extra:
            model += f" ({', '.join(extra)})"
        return f"{model}, {self.seq_len} tokens, {self.data} data"


def workload(result: Result) -> Workload:
    case = result.case
    return Workload(case.model, case.seq_len, case.data, case.model_config, case.vocab_size)


def measured_steps(result: Result) -> int:
    """The steps the case's statistics are taken over."""
    step = result.metrics.step_time_s
    return step.n if step is not None else result.metrics.measured_steps


def has_spread(result: Result) -> bool:
    """Whether the case measured enough steps for a spread (CV, p10/p90) to be shown."""
    step = result.metrics.step_time_s
    return step is not None and step.n >= MIN_MEASURED_STEPS


def few_steps(result: Result) -> str:
    """Why a spread is not shown: ``"2 measured steps, fewer than 5"``."""
    return f"{measured_steps(result)} measured steps, fewer than {MIN_MEASURED_STEPS}"


def distrust(result: Result) -> list[str]:
    """Why a case that trained cannot be ranked, each reason with its figures; empty: it can."""
    reasons = []
    if not has_spread(result):
        reasons.append(f"too few steps: {few_steps(result)}")
    m = result.metrics
    if result.case.data != "learnable":
        reasons.append(f"{result.case.data} data: no falling loss can show that it trains")
    elif not result.loss_decreased:
        reasons.append(f"loss did not fall: {figures.loss_change(m.loss_start, m.loss_end)}")
    implausible = result.implausible or implausible_reasons(result)
    if implausible:
        reasons.append("implausible: " + " ".join(implausible))
    return reasons
