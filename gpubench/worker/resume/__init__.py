"""The resume check's worker side (``case.resume_check``; the parent's side is
:mod:`gpubench.runner.resume`).

The case's own run saves a checkpoint between two steps (:mod:`.save`), outside the step
timer; a fresh worker loads it, checks every restored part against what the checkpoint
holds (:mod:`.state`) and trains the steps that followed (:mod:`.resumed`). How each
engine saves and loads: :mod:`.torch_checkpoint` (``torch.save``, read back with
``weights_only=True``) and :mod:`.deepspeed_checkpoint` (DeepSpeed's own
``save_checkpoint``/``load_checkpoint``). A checkpoint directory outside the run's
directory is refused (:mod:`.paths`).
"""
