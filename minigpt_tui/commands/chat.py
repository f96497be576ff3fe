"""`minigpt-tui chat`: the Textual chat app (see minigpt_tui/tui/app.py).

Settings come from the flags, else the settings file (minigpt_tui/config.py), else the defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minigpt_tui.commands import require_terminal
from minigpt_tui.errors import UserError
from model.backend import BACKENDS, check_backend
from model.errors import one_of

if TYPE_CHECKING:
    from concurrent.futures import Future

    from minigpt_tui.config import Config
    from minigpt_tui.history import HistoryStore
    from minigpt_tui.sampling import SamplingSettings
    from minigpt_tui.tui.follow import CheckpointLoader, RunWatcher
    from model.modeldir import ModelInfo


def chat(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model directory, run directory, or bundled model name."
    ),
    backend: str | None = typer.Option(
        None, help=f"{one_of(BACKENDS)}; auto (the default) uses ONNX when exported."
    ),
    mode: str = typer.Option("chat", help="chat (dialogue) or complete (continue a document)."),
    temperature: float | None = typer.Option(
        None, "--temperature", "-t", help="0 means greedy. [default: 0.8]"
    ),
    top_k: int | None = typer.Option(
        None, help="Sample from the k most likely tokens; 0 is off. [default: 0]"
    ),
    top_p: float | None = typer.Option(None, help="Nucleus sampling mass; 1.0 is off."),
    max_tokens: int | None = typer.Option(None, help="Longest reply, in tokens. [default: 256]"),
    seed: int | None = typer.Option(None, help="Random seed, for repeatable replies."),
    user: str | None = typer.Option(
        None,
        help="Your speaker name (a chat model's turns are You and Assistant). [default: ROMEO]",
    ),
    bot: str | None = typer.Option(None, help="The model's speaker name. [default: JULIET]"),
    follow: bool = typer.Option(
        False,
        "--follow",
        help="--model is a training run: switch to each newer checkpoint between replies.",
    ),
    no_history: bool = typer.Option(False, "--no-history", help="Keep no conversation history."),
) -> None:
    """Chat with a model in a full-screen terminal app (F1 inside lists the keys).

    Options not given come from the settings file ('minigpt-tui config path' says where),
    then from the defaults."""
    from minigpt_tui.dialogue import MODES, DialogueTemplate
    from minigpt_tui.history import HistoryStore

    if mode not in MODES:
        raise UserError(f"--mode must be {' or '.join(MODES)}, got {mode!r}")
    cfg, problem = _settings_file()
    backend = check_backend(backend or cfg.backend or "auto")
    user, bot = _speakers(cfg, user, bot)
    settings = _sampling_settings(
        cfg, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_tokens, seed=seed
    )
    path, info, watcher, checkpoints = _open_model(model, cfg, backend, follow)
    require_terminal("chat", "in pipes and scripts use 'minigpt-tui generate'")
    history = HistoryStore.memory() if no_history else HistoryStore.default()
    loading = _start_loading(path, backend, watcher, checkpoints)

    from minigpt_tui.tui.app import ChatApp

    app = ChatApp(
        loading.result,
        model_label=info.name,
        settings=settings,
        template=DialogueTemplate(user=user.strip(), model=bot.strip(), system=cfg.system or ""),
        mode=mode,
        history=history,
    )
    app.setup_workflow(
        model_path=path,
        backend_name=backend,
        keymap=cfg.keys,
        theme=cfg.theme,
        notice=problem,
        follow=watcher,
        checkpoints=checkpoints,
    )
    _run(app, history, checkpoints)


def _run(app: Any, history: HistoryStore, checkpoints: CheckpointLoader | None) -> None:
    """Run the app; then the quit-time word on what failed (loading, a save), and its exit."""
    try:
        app.run()
        # A save that failed (another program holding the database): one more try, waiting
        # for it, and if that fails too an error line and a non-zero exit, never silence.
        unsaved = history.flush() if history.unsaved_error() else None
    finally:
        history.close()
        if checkpoints is not None:
            checkpoints.close()
    if app.load_error:
        raise UserError(f"could not load the model: {app.load_error}")
    if unsaved:
        raise UserError(f"{unsaved}: what this session said since is lost")
    if app.return_code:
        raise SystemExit(app.return_code)


def _settings_file() -> tuple[Config, str | None]:
    """The settings file, or the defaults with the one-line problem that kept it out."""
    from minigpt_tui import config as settings_file
    from minigpt_tui.tui.keys import BINDINGS

    cfg, problem = settings_file.load(BINDINGS)  # every value checked, as `config show` does
    if problem is not None:  # one line, and the app starts with the defaults
        print(f"warning: {problem}; using the defaults", file=sys.stderr)
        cfg = settings_file.Config()
    return cfg, problem


def _speakers(cfg: Config, user: str | None, bot: str | None) -> tuple[str, str]:
    """The user's and the model's speaker names: the flags, else the file's, else the play's."""
    from minigpt_tui.dialogue import SPEAKER_NAME_RULE, valid_speaker_name

    user = user if user is not None else cfg.speakers.get("user", "ROMEO")
    bot = bot if bot is not None else cfg.speakers.get("bot", "JULIET")
    for name, flag in ((user, "--user"), (bot, "--bot")):
        if not valid_speaker_name(name):
            raise UserError(f"{flag} must be {SPEAKER_NAME_RULE}")
    return user, bot


def _sampling_settings(cfg: Config, **flags: Any) -> SamplingSettings:
    """The flags given (not None) over the file's [sampling] table, checked."""
    from minigpt_tui.config import sampling_fields
    from minigpt_tui.sampling import SamplingSettings

    given = {k: v for k, v in flags.items() if v is not None}
    settings = SamplingSettings(**{**sampling_fields(cfg.sampling), **given})
    settings.validate()
    return settings


def _open_model(
    model: str | None, cfg: Config, backend: str, follow: bool
) -> tuple[Path, ModelInfo, RunWatcher | None, CheckpointLoader | None]:
    """The model's path and config (a bad model: one line, now); with --follow, the run's
    watcher and the loader of its checkpoints."""
    from minigpt_tui.models import resolve_model
    from model import modeldir

    path = resolve_model(model if model is not None else cfg.model)
    watcher = checkpoints = None
    if follow:
        from minigpt_tui.tui.follow import CheckpointLoader, RunWatcher, follow_backend

        watcher = RunWatcher.open(path)  # a run directory with a checkpoint, or one line
        checkpoints = CheckpointLoader(follow_backend(backend))
    info = modeldir.read(watcher.current if watcher else path)
    return path, info, watcher, checkpoints


def _start_loading(
    path: Path, backend: str, watcher: RunWatcher | None, checkpoints: CheckpointLoader | None
) -> Future[Any]:
    """Start loading the model now, while Textual is imported and the screen drawn; the app's
    loading worker waits for this future (errors surface there, on the error screen)."""
    from concurrent.futures import ThreadPoolExecutor

    from minigpt_tui.generation import load_backend

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-model")
    if watcher is not None and checkpoints is not None:
        loading = pool.submit(watcher.load_first, checkpoints)
    else:
        loading = pool.submit(load_backend, path, backend)
    pool.shutdown(wait=False)
    return loading


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
