"""The models a Case may name, without torch: the built-in sizes with their declared
parameter counts (:mod:`~gpubench.contracts.catalog.sizes`), the built-in GPT's
configuration (:mod:`~gpubench.contracts.catalog.gpt_config`) and the forms of
``Case.model`` (:mod:`~gpubench.contracts.catalog.spec`). The worker builds them
(:mod:`gpubench.worker.models`)."""
