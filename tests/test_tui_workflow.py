"""Pilot tests of the chat app's workflow features: the settings file's key map, themes,
switching models (F6), the system text (F7) and history search (Ctrl+F)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from test_tui_support import FakeBackend, make_app, run_async, said, wait_for
from textual.widgets import OptionList

from minigpt_tui.dialogue import Turn
from minigpt_tui.history import HistoryStore
from minigpt_tui.tui.screens.help import HelpScreen
from minigpt_tui.tui.widgets.status_bar import StatusBar


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.chat.session is not None)
    await pilot.pause()


@run_async
async def test_keys_remapped_from_the_settings_file() -> None:
    app = make_app()
    app.setup_workflow(keymap={"help": "f9"})
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)  # the old key is free
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        notes = str(app.screen.query_one("#help-notes").render())
        assert "Remapped by your settings file: help = f9." in notes


@run_async
async def test_settings_file_problem_is_shown_in_the_app_too() -> None:
    app = make_app()
    app.setup_workflow(notice="config file x: unknown key 'colour'")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert any("unknown key 'colour'" in n.message for n in app._notifications)


@run_async
async def test_theme_is_chosen_previewed_and_remembered() -> None:
    from minigpt_tui.config import config_path
    from minigpt_tui.tui.screens.theme import ThemeScreen

    app = make_app()
    app.setup_workflow(theme="nord")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert app.theme == "nord"  # from the settings file
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, ThemeScreen))
        await pilot.press("down")
        await pilot.pause()
        previewed = app.theme
        assert previewed != "nord"  # moving through the list previews
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ThemeScreen))
        assert app.theme == "nord" and not config_path().exists()  # Esc undoes, writes nothing
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, ThemeScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = sorted(app.available_themes).index("gruvbox")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ThemeScreen))
        assert app.theme == "gruvbox"
        assert tomllib.loads(config_path().read_text())["theme"] == "gruvbox"


async def pick(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    from minigpt_tui.tui.screens.model_picker import ModelPickerScreen

    await pilot.press("f6")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ModelPickerScreen))
    pilot.app.screen.query_one("#picker-path").value = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, ModelPickerScreen))


@run_async
async def test_switch_model_while_the_old_one_answers(tmp_path: Path) -> None:
    from minigpt_tui import recent
    from tests.helpers import make_model

    model = make_model(tmp_path, name="newer")
    app = make_app(
        FakeBackend("Good morrow, sweet lady, good morrow ", delay=0.05), max_new_tokens=1000
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        old = app.chat.backend
        app.chat.prompt_input.load_text("Speak.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.generating)
        await pick(pilot, str(model))
        await wait_for(pilot, lambda: said(app, "it answers from the next reply"), 20)
        assert app.chat.generating and app.chat.backend is old  # the old model keeps answering
        await pilot.press("escape")  # the reply ends: the new model takes over
        await wait_for(pilot, lambda: app.chat.backend is not old, 20)
        assert not app.chat.generating
        assert app.chat.backend.info.name == "newer" and app.chat.backend.name == "torch"
        assert app.query_one(StatusBar).model == "newer"
        notes = [str(n.render()) for n in app.chat.transcript.query(".note")]
        assert notes == ["── switched to newer (torch) ──"]
        assert app.chat.session.block_size == 32 and app.chat.session.tokenizer.kind == "char"
        await wait_for(pilot, lambda: recent.load() == [str(model.absolute())])  # listed next
        app.settings.max_new_tokens = 20
        app.chat.prompt_input.load_text("And now?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.session.turns) == 4, 20)
        assert [c.model for c in app.history.list()] == ["newer"]  # saved as the new model's


# The picker's bad inputs (tests/README.md lists them with the CLI's matrix): each ends in one
# line in a toast, the old model keeps answering, nothing is written.
PICKER_INPUTS = [
    ("not found", "{tmp}/nope"),
    ("a directory without a model", "{tmp}/empty"),
    ("a file that is not a model", "{tmp}/notes.txt"),
    ("a broken config.json", "{tmp}/broken"),
    ("markup in the name", "{tmp}/[bold red]x[/"),
    ("a run without checkpoints", "{tmp}/run"),
    ("a device file", "/dev/zero"),
]


@pytest.mark.parametrize("typed", [r[1] for r in PICKER_INPUTS], ids=[r[0] for r in PICKER_INPUTS])
@run_async
async def test_picker_bad_inputs_keep_the_old_model(typed: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{" * 1000)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        old = app.chat.backend
        before = sorted(p.name for p in tmp_path.iterdir())
        await pick(pilot, typed.format(tmp=tmp_path))
        await wait_for(pilot, lambda: said(app, "Could not load "), 10)
        assert app.chat.backend is old and app.load_error == ""
        assert app.query_one(StatusBar).state == "ready"
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert len(errors) == 1 and errors[0].startswith("Could not load ")
        assert "\n" not in errors[0] and errors[0].endswith("Still talking to the current model.")
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        app.chat.prompt_input.load_text("Still there?")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.session.turns) == 2)


@run_async
async def test_picker_empty_path_stays_open() -> None:
    from minigpt_tui.tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ModelPickerScreen) and app.chat.state == "ready"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ModelPickerScreen))


@run_async
async def test_picker_lists_bundled_and_recent_models(tmp_path: Path) -> None:
    from minigpt_tui import recent
    from minigpt_tui.tui.screens.model_picker import ModelPickerScreen

    recent.remember(tmp_path / "my-run")
    recent.remember(tmp_path / "my-model")
    recent.recent_path().write_text(recent.recent_path().read_text())  # a real file
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert shown == [
            "bundled  shakespeare-char",
            f"recent   {tmp_path / 'my-model'}",
            f"recent   {tmp_path / 'my-run'}",
        ]
        options.focus()
        options.highlighted = 1  # the newest recent one
        await pilot.press("enter")
        await wait_for(pilot, lambda: said(app, "Could not load "), 10)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert errors and "my-model" in errors[0]  # chosen, tried, not found


def test_recent_file_that_is_broken_is_empty_and_replaced() -> None:
    from minigpt_tui import recent

    path = recent.recent_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    for junk in ("{", '{"a": 1}', '[1, "", "x\\ny", "ok"]'):
        path.write_text(junk)
        assert recent.load() in ([], ["ok"])
    recent.remember(Path("/some/model"))
    assert recent.load()[0] == "/some/model"
    recent.remember(Path(__file__).parent.parent / "minigpt_tui" / "bundled" / "x")
    assert len(recent.load()) == 2  # bundled models are listed anyway: not kept


@run_async
async def test_system_text_is_edited_sent_saved_and_restored() -> None:
    from textual.widgets import TextArea

    from minigpt_tui.history import Conversation
    from minigpt_tui.tui.screens.system_text import SystemTextScreen

    app = make_app(FakeBackend(block_size=256))
    app.template.system = "Default persona."  # as the settings file would set it
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, SystemTextScreen))
        area = app.screen.query_one(TextArea)
        assert area.text == "Default persona."
        area.load_text("You are Juliet.\n\nROMEO:\nHi\n\nJULIET:\nHello")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SystemTextScreen))
        assert app.template.system.startswith("You are Juliet.")
        app.chat.prompt_input.load_text("Speak.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.session.turns) == 2)
        sent = app.chat.session.tokenizer.decode(app.chat.session.prompt().ids)
        assert sent.startswith("You are Juliet.\n\nROMEO:\nHi\n\nJULIET:\nHello\n\nROMEO:\nSpeak.")
        saved = app.history.list()[0]  # saved after the reply
        assert saved is not None and saved.settings["system"] == app.template.system
        await pilot.press("f7")  # Esc leaves it as it was
        await wait_for(pilot, lambda: isinstance(app.screen, SystemTextScreen))
        app.screen.query_one(TextArea).load_text("changed")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SystemTextScreen))
        assert app.template.system.startswith("You are Juliet.")
        # Reopening restores each conversation's own system text (or the default).
        old = Conversation(None, "", "chat", "m", [Turn("user", "Older talk")])
        app.history.save(old)
        app.chat.conversations.reopen(old.id)
        assert app.template.system == "Default persona."
        app.chat.conversations.reopen(saved.id)
        assert app.template.system.startswith("You are Juliet.")


@run_async
async def test_search_opens_the_conversation_at_the_message() -> None:
    from minigpt_tui.history import Conversation
    from minigpt_tui.tui.screens.search import SearchScreen
    from minigpt_tui.tui.widgets.transcript import MessageView

    store = HistoryStore.memory()
    long = [Turn("user" if i % 2 == 0 else "model", f"line {i} of idle talk") for i in range(30)]
    long[21] = Turn("model", "Here the needle hides in the hay.")
    store.save(Conversation(None, "", "chat", "m", long))
    store.save(Conversation(None, "", "chat", "m", [Turn("user", "no match in here")]))
    app = make_app(history=store)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        for key in "needle":
            await pilot.press(key)
        await pilot.press("enter")
        options = app.screen.query_one(OptionList)
        await wait_for(pilot, lambda: options.option_count == 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SearchScreen))
        await pilot.pause(0.2)
        assert len(app.chat.session.turns) == 30 and app.chat.session.turns[21] == long[21]
        views = list(app.chat.transcript.query(MessageView))
        hit = [v for v in views if v.has_class("-hit")]
        assert hit == [views[21]]
        region = app.chat.transcript.scrollable_content_region
        top = hit[0].virtual_region.y - int(app.chat.transcript.scroll_y)
        assert 0 <= top < region.height  # scrolled to the match, not left at the end
