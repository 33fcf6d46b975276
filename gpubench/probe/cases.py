"""The cases a probe runs: the probed case at one batch size, short (a search probe) or as
declared (a point of the tokens/s curve), each with its batch size in its id."""

from __future__ import annotations

from gpubench.contracts.case import Case

# A probe trains one warm-up step and two measured ones (a Case measures at least two).
# The first step allocates activations and gradients and, at its optimizer step, AdamW's
# two states; the second and third run forward and backward with all of that resident,
# which is the steady state every later step repeats: the peak a longer run reaches too.
PROBE_WARMUP = 1
PROBE_STEPS = 2


def batch_case(case: Case, batch: int) -> Case:
    """``case`` at ``batch``, with the batch size in its id: a generated id leaves out the
    default batch (8), and a given name has none, so those get ``-b<batch>``."""
    resized = case.replace(batch_size=batch)
    if f"b{batch}" in resized.id.split("-"):
        return resized
    return resized.replace(name=f"{resized.id}-b{batch}")


def probe_case(case: Case, batch: int, steps: int | None, warmup: int) -> Case:
    """The short run that answers "does ``batch`` fit": ``warmup`` + ``steps`` steps of
    ``case`` (``steps=None``: the case as declared, so the curve can reuse it)."""
    if steps is None:
        return batch_case(case, batch)
    short = case.replace(steps=steps, warmup=warmup)
    if case.name:  # a generated id says n<steps>-warm<warmup>; a given name says "probe"
        short = short.replace(name=f"{case.name}-probe")
    return batch_case(short, batch)
