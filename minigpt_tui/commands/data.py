"""`minigpt-tui data prepare`: turn a corpus (text, JSON Lines, Parquet; plain, .gz or .zst;
a file or a directory tree; documents or conversations) into token memmaps for training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from minigpt_tui.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from model.data import PrepareResult
    from model.tokenizer import Tokenizer

data_app = typer.Typer(help="Prepare training data.", no_args_is_help=True)


@data_app.command("prepare")
def prepare(
    source: str = typer.Argument(
        ...,
        help="A .txt/.md, .jsonl or .parquet file (optionally .gz or .zst), a directory of "
        "them (recursive), or 'shakespeare' (Tiny Shakespeare).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output data directory."),
    tokenizer: str | None = typer.Option(
        None,
        help="char (vocabulary from the corpus), gpt2 (GPT-2's BPE) or bpe:N (a byte-level "
        "BPE of N tokens trained on the training split).  [default: char]",
        show_default=False,
    ),
    tokenizer_from: str | None = typer.Option(
        None,
        "--tokenizer-from",
        metavar="MODEL",
        help="Use MODEL's tokenizer (a model or run directory, or a bundled model's name), to "
        "fine-tune MODEL on this data; for conversations, its chat version (every id kept, "
        "the chat tokens added after them).",
        show_default=False,
    ),
    field: str | None = typer.Option(
        None,
        help="The JSON Lines field / Parquet column of the text (default: text).",
        show_default=False,
    ),
    corpus_format: str | None = typer.Option(
        None,
        "--format",
        help="text (documents) or chat (conversations: records with 'messages' or ShareGPT "
        "'conversations'). Default: chat when the first record is a conversation.",
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
    """Tokenize SOURCE into OUT/train.bin, OUT/val.bin and OUT/meta.json (and, for
    conversations, OUT/train.mask.bin and OUT/val.mask.bin: 1 where a token is trained)."""
    from rich.console import Console

    from model import data

    _check_options(source, tokenizer, tokenizer_from, bpe_dir, corpus_format)
    kind: str | Tokenizer = tokenizer or "char"
    if tokenizer_from is not None:
        kind = _model_tokenizer(tokenizer_from, bpe_dir)
    files, name = _corpus_files(source, include, exclude, from_file)
    fmt = data.data_format(files, corpus_format)
    _check_field(files, field, fmt)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    res = _run(console, files, out, kind, val_fraction, bpe_dir, force, name, field, fmt)
    _report(console, res, time.perf_counter() - t0)


def _check_options(
    source: str,
    tokenizer: str | None,
    tokenizer_from: str | None,
    bpe_dir: Path | None,
    fmt: str | None,
) -> None:
    """Options that are wrong whatever the corpus: one error line before any work."""
    if not source.strip():  # Path("") would silently mean the current directory
        raise UserError("SOURCE is empty: give a text file, a directory or 'shakespeare'")
    if tokenizer is not None and tokenizer_from is not None:
        raise UserError("--tokenizer-from takes the model's tokenizer: drop --tokenizer")
    tokenizer = tokenizer or ("char" if tokenizer_from is None else "gpt2")
    if tokenizer not in ("char", "gpt2") and not tokenizer.startswith("bpe:"):
        raise UserError(f"--tokenizer must be char, gpt2 or bpe:N, got {tokenizer!r}")
    if tokenizer.startswith("bpe:"):
        from model.tokenizer import bpe_vocab_size

        bpe_vocab_size(tokenizer)  # a bad N is one error line before any work
    if bpe_dir is not None and tokenizer != "gpt2":
        raise UserError("--bpe-dir only goes with --tokenizer gpt2 (or a GPT-2 --tokenizer-from)")
    if fmt not in (None, "text", "chat"):
        raise UserError(f"--format must be text or chat, got {fmt!r}")


def _model_tokenizer(model: str, bpe_dir: Path | None) -> Tokenizer:
    """The tokenizer of the model --tokenizer-from names."""
    from minigpt_tui.models import resolve_model
    from model import modeldir

    tokenizer = modeldir.read(resolve_model(model)).tokenizer(str(bpe_dir) if bpe_dir else None)
    if bpe_dir is not None and tokenizer.kind != "gpt2":
        raise UserError(f"--bpe-dir only goes with GPT-2's tokenizer; {model} has {tokenizer.kind}")
    return tokenizer


def _corpus_files(
    source: str, include: list[str], exclude: list[str], from_file: Path | None
) -> tuple[list[Path], str]:
    """The files SOURCE names, and the name meta.json records for it."""
    from platformdirs import user_cache_dir

    from model import data

    shakespeare = source == "shakespeare" and not Path(source).exists()  # not a local path
    if (include or exclude) and (shakespeare or Path(source).is_file()):
        raise UserError("--include and --exclude only go with a directory SOURCE")
    if shakespeare:
        files = [data.fetch_shakespeare(Path(user_cache_dir("minigpt-tui")), from_file)]
        return files, "tinyshakespeare"
    if from_file is not None:
        raise UserError("--from-file only goes with the 'shakespeare' source")
    return data.source_files(Path(source), include, exclude), source


def _check_field(files: list[Path], field: str | None, fmt: str) -> None:
    from model.corpus import file_format

    if field is not None and all(file_format(f)[0] == "text" for f in files):
        raise UserError("--field only goes with JSON Lines or Parquet files; SOURCE has none")
    if field is not None and fmt == "chat":
        raise UserError(
            "--field picks the text of plain records; conversations are read from "
            "'messages' or 'conversations'"
        )


def _run(
    console: Console,
    files: list[Path],
    out: Path,
    tokenizer: str | Tokenizer,
    val_fraction: float,
    bpe_dir: Path | None,
    force: bool,
    name: str,
    field: str | None,
    fmt: str,
) -> PrepareResult:
    """data.prepare under a progress bar."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from model import data
    from model.corpus import corpus_bytes

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
        task = bar.add_task("prepare", total=corpus_bytes(files), tokens=0, tps=0.0)

        def report(done: int, tokens: int) -> None:
            tps = tokens / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, tokens=tokens, tps=tps)

        return data.prepare(
            files,
            out,
            tokenizer,
            val_fraction,
            str(bpe_dir) if bpe_dir else None,
            force=force,
            progress=report,
            source_name=name,
            field="text" if field is None else field,
            fmt=fmt,
        )


def _report(console: Console, res: PrepareResult, secs: float) -> None:
    from minigpt_tui.safe_text import markup

    for notice in res.notices:
        console.print(f"[yellow]note:[/] {markup(notice)}")
    bad = res.stats.summary()
    if bad:
        console.print(f"[yellow]warning:[/] {markup(bad)}: skipped, the rest was used")
    files_by_format = ", ".join(f"{n} {fmt}" for fmt, n in sorted(res.stats.files.items()))
    docs = res.stats.documents
    what = "conversation" if res.format == "chat" else "document"
    trained = ""
    if res.trained_tokens is not None:
        trained = (
            f" ({res.trained_tokens['train']:,} and {res.trained_tokens['val']:,} of them in "
            "assistant turns, the tokens trained)"
        )
    console.print(
        f"[green]wrote[/] {markup(res.out)}: vocab {res.vocab_size:,}, "
        f"train {res.train_tokens:,} tokens, val {res.val_tokens:,} tokens ({res.dtype}){trained} "
        f"in {secs:.1f}s; {docs:,} {what}{'s' * (docs != 1)} from {files_by_format}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
