"""`minigpt-tui data prepare`: turn a text corpus into token memmaps for training."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from minigpt_tui.errors import UserError

data_app = typer.Typer(help="Prepare training data.", no_args_is_help=True)


@data_app.command("prepare")
def prepare(
    source: str = typer.Argument(
        ..., help="A text file, a directory of text files, or 'shakespeare' (Tiny Shakespeare)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output data directory."),
    tokenizer: str = typer.Option("char", help="char (vocabulary from the corpus) or gpt2 (BPE)."),
    val_fraction: float = typer.Option(0.1, help="Fraction of the corpus (its end) kept for val."),
    from_file: Path | None = typer.Option(
        None, help="With 'shakespeare': use this local copy instead of downloading."
    ),
    bpe_dir: Path | None = typer.Option(
        None, help="Directory with GPT-2's vocab.bpe and encoder.json (offline BPE)."
    ),
    force: bool = typer.Option(False, help="Replace an existing output directory."),
) -> None:
    """Tokenize SOURCE into OUT/train.bin, OUT/val.bin and OUT/meta.json."""
    from platformdirs import user_cache_dir
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from model import data

    if not source.strip():  # Path("") would silently mean the current directory
        raise UserError("SOURCE is empty: give a text file, a directory or 'shakespeare'")
    if tokenizer not in ("char", "gpt2"):
        raise UserError(f"--tokenizer must be char or gpt2, got {tokenizer!r}")
    if source == "shakespeare" and not Path(source).exists():
        files = [data.fetch_shakespeare(Path(user_cache_dir("minigpt-tui")), from_file)]
        name = "tinyshakespeare"
    else:
        if from_file is not None:
            raise UserError("--from-file only goes with the 'shakespeare' source")
        files = data.source_files(Path(source))
        name = source
    try:
        total = sum(p.stat().st_size for p in files)
    except OSError as e:
        raise UserError(f"cannot read the corpus: {e}") from None
    console = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]tokenizing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[tokens]:,} tokens ({task.fields[tps]:,.0f}/s)"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("prepare", total=total, tokens=0, tps=0.0)

        def report(done: int, tokens: int) -> None:
            tps = tokens / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, tokens=tokens, tps=tps)

        res = data.prepare(
            files,
            out,
            tokenizer,
            val_fraction,
            str(bpe_dir) if bpe_dir else None,
            force=force,
            progress=report,
            source_name=name,
        )
    secs = time.perf_counter() - t0
    from minigpt_tui.safe_text import markup

    console.print(
        f"[green]wrote[/] {markup(res.out)}: vocab {res.vocab_size:,}, "
        f"train {res.train_tokens:,} tokens, val {res.val_tokens:,} tokens ({res.dtype}) "
        f"in {secs:.1f}s"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
