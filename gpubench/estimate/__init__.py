"""Memory estimation without a GPU: formulas, a traced step, and the verdict on a profile."""
