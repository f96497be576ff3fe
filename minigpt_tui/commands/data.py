"""`minigpt-tui data prepare`: turn a corpus (text, JSON Lines, Parquet; plain, .gz or .zst;
a file or a directory tree) into token memmaps for training."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from minigpt_tui.errors import UserError

data_app = typer.Typer(help="Prepare training data.", no_args_is_help=True)


@data_app.command("prepare")
def prepare(
    source: str = typer.Argument(
        ...,
        help="A .txt/.md, .jsonl or .parquet file (optionally .gz or .zst), a directory of "
        "them (recursive), or 'shakespeare' (Tiny Shakespeare).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output data directory."),
    tokenizer: str = typer.Option(
        "char",
        help="char (vocabulary from the corpus), gpt2 (GPT-2's BPE) or bpe:N (a byte-level "
        "BPE of N tokens trained on the training split).",
    ),
    field: str | None = typer.Option(
        None,
        help="The JSON Lines field / Parquet column of the text (default: text).",
        show_default=False,
    ),
    include: list[str] = typer.Option(
        [],
        help="In a directory, read only files matching this glob (on the name, or on the "
        "path under SOURCE when it has a /). Repeatable.",
    ),
    exclude: list[str] = typer.Option([], help="In a directory, skip files matching this glob."),
    val_fraction: float = typer.Option(0.1, help="Fraction of the corpus (its end) kept for val."),
    from_file: Path | None = typer.Option(
        None, help="With 'shakespeare': use this local copy instead of downloading."
    ),
    bpe_dir: Path | None = typer.Option(
        None, help="With --tokenizer gpt2: a directory with GPT-2's vocab.bpe and encoder.json."
    ),
    force: bool = typer.Option(False, help="Replace earlier prepared data in --out."),
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
    from model.corpus import corpus_bytes, file_format

    if not source.strip():  # Path("") would silently mean the current directory
        raise UserError("SOURCE is empty: give a text file, a directory or 'shakespeare'")
    if tokenizer not in ("char", "gpt2") and not tokenizer.startswith("bpe:"):
        raise UserError(f"--tokenizer must be char, gpt2 or bpe:N, got {tokenizer!r}")
    if tokenizer.startswith("bpe:"):
        from model.tokenizer import bpe_vocab_size

        bpe_vocab_size(tokenizer)  # a bad N is one error line before any work
    if bpe_dir is not None and tokenizer != "gpt2":
        raise UserError("--bpe-dir only goes with --tokenizer gpt2")
    shakespeare = source == "shakespeare" and not Path(source).exists()  # not a local path
    if (include or exclude) and (shakespeare or Path(source).is_file()):
        raise UserError("--include and --exclude only go with a directory SOURCE")
    if shakespeare:
        files = [data.fetch_shakespeare(Path(user_cache_dir("minigpt-tui")), from_file)]
        name = "tinyshakespeare"
    else:
        if from_file is not None:
            raise UserError("--from-file only goes with the 'shakespeare' source")
        files = data.source_files(Path(source), include, exclude)
        name = source
    if field is not None and all(file_format(f)[0] == "text" for f in files):
        raise UserError("--field only goes with JSON Lines or Parquet files; SOURCE has none")
    total = corpus_bytes(files)
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
        refresh_per_second=4,  # its drawing thread competes with the tokenizer's
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
            field="text" if field is None else field,
        )
    secs = time.perf_counter() - t0
    from minigpt_tui.safe_text import markup

    for notice in res.notices:
        console.print(f"[yellow]note:[/] {markup(notice)}")
    bad = res.stats.summary()
    if bad:
        console.print(f"[yellow]warning:[/] {markup(bad)}: skipped, the rest was used")
    files_by_format = ", ".join(f"{n} {fmt}" for fmt, n in sorted(res.stats.files.items()))
    console.print(
        f"[green]wrote[/] {markup(res.out)}: vocab {res.vocab_size:,}, "
        f"train {res.train_tokens:,} tokens, val {res.val_tokens:,} tokens ({res.dtype}) "
        f"in {secs:.1f}s; "
        f"{res.stats.documents:,} document{'s' * (res.stats.documents != 1)} from "
        f"{files_by_format}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
