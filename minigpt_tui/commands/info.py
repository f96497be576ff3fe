"""`minigpt-tui info`: what a model directory holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from model.modeldir import ModelInfo


def info(
    model: str = typer.Argument(None, help="Model or run directory, or a bundled name."),
) -> None:
    """Show a model's config, parameters, tokenizer, files and training summary."""
    from rich.console import Console
    from rich.table import Table

    from minigpt_tui.models import resolve_model
    from minigpt_tui.safe_text import markup
    from model import modeldir

    mi = modeldir.read(resolve_model(model))
    cfg = mi.config
    table = Table(title=markup(mi.name, one_line=True), show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()  # values may be anything the file holds: added through markup()
    table.add_row("path", markup(mi.path))
    table.add_row("parameters", f"{cfg.num_params():,}")
    table.add_row(
        "shape",
        f"{cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {cfg.block_size}, "
        f"vocab {cfg.vocab_size:,}",
    )
    table.add_row("options", f"dropout {cfg.dropout}, bias {cfg.bias}, tied head {cfg.tie_weights}")
    spec = mi.tokenizer_spec
    tok = spec["kind"] + (f" ({len(spec['chars'])} characters)" if spec["kind"] == "char" else "")
    if spec["kind"] == "bpe":
        tok += f" ({spec['vocab_size']:,} tokens, trained; {spec['file']})"
    table.add_row("tokenizer", markup(tok))
    if mi.is_chat:
        _chat_rows(table, mi)
    files = [
        f.name
        for f in (mi.weights_path, mi.onnx_path, mi.path / modeldir.TRAINER_FILE)
        if f.is_file()
    ] + modeldir.tokenizer_files(spec)
    table.add_row("files", ", ".join(files) or "-")
    onnx = mi.meta.get("onnx")
    if isinstance(onnx, dict):
        table.add_row(
            "onnx",
            markup(
                ", ".join(f"{k} {v}" for k, v in onnx.items() if isinstance(v, str | int | float))
            ),
        )
    training = mi.meta.get("training")
    training = training if isinstance(training, dict) else {}  # a hostile file: show nothing
    if training.get("command"):
        table.add_row("trained with", markup(training["command"]))
    if training.get("data_sha256"):
        source = training.get("data_source") or training.get("data") or "data"
        table.add_row("trained on", markup(f"{source} (sha256 {training['data_sha256']})"))
    summary = mi.meta.get("summary")
    for key, value in (summary if isinstance(summary, dict) else {}).items():
        if value is None:
            continue
        text = (
            f"{value:,.4f}"
            if isinstance(value, float)
            else (f"{value:,}" if isinstance(value, int) else str(value))
        )
        table.add_row(markup(str(key).replace("_", " "), one_line=True), markup(text))
    Console().print(table)


def _chat_rows(table: Table, mi: ModelInfo) -> None:
    """A chat model's special tokens with their ids, and its chat template."""
    from minigpt_tui.safe_text import markup
    from model.tokenizer import TokenizerError

    try:
        tokens = mi.tokenizer().chat
    except TokenizerError as e:  # e.g. a trained BPE without the tokenizers library
        table.add_row("chat", markup(f"yes (special token ids unknown: {e})"))
    else:
        assert tokens is not None
        ids = ", ".join(f"{text} {i:,}" for text, i in tokens.by_text().items())
        table.add_row("chat", markup(f"yes: {ids}"))
    table.add_row("chat template", markup((mi.chat_template or "-").rstrip()))


def register(app: typer.Typer) -> None:
    app.command()(info)
