"""Training rows of whole conversations, for chat data (see model/chat.py and `data prepare`).

A prepared chat split is conversations back to back, each starting with <|endoftext|>, with a
mask of the tokens trained. A row starts at a conversation's start and holds as many whole
conversations (the next ones in the split) as fit in block_size + 1 tokens; the rest of the
row is padding. A conversation longer than that is cut to its first block_size + 1 tokens.
Targets that are not trained (system and user turns, markers, padding) are IGNORE, so the
loss is the assistant-token loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from model.batch_steps import BatchSource
from model.gpt import IGNORE


@dataclass
class Conversations:
    """Where the conversations of a split lie: starts[i] <= tokens of i < ends[i]."""

    starts: np.ndarray  # int64
    ends: np.ndarray

    @classmethod
    def find(cls, tokens: np.ndarray, bos: int) -> Conversations:
        """Every conversation starts with bos, which no content token can be. One pass."""
        chunk = 1 << 24
        found = [
            np.flatnonzero(tokens[i : i + chunk] == bos) + i for i in range(0, len(tokens), chunk)
        ]
        starts = np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)
        ends = np.append(starts[1:], len(tokens)).astype(np.int64)
        return cls(starts, ends)

    def __len__(self) -> int:
        return len(self.starts)

    def longer_than(self, n: int) -> int:
        """How many conversations hold more than n tokens."""
        return int(((self.ends - self.starts) > n).sum())

    def row_end(self, i: int, width: int) -> int:
        """The end of a row of `width` tokens starting at conversation i: after the last whole
        conversation that fits, or cut at width when the first one alone does not."""
        start = int(self.starts[i])
        j = int(np.searchsorted(self.ends, start + width, side="right"))
        return int(self.ends[j - 1]) if j > i else start + width


def chat_row(
    tokens: np.ndarray, mask: np.ndarray, start: int, end: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of width - 1 positions from tokens[start:end]: the targets are the
    next tokens where the mask trains them, IGNORE elsewhere and over the padding."""
    ids = np.zeros(width, np.int64)  # padding: id 0 in, IGNORE out
    keep = np.full(width, False)
    n = end - start
    ids[:n] = tokens[start:end]
    keep[:n] = mask[start:end].astype(bool)
    targets = np.where(keep[1:], ids[1:], IGNORE)
    return ids[:-1], targets


class ChatBatches(BatchSource):
    """Random rows of whole conversations, reproducible from one torch.Generator: the same
    interface as the plain-text batches (draw, gather, next, step), each process keeping its
    share of one global draw."""

    def __init__(
        self,
        tokens: np.ndarray,
        mask: np.ndarray,
        conversations: Conversations,
        batch_size: int,
        block_size: int,
        device: str,
        seed: int,
    ) -> None:
        self.tokens, self.mask = tokens, mask
        self.conversations = conversations  # Conversations.find(tokens, bos)
        if not len(self.conversations):
            raise ValueError("the split holds no conversation")
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)

    @property
    def truncated(self) -> int:
        """Conversations longer than a row (block_size + 1 tokens): their ends are never seen."""
        return self.conversations.longer_than(self.block_size + 1)

    def draw(self, n: int) -> torch.Tensor:
        """The first conversation of each row of n micro-batches: (n, batch_size)."""
        return torch.randint(len(self.conversations), (n, self.batch_size), generator=self.gen)

    def gather(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = self.block_size + 1
        rows = []
        for i in ix.tolist():
            end = self.conversations.row_end(i, width)
            rows.append(
                chat_row(self.tokens, self.mask, int(self.conversations.starts[i]), end, width)
            )
        x = torch.from_numpy(np.stack([r[0] for r in rows]))
        y = torch.from_numpy(np.stack([r[1] for r in rows]))
        if self.device.startswith("cuda"):
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.to(self.device), y.to(self.device)


def packed_rows(
    tokens: np.ndarray, mask: np.ndarray, bos: int, block_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every conversation of a split once, in order, packed into rows as training packs them
    (a conversation longer than a row counts its first block_size + 1 tokens): for the
    whole-split assistant-token loss."""
    conversations = Conversations.find(tokens, bos)
    width = block_size + 1
    i = 0
    while i < len(conversations):
        end = conversations.row_end(i, width)
        yield chat_row(tokens, mask, int(conversations.starts[i]), end, width)
        i = max(i + 1, int(np.searchsorted(conversations.starts, end, side="left")))
