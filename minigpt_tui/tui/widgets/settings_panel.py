"""The side panel: sampling settings, editable at any time (also while a reply streams; Enter
on a field edits it, see setting_field.py), and the alternatives the model weighed for the
selected token."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Label, Static

from minigpt_tui.dialogue import MODES, DialogueTemplate, valid_speaker_name
from minigpt_tui.generation import TokenEvent
from minigpt_tui.sampling import SamplingError, SamplingSettings
from minigpt_tui.tui.widgets.setting_field import ChoiceField, SettingField


def _seed(text: str) -> int | None:
    if not text.strip():
        return None  # empty: a fresh random seed
    seed = int(text)
    if seed < 0:
        raise ValueError("a seed is >= 0")
    return seed


# field id -> (label, SamplingSettings attribute, parser)
FIELDS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "temperature": ("temp", "temperature", float),
    "top_k": ("top-k", "top_k", int),
    "top_p": ("top-p", "top_p", float),
    "max_tokens": ("max tok", "max_new_tokens", int),
    "seed": ("seed", "seed", _seed),
}


def show(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    return str(value)


class TokenInspector(Static):
    """The selected token and the most likely alternatives, with their probabilities.
    Clicking an alternative continues the reply from it (a new branch)."""

    class Picked(Message):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n  # which alternative, 0 the likeliest

    def on_click(self, event: events.Click) -> None:
        row = event.y - 2  # below the "chosen" and "likeliest:" lines
        if row >= 0:
            self.post_message(self.Picked(row))

    def show_token(self, token: TokenEvent | None, decode: Callable[[int], str]) -> None:
        if token is None:
            self.update("no token selected")
            return
        lines = [f"chosen  {token_label(token.text):<6} {token.prob:6.1%}", "likeliest:"]
        lines += [f"  {token_label(decode(t)):<12} {p:6.1%}" for t, p in token.alternatives]
        self.update("\n".join(lines))


def token_label(text: str) -> str:
    """A token as it can be seen: spaces and line breaks get symbols."""
    if not text:
        return "∅"
    shown = text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return shown if shown.isprintable() else repr(shown)[1:-1]


class SettingsPanel(VerticalScroll, can_focus=False):
    class ModeChanged(Message):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

    class NamesChanged(Message):
        pass

    def __init__(
        self, settings: SamplingSettings, template: DialogueTemplate, mode: str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.template = template
        self.initial_mode = mode  # the mode is the app's: the panel shows it and asks to change it

    def compose(self) -> ComposeResult:
        # One grid of label | field rows (app.tcss), no container a row: fewer widgets to style.
        for field_id, (label, attr, _) in FIELDS.items():
            yield Label(label)
            yield SettingField(show(getattr(self.settings, attr)), label, r"[0-9.\-]*", id=field_id)
        yield Label("mode")
        yield ChoiceField(self.initial_mode, "mode", MODES, id="mode")
        yield Label("you", classes="speaker-name")
        yield SettingField(self.template.user, "your name", id="user_name", classes="speaker-name")
        yield Label("bot", classes="speaker-name")
        yield SettingField(
            self.template.model, "the bot's name", id="bot_name", classes="speaker-name"
        )
        yield Label("selected token", id="inspector-title", classes="-hidden")
        yield TokenInspector(id="inspector", classes="-hidden", markup=False)

    def sync(self) -> None:
        """Show the current settings (after a key changed one)."""
        for field_id, (_, attr, parse) in FIELDS.items():
            box = self.query_one(f"#{field_id}", SettingField)
            try:
                same = parse(box.value) == getattr(self.settings, attr)
            except ValueError:
                same = False
            if not same:
                box.value = show(getattr(self.settings, attr))

    def on_setting_field_changed(self, event: SettingField.Changed) -> None:
        box = event.field
        event.stop()
        if box.id == "mode":
            self.post_message(self.ModeChanged(event.value))  # the app ignores its own mode
            return
        if box.id in ("user_name", "bot_name"):
            name = event.value.strip()
            box.mark_invalid(not valid_speaker_name(name))
            if valid_speaker_name(name):
                if box.id == "user_name":
                    self.template.user = name
                else:
                    self.template.model = name
                self.post_message(self.NamesChanged())
            return
        if box.id not in FIELDS:
            return
        _, attr, parse = FIELDS[box.id]
        try:
            value = parse(event.value)
            trial = dataclasses.replace(self.settings, **{attr: value})
            trial.validate()
        except (ValueError, SamplingError):
            box.mark_invalid(True)
            return
        box.mark_invalid(False)
        # The running Generation reads these every token: the next one uses the new value.
        setattr(self.settings, attr, value)

    def show_names(self, on: bool) -> None:
        """Show the speaker names (a text continuer's dialogue), or not (a chat model's
        turns are roles: You and Assistant)."""
        for widget in self.query(".speaker-name"):
            widget.display = on

    def set_mode(self, mode: str) -> None:
        """Show the mode the app is in now (not a change the user asked for)."""
        field = self.query_one("#mode", ChoiceField)
        with field.prevent(SettingField.Changed):
            field.value = mode
