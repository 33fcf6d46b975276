"""The GPU validation kit's parts: the plan, its pytest suite, the checks, the bare loop,
the harness ratio and the kernel profile. The command is ``python -m gpubench.validation``
(:mod:`gpubench.validation.kit`)."""
