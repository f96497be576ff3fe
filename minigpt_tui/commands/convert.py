"""`minigpt-tui convert hf`: import GPT-2 weights from a local Hugging Face directory."""

from __future__ import annotations

from pathlib import Path

import typer

convert_app = typer.Typer(help="Import models from other formats.", no_args_is_help=True)


@convert_app.command("hf")
def hf(
    src: Path = typer.Argument(..., help="Directory with a GPT-2 config.json + model.safetensors."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    force: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Convert OpenAI GPT-2 weights (Hugging Face layout) into a minigpt-tui model directory."""
    from rich.console import Console

    from minigpt_tui.safe_text import markup
    from model.convert import convert_hf

    path = convert_hf(src, out, force=force)
    Console(stderr=True).print(f"[green]wrote[/] {markup(path)}")


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")
