"""What the training loop consumes: random (x, y) windows of a split, and when to stop.

- `Batches` draws the windows, reproducibly from one torch.Generator (whose state trainer.pt
  stores, model/trainer_state.py), and is the one place a batch is fetched: the loop's
  micro-batches (`step`) and the evaluation estimates (`next`) both come from `gather`;
  `make_batches` picks it, or for chat data model/chat_batches.py's rows of whole
  conversations, which have the same interface;
- `StopFlag` turns the first Ctrl+C into a request to stop after the current step and save.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import numpy as np
import torch

from model.batch_steps import BatchSource
from model.chat import chat_tokens
from model.chat_batches import ChatBatches, Conversations
from model.data import Dataset


class Batches(BatchSource):
    """Random (x, y) windows from a memmapped split, reproducible from one torch.Generator.

    Every process draws the offsets of the whole global step (all processes' micro-batches)
    from the same seed and keeps its own share, so a run on N processes sees exactly the
    batches of a single-process run with the same global batch, and one generator state
    resumes them all.
    """

    def __init__(
        self, tokens: np.ndarray, batch_size: int, block_size: int, device: str, seed: int
    ) -> None:
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(block_size + 1)

    def draw(self, n: int) -> torch.Tensor:
        """Start offsets of n micro-batches: (n, batch_size)."""
        high = len(self.tokens) - self.block_size
        return torch.randint(high, (n, self.batch_size), generator=self.gen)

    def gather(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows starting at offsets ix (B,): inputs x and targets y, (B, T) each."""
        rows = self.tokens[ix.numpy()[:, None] + self._offsets]  # (B, T+1), one gather
        buf = torch.from_numpy(rows.astype(np.int64))
        if self.device.startswith("cuda"):
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        elif self.device != "cpu":
            buf = buf.to(self.device)
        return buf[:, :-1], buf[:, 1:]


class StopFlag:
    """First Ctrl+C asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        with contextlib.suppress(ValueError):  # not in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def make_batches(
    dataset: Dataset, split: str, batch_size: int, block_size: int, device: str, seed: int
) -> Batches | ChatBatches:
    """The batches of a split: random windows of plain text, or for chat data rows of whole
    conversations whose targets are the assistant's tokens only. Where a split's
    conversations lie is found once per dataset (dataset.cache)."""
    tokens, mask = dataset.split(split), dataset.mask(split)
    if mask is None:
        return Batches(tokens, batch_size, block_size, device, seed)
    bos = chat_tokens(dataset.tokenizer()).bos
    key = f"conversations:{split}"
    if key not in dataset.cache:
        dataset.cache[key] = Conversations.find(tokens, bos)
    return ChatBatches(tokens, mask, dataset.cache[key], batch_size, block_size, device, seed)
