"""How a training step takes its micro-batches from a source of random batches, shared by the
plain (model/batches.py) and the chat (model/chat_batches.py) sources: one draw per optimizer
step, of which each DDP rank gathers its own consecutive share."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class BatchSource:
    """A source of random micro-batches: `draw` picks what n micro-batches hold (from the
    source's own generator, so every rank draws the same), `gather` makes one of them."""

    def draw(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def gather(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather(self.draw(1)[0])

    def step(
        self, grad_accum: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process' micro-batches of one optimizer step (grad_accum across all)."""
        ix = self.draw(grad_accum)
        share = grad_accum // world_size
        return (self.gather(i) for i in ix[rank * share : (rank + 1) * share])
