"""CLI commands, one module each; `register_all` attaches them to the typer app."""

from __future__ import annotations

import importlib

import typer

# Each module defines `register(app)`. Modules import heavy libraries inside their commands.
MODULES = [
    "data",
    "train",
    "evaluate",
    "info",
    "generate",
    "chat",
    "export",
    "convert",
    "watch",
    "config",
]


def register_all(app: typer.Typer) -> None:
    for name in MODULES:
        try:
            module = importlib.import_module(f"minigpt_tui.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"minigpt_tui.commands.{name}":
                continue  # not written yet
            raise
        module.register(app)
