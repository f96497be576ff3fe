"""Whole-split evaluation: mean loss over every token of a split, not a random sample (for
chat data, over every assistant token: the ones training trains).

The split is cut into windows of at most block_size tokens that start every `stride` tokens;
each window predicts only the tokens no earlier window predicted, so every token after the
first is predicted exactly once. With stride = block_size (the default) the windows are
consecutive and the last, shorter one covers the remainder; a smaller stride gives every
token after the first block at least block_size - stride tokens of context, at block_size /
stride times the cost.

`max_tokens` bounds the work on a large split: evenly spaced windows predicting about that many
tokens stand for the whole (a split that fits is evaluated whole, exactly as without a bound).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from model.chat import chat_tokens
from model.data import Dataset
from model.gpt import GPT, IGNORE


class EvaluationStopped(Exception):
    """The caller's `stop()` asked to end the evaluation early (Ctrl+C)."""


def windows(
    n_tokens: int, block_size: int, stride: int | None = None, max_tokens: int | None = None
) -> list[tuple[int, int, int]]:
    """The windows that evaluate a split of `n_tokens` tokens: (start, end, first) each, where
    the window's input is tokens[start:end] and it predicts positions first..end-1 (the
    position p predicts token p + 1). With `max_tokens`, an evenly spaced subset of them
    that predicts at most about that many positions."""
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be between 1 and the block size {block_size}: {stride}")
    n = n_tokens - 1  # predicted positions
    out, start, done = [], 0, 0
    while done < n:
        end = min(start + block_size, n)
        out.append((start, end, done))
        done, start = end, start + stride
    if max_tokens is not None and 0 < max_tokens < n:
        per_window = min(stride, block_size)
        keep = max(1, min(len(out), max_tokens // per_window))
        picks = np.unique(np.linspace(0, len(out) - 1, keep).round().astype(np.int64))
        out = [out[i] for i in picks]
    return out


def predicted(plan: list[tuple[int, int, int]]) -> int:
    """How many positions the windows of `plan` predict."""
    return sum(end - first for _, end, first in plan)


@torch.no_grad()
def loss_sum(
    model: GPT,
    tokens: np.ndarray,
    plan: list[tuple[int, int, int]],
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, int]:
    """(Sum of the next-token cross-entropies in nats, positions) over the windows of `plan`.
    Windows of the same length run batch_size at a time; `progress(positions)` follows each
    batch; `stop()`, checked before each batch, ends it early with EvaluationStopped."""
    ctx = autocast if autocast is not None else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for w in plan:
        by_length.setdefault(w[1] - w[0], []).append(w)
    try:
        for length, group in sorted(by_length.items(), reverse=True):
            offsets = np.arange(length + 1)
            for i in range(0, len(group), batch_size):
                if stop is not None and stop():
                    raise EvaluationStopped
                rows_w = group[i : i + batch_size]
                ix = np.asarray([s for s, _, _ in rows_w])
                rows = torch.from_numpy(tokens[ix[:, None] + offsets].astype(np.int64)).to(device)
                with ctx:
                    logits, _ = model(rows[:, :-1])  # (B, length, V)
                losses = F.cross_entropy(
                    logits.float().transpose(1, 2), rows[:, 1:], reduction="none"
                )  # (B, length)
                first = torch.tensor([f - s for s, _, f in rows_w], device=losses.device)
                keep = torch.arange(length, device=losses.device)[None, :] >= first[:, None]
                total += float(losses[keep].sum())
                scored = int(keep.sum())
                count += scored
                if progress is not None:
                    progress(scored)
    finally:
        model.train(was_training)
    return total, count


def split_loss(
    model: GPT,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
    *,
    stride: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> float:
    """Mean next-token cross-entropy (nats) over `tokens` (see the module docstring)."""
    plan = windows(len(tokens), block_size, stride, max_tokens)
    total, count = loss_sum(model, tokens, plan, batch_size, device, autocast, progress, stop)
    return total / max(count, 1)


@torch.no_grad()
def chat_loss_sum(
    model: GPT,
    tokens: np.ndarray,
    mask: np.ndarray,
    bos: int,
    block_size: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast: Any = None,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, int]:
    """The summed cross-entropy (nats) over the trained tokens (mask 1) of every conversation of
    a chat split, packed into rows as training packs them (a conversation longer than a row
    counts its first block_size + 1 tokens), and how many tokens that is. shard=(rank, world):
    only every world-th row from rank (DDP ranks split the work)."""
    from model.chat_batches import packed_rows

    ctx = autocast if autocast is not None else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    rank, world = shard
    rows = (
        row for i, row in enumerate(packed_rows(tokens, mask, bos, block_size)) if i % world == rank
    )
    try:
        while batch := [row for _, row in zip(range(batch_size), rows, strict=False)]:
            if stop is not None and stop():
                raise EvaluationStopped
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
            scored = int((y != IGNORE).sum())
            count += scored
            if progress is not None:
                progress(scored)
    finally:
        model.train(was_training)
    return total, count


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
    """The assistant-token loss of a chat split (chat_loss_sum's mean) and how many tokens it is
    over."""
    total, count = chat_loss_sum(model, tokens, mask, bos, block_size, batch_size, device, autocast)
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
