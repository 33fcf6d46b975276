"""The names of the parts a memory estimate is broken into: shared by the formulas
(:mod:`gpubench.estimate.analytical`), the traced step (:mod:`gpubench.estimate.traced`),
``gpubench estimate`` and the reports, so that the two methods can be compared part by part.

Device parts are what the card must hold; host parts are what the host must hold beyond
the runtime (an offloaded optimizer lives in pinned host RAM).
"""

from __future__ import annotations

# -- device ------------------------------------------------------------------------------------
PARAMETERS = "parameters"  # the model's weights as the engine keeps them on the device
MASTER_WEIGHTS = "master_weights"  # DeepSpeed's fp32 copy under bf16/fp16 (its partition)
GRADIENTS = "gradients"
OPTIMIZER_STATES = "optimizer_states"  # AdamW's exp_avg and exp_avg_sq
ACTIVATIONS = "activations"  # what the forward saves for the backward, at the peak
LOGITS_AND_LOSS = "logits_and_loss"  # [B, T, V] logits, their fp32 copy and gradient
ENGINE_BUFFERS = "engine_buffers"  # DeepSpeed's reduce/allgather buckets and flat buffers
WORKSPACE = "workspace"  # transient peaks: cuBLAS workspace, attention and optimizer temporaries
CUDA_CONTEXT = "cuda_context"  # outside the caching allocator: context, kernels, cuBLAS handle
FRAGMENTATION = "fragmentation"  # the allocator's margin above what tensors hold (measured)

DEVICE_PARTS = (
    PARAMETERS,
    MASTER_WEIGHTS,
    GRADIENTS,
    OPTIMIZER_STATES,
    ACTIVATIONS,
    LOGITS_AND_LOSS,
    ENGINE_BUFFERS,
    WORKSPACE,
    CUDA_CONTEXT,
    FRAGMENTATION,
)
MODEL_STATE_PARTS = (PARAMETERS, MASTER_WEIGHTS, GRADIENTS, OPTIMIZER_STATES)
OUTSIDE_ALLOCATOR = (CUDA_CONTEXT,)  # not in torch.cuda.max_memory_reserved

# -- host (beyond the runtime) -----------------------------------------------------------------
HOST_OPTIMIZER_STATES = "host_optimizer_states"  # offloaded AdamW states
HOST_MASTER_WEIGHTS = "host_master_weights"  # offloaded fp32 master partition
HOST_GRADIENTS = "host_gradients"  # fp32 gradient partition the CPU optimizer steps on
HOST_PARAMETERS = "host_parameters"  # offloaded parameters (ZeRO-3 offload_param)

HOST_PARTS = (HOST_OPTIMIZER_STATES, HOST_MASTER_WEIGHTS, HOST_GRADIENTS, HOST_PARAMETERS)
