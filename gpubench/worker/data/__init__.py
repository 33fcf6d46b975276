"""Training data for benchmark cases: synthetic token streams and local text.

:func:`data_stream` makes a case's stream; :class:`DataStream` is what an engine may ask of
one. torch is imported only when a stream is made (``TokenStream`` on first use, PEP 562),
so :func:`gpubench.worker.data.corpus.check_text_source` can run at collection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from gpubench.contracts.case import Case
    from gpubench.worker.data.synthetic import TokenStream

__all__ = ["DataStream", "TokenStream", "data_stream"]


class DataStream(Protocol):
    """A case's batches: ``TokenStream`` (learnable, random) or ``TextStream`` (text)."""

    vocab_size: int  # every id drawn is below it
    uniform_loss: float  # ln of the model's vocabulary: an untrained model's loss, nats
    entropy_floor: float  # the loss a perfect model reaches, nats/token (0.0 when unknown)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...
    def held_out(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


def data_stream(
    case: Case, vocab_size: int, device: torch.device | str, rank: int = 0, world_size: int = 1
) -> DataStream:
    """This rank's stream of ``case``'s data for a model of ``vocab_size`` ids."""
    if case.text_data:
        from gpubench.worker.data.text import TextStream

        return TextStream(
            case.data,
            case.tokenizer,
            vocab_size,
            case.batch_size,
            case.seq_len,
            case.seed,
            device,
            rank=rank,
            world_size=world_size,
        )
    from gpubench.worker.data.synthetic import TokenStream

    return TokenStream(
        case.data,
        vocab_size,
        case.batch_size,
        case.seq_len,
        case.seed,
        device,
        rank=rank,
        world_size=world_size,
    )


def __getattr__(name: str) -> Any:
    if name == "TokenStream":
        from gpubench.worker.data.synthetic import TokenStream

        return TokenStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
