"""`minigpt-tui eval`: loss and perplexity over a whole validation split."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

from minigpt_tui.errors import UserError


def evaluate(
    model: str = typer.Argument(..., help="Model or run directory."),
    data: Path = typer.Option(..., "--data", "-d", help="Prepared data directory."),
    split: str = typer.Option("val", help="val or train."),
    batch_size: int = typer.Option(32, min=1, help="Windows per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16."),
) -> None:
    """Whole-split loss (every token, not a sample) and perplexity of MODEL on DATA."""
    import contextlib

    import torch
    from rich.console import Console

    from minigpt_tui.models import resolve_model
    from model import checkpoint
    from model.data import load_dataset
    from model.device import resolve_device
    from model.evaluate import split_loss

    if split not in ("val", "train"):
        raise UserError(f"--split must be val or train, got {split!r}")
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    dev = resolve_device(device)
    net, info = checkpoint.load(resolve_model(model), dev)
    ds = load_dataset(data, 1)
    if ds.tokenizer_spec != info.tokenizer_spec:
        raise UserError(f"{data} was tokenized differently from {info.path}'s tokenizer")
    ctx = (
        torch.autocast(device_type=dev.split(":")[0], dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    tokens = ds.split(split)
    t0 = time.perf_counter()
    loss = split_loss(net, tokens, info.config.block_size, batch_size, dev, ctx)
    secs = time.perf_counter() - t0
    console = Console()
    console.print(
        f"{info.name}: {split} loss {loss:.4f} nats, perplexity {math.exp(loss):.3f} "
        f"over {len(tokens) - 1:,} predicted tokens ({secs:.1f}s)"
    )


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)
