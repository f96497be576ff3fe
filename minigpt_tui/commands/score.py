"""`minigpt-tui score`: how well a model predicts a text (bits, bits/char, perplexity)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from model.backend import BACKENDS, check_backend
from model.errors import one_of

if TYPE_CHECKING:
    from minigpt_tui.scoring import Score
    from model.backend import Backend
    from model.tokenizer import Tokenizer


def score(
    file: Path = typer.Argument(..., help="A UTF-8 text file; '-' reads stdin."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A model directory, a run directory, a model.onnx inside a model directory, or "
        "the name of a bundled model. Default: the bundled model.",
        show_default=False,
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the figures and every token's values as JSON."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help=f"{one_of(BACKENDS)}; auto uses ONNX when exported."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for the model.", show_default=False
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device (cpu, cuda, mps)."),
    stride: int | None = typer.Option(
        None,
        "--stride",
        min=1,
        help="In a text longer than the model's context, tokens scored per slide of the window "
        "(1 to block size - 1; every later token sees at least block size - stride before it). "
        "Default: a quarter block.",
        show_default=False,
    ),
) -> None:
    """Score FILE with a model: total bits, bits per character, perplexity.

    Every token's surprisal is -log2 of the probability the model gave it (temperature 1, no
    filtering). A text longer than the model's context is scored in sliding windows (a note
    says so). With --backend torch each window runs once for all the tokens it scores; ONNX
    runs token by token through its cache. Compare two checkpoints by scoring the same file
    with each.
    """
    from minigpt_tui.generation import load_backend
    from minigpt_tui.progress import work_progress
    from minigpt_tui.scoring import check_text, decode_text, read_text_file, score_text
    from model import jobs

    check_backend(backend)
    if str(file) == "-":
        text, where = decode_text(sys.stdin.buffer.read(), "stdin"), "stdin"
    else:
        text, where = read_text_file(file), str(file)
    engine = load_backend(model, backend=backend, device=device, threads=threads)
    tokenizer = engine.info.tokenizer()
    ids = check_text(tokenizer, text, where)  # one line before the (maybe long) run
    t0 = time.perf_counter()
    scored = len(ids) if tokenizer.eot is not None else len(ids) - 1  # the first: no context
    with jobs.busy(), work_progress("scoring", scored, "tokens") as update:
        result = score_text(
            engine, tokenizer, text, stride=stride, progress=lambda done, _: update(done)
        )
    seconds = time.perf_counter() - t0
    if as_json:
        figures = _figures(engine, where, result)
        figures["per_token"] = _per_token(tokenizer, result)
        json.dump(figures, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _print_report(engine, where, result, seconds)


def _figures(engine: Backend, where: str, result: Score) -> dict[str, Any]:
    """The whole text's figures, as --json prints them."""
    return {
        "model": engine.info.name,
        "backend": engine.name,
        "file": where,
        "tokens": result.n,
        "characters": result.characters,
        "total_bits": round(result.total_bits, 4),
        "bits_per_char": round(result.bits_per_char, 6),
        "bits_per_token": round(result.bits_per_token, 6),
        "perplexity": round(result.perplexity, 6),
        "block_size": result.block_size,
        "windows": result.windows,
        "first_token_unscored": result.first_unscored,
        "notes": result.notes(),
    }


def _per_token(tokenizer: Tokenizer, result: Score) -> list[dict[str, Any]]:
    """Every token's id, text, bits, probability and likeliest alternatives, for --json."""
    decode = tokenizer.decode
    return [
        {
            "position": i,
            "id": int(tok),
            "text": decode([int(tok)]),
            "bits": round(float(result.bits[i]), 6),
            "prob": round(result.probability(i), 6),
            "top": [
                {"id": int(t), "text": decode([int(t)]), "prob": round(float(p), 6)}
                for t, p in zip(result.top_ids[i], result.top_probs[i], strict=True)
            ],
        }
        for i, tok in enumerate(result.tokens)
    ]


def _print_report(engine: Backend, where: str, result: Score, seconds: float) -> None:
    """The figures for a reader: notes to stderr, the table to stdout."""
    for note in result.notes():
        print(f"note: {note}", file=sys.stderr)
    print(f"{engine.info.name} ({engine.name}) on {where}")
    print(f"{result.n:,} tokens scored over {result.characters:,} characters in {seconds:.1f}s")
    print(f"total        {result.total_bits:,.1f} bits")
    print(f"bits/char    {result.bits_per_char:.4f}")
    print(f"bits/token   {result.bits_per_token:.4f}")
    print(f"perplexity   {result.perplexity:.4f} (per token)")


def register(app: typer.Typer) -> None:
    app.command("score", no_args_is_help=True)(score)
