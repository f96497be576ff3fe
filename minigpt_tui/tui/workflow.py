"""The chat app's app-wide features, kept out of app.py: switching models (F6 and `--follow`),
the system text (F7), themes (F10), history search (Ctrl+F), and the settings file's key map.

Switching: the new model loads through the app's ModelLoader (a worker) while the old one keeps
answering; it takes over between replies, never mid-reply (a model ready during a reply waits
for its end, `Chat.ReplyEnded`). The chat's session keeps its turns: only its tokenizer and
block size change (`Chat.take_over`). The transcript and the status bar say which model talks.

Screens are imported when first opened, so that startup stays quick.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App

from minigpt_tui.dialogue import RoleTemplate
from minigpt_tui.tui.chat.chat import Chat
from minigpt_tui.tui.loading import LoadedModel, ModelLoader

if TYPE_CHECKING:
    from minigpt_tui.tui.follow import Checkpoint, CheckpointLoader, RunWatcher
    from model.backend import Backend


class Workflow:
    def __init__(self, app: App[Any], models: ModelLoader) -> None:
        self.app = app
        self.models = models  # the app's: loads each model in a worker
        self._chat: Chat | None = None  # the chat the models talk in (from `mount`)
        self.model_path: Path | None = None  # the model talking now (None: not from a path)
        self.backend_name = "auto"  # what models picked with F6 load with
        self.keymap: dict[str, str] = {}
        self.theme: str | None = None
        self.notice: str | None = None  # why the settings file was not used, if it was not
        self.follow: RunWatcher | None = None
        self.checkpoints: CheckpointLoader | None = None
        # The switch in progress: what loads (for the transcript), from where, and the model
        # that finished loading during a reply and waits for its end.
        self.loading: str | None = None
        self.loading_path: Path | None = None
        self.loading_checkpoint: Checkpoint | None = None
        self.pending: LoadedModel | None = None

    def configure(
        self,
        *,
        model_path: Path | None = None,
        backend_name: str = "auto",
        keymap: dict[str, str] | None = None,
        theme: str | None = None,
        notice: str | None = None,
        follow: RunWatcher | None = None,
        checkpoints: CheckpointLoader | None = None,
    ) -> None:
        self.model_path = model_path
        self.backend_name = backend_name
        self.keymap = dict(keymap or {})
        self.theme = theme
        self.notice = notice
        self.follow = follow
        self.checkpoints = checkpoints

    @property
    def chat(self) -> Chat:
        assert self._chat is not None, "mount() first"
        return self._chat

    # ----------------------------------------------------------------- start
    def mount(self, chat: Chat) -> None:
        """The chat is on screen: the settings file's theme and keys apply, `--follow` polls."""
        self._chat = chat
        if self.theme:
            self.app.theme = self.theme
        if self.keymap:
            self.app.set_keymap(self.keymap)
        if self.notice:
            self.chat.say(f"{self.notice}; using the defaults", severity="warning", timeout=10)
        if self.follow is not None:
            from minigpt_tui.tui.follow import POLL_SECONDS

            self.app.set_interval(POLL_SECONDS, self.poll_run)

    def first_model_loaded(self) -> None:
        if self.follow is not None and self.checkpoints is not None:
            from minigpt_tui.tui.follow import Checkpoint

            now = Checkpoint.read(self.follow.current).describe()
            self.chat.show_following(f"following · {now}", self.checkpoints.label())
        if self.model_path is not None:
            self._remember(self.follow.run if self.follow is not None else self.model_path)

    def help_notes(self, notes: str) -> str:
        """F1's notes, with the keys the settings file moved (the table shows the defaults)."""
        if not self.keymap:
            return notes
        moved = ", ".join(f"{action} = {keys}" for action, keys in sorted(self.keymap.items()))
        return f"{notes} Remapped by your settings file: {moved}."

    # ----------------------------------------------------------------- switching
    def poll_run(self) -> None:
        """`--follow`: load the run's newest checkpoint when there is a newer one."""
        if self.follow is None or self.checkpoints is None:
            return
        if self.chat.session is None or self.loading is not None:
            return  # the first model is still loading, or a switch is under way
        path = self.follow.poll()
        if path is None:
            return
        from minigpt_tui.tui.follow import Checkpoint

        ckpt = Checkpoint.read(path)
        loader = self.checkpoints
        self.start(lambda: loader(path), ckpt.describe(), path=None, checkpoint=ckpt)

    def start(
        self,
        loader: Callable[[], Backend],
        label: str,
        *,
        path: Path | None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.loading, self.loading_path, self.loading_checkpoint = label, path, checkpoint
        self.chat.show_idle(f"loading {label}…")
        self.models.load(loader)

    def model_loaded(self, model: LoadedModel) -> None:
        if self.chat.generating:  # never mid-reply: take over when this reply ends
            self.pending = model
            self.chat.say(f"{self.loading} is ready: it answers from the next reply.", timeout=3)
            return
        self.apply(model)

    def between_replies(self) -> None:
        if self.pending is not None:
            model, self.pending = self.pending, None
            self.apply(model)

    def apply(self, model: LoadedModel) -> None:
        label = self.loading or model.backend.info.name
        if self.loading_checkpoint is not None and self.checkpoints is not None:
            self.chat.take_over(
                model, f"── the run's checkpoint at {label} answers from here ──", None
            )
            self.chat.show_following(f"following · {label}", self.checkpoints.label())
        else:
            name = model.backend.info.name
            self.chat.take_over(model, f"── switched to {name} ({model.backend.name}) ──", name)
        if self.loading_path is not None:
            self.model_path = self.loading_path
            self._remember(self.loading_path)
        self.loading = self.loading_path = self.loading_checkpoint = None

    def model_failed(self, reason: str) -> None:
        label, following = self.loading, self.loading_checkpoint is not None
        self.loading = self.loading_path = self.loading_checkpoint = None
        self.chat.show_idle("ready")
        if following:  # pruned meanwhile, or a disk hiccup: the next checkpoint comes along
            self.chat.say(
                f"Could not load the checkpoint at {label}: {reason}; waiting for the next one.",
                severity="warning",
                timeout=6,
            )
        else:
            self.chat.say(
                f"Could not load {label}: {reason}. Still talking to the current model.",
                severity="error",
                timeout=10,
            )

    def pick_model(self) -> None:
        from minigpt_tui import recent
        from minigpt_tui.models import bundled_models
        from minigpt_tui.tui.screens.model_picker import ModelPickerScreen

        if self.loading is not None:
            self.chat.say(f"Still loading {self.loading}.", timeout=3)
            return
        current = str(self.model_path) if self.model_path is not None else self.chat.model_label
        screen = ModelPickerScreen(bundled_models(), recent.load(), current)
        self.app.push_screen(screen, self._picked)

    def _picked(self, choice: str | None) -> None:
        if not choice or self.loading is not None:
            return
        from minigpt_tui.generation import load_backend
        from minigpt_tui.models import resolve_model

        path = resolve_model(choice)
        backend = self.backend_name
        if self.follow is not None:
            self.follow = None  # a model picked by hand ends following the run
            self.chat.show_following("")
            self.chat.say("Stopped following the run.", timeout=3)
        self.start(lambda: load_backend(path, backend), choice, path=path)

    def _remember(self, path: Path) -> None:
        """Add to the picker's list, off the UI thread (the write is fsynced)."""
        from minigpt_tui import recent

        self.app.run_worker(lambda: recent.remember(path), thread=True, exit_on_error=False)

    # ----------------------------------------------------------------- system text, theme
    def edit_system_text(self) -> None:
        from minigpt_tui.tui.screens.system_text import SystemTextScreen

        session = self.chat.session
        char = session is not None and session.tokenizer.kind == "char"
        if session is not None and session.tokenizer.chat is not None:
            hint = (
                "The system turn of this chat model: instructions or a persona it answers "
                "under. It is always in the prompt and saved with the conversation."
            )
        elif char:
            hint = (
                "This character-level model knows only its training characters and keeps the "
                "play layout; a system text works best with GPT-2-BPE models."
            )
        else:
            hint = (
                "The dialogue starts with this text: a persona, instructions, a few example "
                "turns. It is always in the prompt and saved with the conversation."
            )
        screen = SystemTextScreen(self.chat.template.system, hint)
        self.app.push_screen(screen, self._system_set)

    def _system_set(self, text: str | None) -> None:
        if text is None:
            return
        self.chat.template.system = text.strip("\n")
        roles = isinstance(self.chat.template, RoleTemplate)
        cleared = "no system turn" if roles else "the plain play layout"
        self.chat.say(
            f"System text set ({len(text.strip())} characters)."
            if text.strip()
            else f"System text cleared: {cleared}.",
            timeout=3,
        )
        self.chat.sync_context()

    def pick_theme(self) -> None:
        from minigpt_tui.tui.screens.theme import ThemeScreen

        themes = sorted(self.app.available_themes)
        self.app.push_screen(ThemeScreen(themes, self.app.theme), self._theme_set)

    def _theme_set(self, name: str | None) -> None:
        if name is None:
            return
        from minigpt_tui.config import config_path, remember_theme

        self.app.theme = name
        problem = remember_theme(name)
        if problem:
            self.chat.say(problem, severity="warning", timeout=8)
        else:
            self.chat.say(f"Theme {name}, remembered in {config_path()}.", timeout=3)

    # ----------------------------------------------------------------- search
    def search(self) -> None:
        from minigpt_tui.tui.screens.search import SearchScreen

        self.app.push_screen(SearchScreen(self.chat.history), self._open_hit)

    def _open_hit(self, hit: tuple[int, int] | None) -> None:
        if hit is not None:
            self.chat.conversations.open_at(*hit)
