"""Whole-split evaluation: mean loss over every token of a split, not a random sample (for
chat data, over every assistant token: the ones training trains)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from model.chat import chat_tokens
from model.data import Dataset
from model.gpt import GPT, IGNORE


@torch.no_grad()
def split_loss(
    model: GPT,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
) -> float:
    """Mean next-token cross-entropy (nats) over all of `tokens`.

    The split is cut into consecutive windows of block_size; each window predicts its next
    block_size tokens, and the last, shorter window covers the remainder, so every token after
    the first is predicted exactly once.
    """
    ctx = autocast if autocast is not None else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    n = len(tokens) - 1  # predicted positions
    total, count = 0.0, 0
    starts = list(range(0, n, block_size))
    full = [s for s in starts if s + block_size <= n]
    tail = [s for s in starts if s + block_size > n]
    offsets = np.arange(block_size + 1)
    for i in range(0, len(full), batch_size):
        ix = np.asarray(full[i : i + batch_size])
        rows = torch.from_numpy(tokens[ix[:, None] + offsets].astype(np.int64)).to(device)
        with ctx:
            logits, _ = model(rows[:, :-1])
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += rows[:, 1:].numel()
    for s in tail:
        row = torch.from_numpy(tokens[s : n + 1].astype(np.int64)).to(device)[None]
        with ctx:
            logits, _ = model(row[:, :-1])
        total += float(F.cross_entropy(logits.float()[0], row[0, 1:], reduction="sum"))
        count += row.shape[1] - 1
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def chat_split_loss(
    model: GPT,
    tokens: np.ndarray,
    mask: np.ndarray,
    bos: int,
    block_size: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
) -> tuple[float, int]:
    """The assistant-token loss of a chat split: mean cross-entropy (nats) over the trained
    tokens (mask 1) of every conversation, packed into rows as training packs them (a
    conversation longer than a row counts its first block_size + 1 tokens). Returns the loss
    and the number of tokens it is over."""
    from model.chat_batches import packed_rows

    ctx = autocast if autocast is not None else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    rows = packed_rows(tokens, mask, bos, block_size)
    while batch := [row for _, row in zip(range(batch_size), rows, strict=False)]:
        x = torch.from_numpy(np.stack([r[0] for r in batch])).to(device)
        y = torch.from_numpy(np.stack([r[1] for r in batch])).to(device)
        with ctx:
            logits, _ = model(x)
        total += float(
            F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)),
                y.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
        )
        count += int((y != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1), count


def dataset_loss(
    model: GPT,
    dataset: Dataset,
    split: str,
    block_size: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
    max_tokens: int | None = None,
) -> float:
    """A split's whole loss: split_loss for plain text, chat_split_loss (the assistant's
    tokens) for conversations. max_tokens: only the split's first tokens (plain text)."""
    tokens, mask = dataset.split(split), dataset.mask(split)
    if mask is None:
        tokens = tokens if max_tokens is None else tokens[: max_tokens + 1]
        return split_loss(model, tokens, block_size, batch_size, device, autocast)
    bos = chat_tokens(dataset.tokenizer()).bos
    return chat_split_loss(model, tokens, mask, bos, block_size, batch_size, device, autocast)[0]
