"""Snapshot of the chat with a chat model: turns shown as You and Assistant, no speaker names
to edit in the settings panel, a reply that ended at <|end|> (not shown). Deterministic: a
scripted chat backend, fixed seed and terminal size. Update after an intended change with
`pytest tests/test_tui_chat_model_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from chat_model import FakeChatBackend
from test_tui_snapshots import DAY, conversation, loaded, utc  # noqa: F401 (a fixture)
from test_tui_support import make_app, wait_for

from minigpt_tui.tui.widgets.status_bar import StatusBar


def test_chat_model_conversation(snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = make_app(FakeChatBackend("Then I will walk with you.", block_size=512), temperature=0.0)
    app.template.system = "You are a courteous companion."

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await loaded(pilot)
        conv = conversation()
        conv.turns = conv.turns[:3]
        pilot.app.chat.conversations.open(conv)
        pilot.app.chat.sender.regenerate()  # the reply to the last message, streamed
        await wait_for(pilot, lambda: not pilot.app.chat.generating and pilot.app.chat.last_stats)
        status = pilot.app.query_one(StatusBar)
        status.ttft = status.tokens_per_sec = -1.0  # timings differ run to run
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
