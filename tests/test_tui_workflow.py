"""Pilot tests of the chat app's workflow features: the settings file's key map, themes,
switching models (F6), the system text (F7) and history search (Ctrl+F)."""

from __future__ import annotations

import tomllib

from test_tui_support import make_app, run_async, wait_for
from textual.widgets import OptionList

from minigpt_tui.tui.screens.help import HelpScreen


async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: pilot.app.session is not None)
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
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ThemeScreen))
        await pilot.press("down")
        await pilot.pause()
        previewed = app.theme
        assert previewed != "nord"  # moving through the list previews
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ThemeScreen))
        assert app.theme == "nord" and not config_path().exists()  # Esc undoes, writes nothing
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ThemeScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = sorted(app.available_themes).index("gruvbox")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ThemeScreen))
        assert app.theme == "gruvbox"
        assert tomllib.loads(config_path().read_text())["theme"] == "gruvbox"
