"""The first model arrives: the session starts with it, the status bar says which model talks,
and a message typed meanwhile is sent. If it cannot be loaded, the error screen says why (and
`chat` exits with that reason). Models that arrive later are switches (tui/workflow.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.tui.loading import LoadedModel
from minigpt_tui.tui.screens.error import ErrorScreen
from minigpt_tui.tui.session import ChatSession
from minigpt_tui.tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


def model_loaded(app: ChatApp, model: LoadedModel) -> None:
    if app.session is not None:  # another model, while this one keeps answering
        app.workflow.model_loaded(model)
        return
    backend = app.backend = model.backend
    app.session = ChatSession(
        model.tokenizer, backend.block_size, app.settings, app.template, app.mode
    )
    status = app.query_one(StatusBar)
    status.model = app.model_label or backend.info.name
    status.show_backend(backend)
    status.state = "ready"
    app.workflow.first_model_loaded()
    app.show_mode()
    app.sync_context()
    if app.sender.send_when_loaded:
        app.sender.send()


def model_failed(app: ChatApp, reason: str) -> None:
    if app.session is not None:  # a switch failed: keep talking to the model we have
        app.workflow.model_failed(reason)
        return
    app.load_error = reason
    app.push_screen(ErrorScreen("Could not load the model", app.load_error))
