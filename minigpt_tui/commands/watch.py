"""`minigpt-tui watch RUN_DIR`: follow a training run live (loss curves, speed, ETA, samples)."""

from __future__ import annotations

from pathlib import Path

import typer

from minigpt_tui.commands import require_terminal
from minigpt_tui.errors import UserError
from minigpt_tui.tui.metrics import metrics_path


def watch(
    run: Path = typer.Argument(..., help="A training run directory (or its metrics.jsonl)."),
) -> None:
    """Follow a training run's metrics.jsonl live; keeps going when the run ends or restarts.

    Keys: c chats with the run (chat --follow), r reloads, q quits."""
    run = run.expanduser()
    if not run.exists() and not run.parent.is_dir():  # a run not started yet is fine: wait
        raise UserError(f"run directory not found: {run}")
    if run.is_file() and run.suffix != ".jsonl":
        raise UserError(f"{run} is not a run directory or a metrics .jsonl file")

    require_terminal(
        "watch", f"the run's events are in {metrics_path(run)}, one JSON object a line"
    )
    from minigpt_tui.tui.watch_app import WatchApp

    if WatchApp(run).run() == "chat":
        from minigpt_tui.commands.chat import chat

        chat(
            model=str(run.parent if run.is_file() else run),
            backend=None,
            mode="chat",
            temperature=None,
            top_k=None,
            top_p=None,
            max_tokens=None,
            seed=None,
            user=None,
            bot=None,
            follow=True,
            no_history=False,
        )


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
