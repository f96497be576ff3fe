"""`minigpt-tui eval`: loss and perplexity over a whole validation split."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minigpt_tui.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from model.data import Dataset
    from model.gpt import GPT
    from model.modeldir import ModelInfo


def evaluate(
    model: str = typer.Argument(..., help="Model or run directory."),
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data directory."),
    split: str = typer.Option("val", help="val or train."),
    batch_size: int = typer.Option(32, min=1, help="Windows per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16."),
    stride: int | None = typer.Option(
        None,
        min=1,
        help="Windows start every STRIDE tokens and predict only tokens no earlier window did: "
        "every token after the first block sees at least block size - stride before it, at "
        "block size / stride times the work. Default: the block size (consecutive windows).",
        show_default=False,
    ),
) -> None:
    """Whole-split loss, perplexity and bits per character of MODEL on DATA.

    Every token of the split, not a sample, with a progress bar. Bits per character compare
    across tokenizers; losses per token do not. On conversations (chat data): the loss over
    the assistant's tokens, the ones chat training trains."""
    import contextlib

    import torch
    from rich.console import Console

    from minigpt_tui.models import resolve_model
    from model import checkpoint, jobs
    from model.data import load_dataset
    from model.device import resolve_device
    from model.tokenizer import reads

    if split not in ("val", "train"):
        raise UserError(f"--split must be val or train, got {split!r}")
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    dev = resolve_device(device)
    net, info = checkpoint.load(resolve_model(model), dev)
    ds = load_dataset(data, 1)
    if ds.tokenizer_spec != info.tokenizer_spec and not reads(info.tokenizer(), ds.tokenizer()):
        raise UserError(f"{data} was tokenized differently from {info.path}'s tokenizer")
    ctx = (
        torch.autocast(device_type=dev.split(":")[0], dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    block = info.config.block_size
    if stride is not None and stride > block:
        raise UserError(f"--stride must be at most the block size {block}, got {stride}")
    jobs.join("infer")  # a training running beside it keeps the CPUs (model/jobs.py)
    if jobs.training_running():
        torch.set_num_threads(1)
    console = Console()
    with jobs.busy():
        if ds.is_chat:
            _chat_eval(console, net, info, ds, split, batch_size, dev, ctx)
        else:
            _plain_eval(console, net, info, ds, split, batch_size, dev, ctx, stride)


def _plain_eval(
    console: Console,
    net: GPT,
    info: ModelInfo,
    ds: Dataset,
    split: str,
    batch_size: int,
    dev: str,
    ctx: Any,
    stride: int | None,
) -> None:
    """Plain text: the loss over every predicted token (windows every `stride` tokens)."""
    from minigpt_tui.progress import work_progress
    from minigpt_tui.safe_text import markup
    from model.evaluate import loss_sum, predicted, windows

    tokens, block = ds.split(split), info.config.block_size
    plan = windows(len(tokens), block, stride)
    _check_batch_memory(min(batch_size, len(plan)), block, info.config.vocab_size)
    t0 = time.perf_counter()
    done = [0]
    with work_progress(f"{split} loss", predicted(plan), "tokens") as update:

        def advance(n: int) -> None:
            done[0] += n
            update(done[0])

        total, count = loss_sum(net, tokens, plan, batch_size, dev, ctx, advance)
    loss = total / max(count, 1)
    secs = time.perf_counter() - t0
    chars = ds.meta.get(f"{split}_chars")  # absent in data prepared by older versions
    bpc = (
        f", {loss * (len(tokens) - 1) / math.log(2) / chars:.4f} bits per character"
        if isinstance(chars, int) and chars > 0
        else ""
    )
    console.print(
        f"{markup(info.name, one_line=True)}: {split} loss {loss:.4f} nats, "
        f"perplexity {math.exp(loss):.3f}{bpc} "
        f"over {len(tokens) - 1:,} predicted tokens ({secs:.1f}s)"
    )


def _chat_eval(
    console: Console,
    net: GPT,
    info: ModelInfo,
    ds: Dataset,
    split: str,
    batch_size: int,
    dev: str,
    ctx: Any,
) -> None:
    """Conversations: the loss over the assistant's tokens, the ones chat training trains."""
    from minigpt_tui.safe_text import markup
    from model.chat_batches import Conversations
    from model.evaluate import chat_split_loss

    tokens, mask, chat = ds.split(split), ds.mask(split), ds.tokenizer().chat
    assert mask is not None and chat is not None
    block = info.config.block_size
    t0 = time.perf_counter()
    loss, count = chat_split_loss(net, tokens, mask, chat.bos, block, batch_size, dev, ctx)
    secs = time.perf_counter() - t0
    conversations = Conversations.find(tokens, chat.bos)
    cut = conversations.longer_than(block + 1)
    console.print(
        f"{markup(info.name, one_line=True)}: {split} assistant-token loss {loss:.4f} nats, "
        f"perplexity {math.exp(loss):.3f} over the {count:,} tokens of the assistant's turns "
        f"in {len(conversations):,} conversation{'s' * (len(conversations) != 1)} ({secs:.1f}s)"
        + (f"; {cut:,} longer than the context count their first {block + 1} tokens" if cut else "")
    )


def _check_batch_memory(batch_size: int, block_size: int, vocab_size: int) -> None:
    """Refuse a --batch-size whose logits alone (batch x block x vocab floats) would not fit
    in half of this machine's memory, before allocating them."""
    import os

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return
    need = batch_size * block_size * vocab_size * 4
    if need > memory // 2:
        raise UserError(
            f"--batch-size {batch_size} needs about {need / 1e9:,.1f} GB for the logits alone, "
            f"more than half of this machine's {memory / 1e9:.0f} GB; use a smaller one"
        )


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)
