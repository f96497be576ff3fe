"""`minigpt-tui chat`: the Textual chat app (see minigpt_tui/tui/app.py)."""

from __future__ import annotations

import typer

from minigpt_tui.errors import UserError
from model.backend import BACKENDS, check_backend
from model.errors import one_of


def chat(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model directory, run directory, or bundled model name."
    ),
    backend: str = typer.Option("auto", help=f"{one_of(BACKENDS)}; auto uses ONNX when exported."),
    mode: str = typer.Option("chat", help="chat (dialogue) or complete (continue a document)."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 means greedy."),
    top_k: int = typer.Option(0, help="Sample from the k most likely tokens; 0 is off."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass; 1.0 is off."),
    max_tokens: int = typer.Option(256, help="Longest reply, in tokens."),
    seed: int | None = typer.Option(None, help="Random seed, for repeatable replies."),
    user: str = typer.Option("ROMEO", help="Your speaker name in the dialogue."),
    bot: str = typer.Option("JULIET", help="The model's speaker name."),
    no_history: bool = typer.Option(False, "--no-history", help="Keep no conversation history."),
) -> None:
    """Chat with a model in a full-screen terminal app (F1 inside lists the keys)."""
    from concurrent.futures import ThreadPoolExecutor

    from minigpt_tui.dialogue import (
        MODES,
        SPEAKER_NAME_RULE,
        DialogueTemplate,
        valid_speaker_name,
    )
    from minigpt_tui.engine import load_backend
    from minigpt_tui.history import HistoryStore
    from minigpt_tui.models import resolve_model
    from minigpt_tui.sampling import SamplingSettings
    from model import modeldir

    if mode not in MODES:
        raise UserError(f"--mode must be {' or '.join(MODES)}, got {mode!r}")
    check_backend(backend)
    for name, flag in ((user, "--user"), (bot, "--bot")):
        if not valid_speaker_name(name):
            raise UserError(f"{flag} must be {SPEAKER_NAME_RULE}")
    settings = SamplingSettings(
        temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_tokens, seed=seed
    )
    settings.validate()
    path = resolve_model(model)
    info = modeldir.read(path)  # a missing or malformed model is one line, before the TUI
    history = HistoryStore.memory() if no_history else HistoryStore.default()
    # Start loading the model now, while Textual is imported and the screen drawn; the app's
    # loading worker waits for this future (errors surface there, on the error screen).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-model")
    loading = pool.submit(load_backend, path, backend)
    pool.shutdown(wait=False)

    from minigpt_tui.tui.app import ChatApp

    app = ChatApp(
        loading.result,
        model_label=info.name,
        settings=settings,
        template=DialogueTemplate(user=user.strip(), model=bot.strip()),
        mode=mode,
        history=history,
    )
    try:
        app.run()
    finally:
        history.close()
    if app.load_error:
        raise UserError(f"could not load the model: {app.load_error}")
    if app.return_code:
        raise SystemExit(app.return_code)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
