"""Pilot tests of the chat with a chat model (a tokenizer with chat tokens): turns in roles laid
out by model/chat.py, the system text as the system turn, replies ending at <|end|>, and every
feature of the chat (branches, regenerate, edit, compare, score, the token inspector, history,
search, export) on such a conversation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_model import FakeChatBackend, make_chat_model
from test_tui import replies, send
from test_tui_support import FakeBackend, make_app, run_async, said, wait_for

from minigpt_tui.dialogue import RoleTemplate, Turn
from minigpt_tui.generation import load_backend
from minigpt_tui.history import HistoryStore
from minigpt_tui.tui.app import ChatApp
from minigpt_tui.tui.chat.inspecting import open_compare, open_score
from minigpt_tui.tui.loading import LoadedModel
from minigpt_tui.tui.screens.compare import CompareScreen
from minigpt_tui.tui.screens.score import ScoreScreen
from minigpt_tui.tui.widgets.settings_panel import TokenInspector
from minigpt_tui.tui.widgets.transcript import Transcript
from model import chat

SIZE = (100, 30)
SYSTEM = "Be brief."


def make_chat_app(
    backend: FakeChatBackend | None = None, history: HistoryStore | None = None, **settings: object
) -> ChatApp:
    app = make_app(backend or FakeChatBackend(), history=history, **settings)  # type: ignore[arg-type]
    app.template.system = SYSTEM
    return app


def messages(*texts: str, system: str = SYSTEM) -> list[dict[str, str]]:
    """A conversation: the system turn, then the texts as user and assistant turns."""
    roles = ["user", "assistant"]
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]


async def reply_to(pilot, text: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """Send `text` and wait for the conversation's `n`th reply."""
    await send(pilot, text)
    await wait_for(pilot, lambda: not pilot.app.chat.generating and len(replies(pilot.app)) == n)


@run_async
async def test_a_chat_model_speaks_in_roles_with_the_system_turn() -> None:
    backend = FakeChatBackend("Hi there.")
    app = make_chat_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello", 1)
        tok = backend.tokenizer
        assert isinstance(app.chat.template, RoleTemplate)
        assert backend.prompts[-1] == chat.prompt_ids(tok, messages("Hello"))
        assert replies(app) == ["Hi there."], "the reply ends at <|end|>, which is not shown"
        views = app.chat.transcript.messages
        assert [v.speaker for v in views] == ["You", "Assistant"]
        assert all(t.token != tok.chat.end for t in views[1].tokens)  # type: ignore[union-attr]
        assert not any(row.display for row in app.query(".speaker-name")), "no names to edit"
        await reply_to(pilot, "And you?", 2)
        expected = chat.prompt_ids(tok, messages("Hello", "Hi there.", "And you?"))
        assert backend.prompts[-1] == expected
        assert app.chat.last_stats is not None and app.chat.last_stats.stop_reason == "end"


@run_async
async def test_the_window_drops_the_oldest_exchanges_but_never_the_system_turn() -> None:
    backend = FakeChatBackend("Fine.", block_size=64)
    app = make_chat_app(backend, max_new_tokens=8)
    async with app.run_test(size=SIZE) as pilot:
        said_so_far: list[str] = []
        for i, text in enumerate(["Good morning", "How are you", "Tell me more", "And then"]):
            await reply_to(pilot, text, i + 1)
            said_so_far += [text, "Fine."]
        tok = backend.tokenizer
        budget = 64 - 8  # the block less the room kept for the reply
        fitted = chat.fit(tok, messages(*said_so_far[:-1]), budget)
        assert fitted.dropped > 0 and backend.prompts[-1] == fitted.ids
        assert backend.prompts[-1][:2] == [tok.chat.bos, tok.chat.system]  # type: ignore[union-attr]
        assert said(app, "oldest turns no longer fit")


@run_async
async def test_regenerate_edit_and_branches_keep_the_role_layout() -> None:
    backend = FakeChatBackend("Hi there.")
    app = make_chat_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello", 1)
        first = backend.prompts[-1]
        backend.script = [*backend.tokenizer.encode("Hello."), backend.script[-1]]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(backend.prompts) == 2 and not app.chat.generating)
        await wait_for(pilot, lambda: len(replies(app)) == 1)
        assert backend.prompts[-1] == first, "regenerate asks with the same prompt"
        assert replies(app) == ["Hello."]
        assert app.chat.session.branches.position(1) == (2, 2)  # type: ignore[union-attr]
        app.chat.transcript.post_message(Transcript.Edit(0))
        await wait_for(pilot, lambda: app.chat.branching.edit_at == 0)
        app.chat.prompt_input.load_text("Good evening")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(backend.prompts) == 3 and not app.chat.generating)
        tok = backend.tokenizer
        assert backend.prompts[-1] == chat.prompt_ids(tok, messages("Good evening"))
        assert app.chat.session.branches.position(0) == (2, 2)  # type: ignore[union-attr]
        assert [v.speaker for v in app.chat.transcript.messages] == ["You", "Assistant"]


@run_async
async def test_an_alternative_that_ends_the_turn_is_no_branch() -> None:
    backend = FakeChatBackend("Hi there.", sharpness=4.0)
    app = make_chat_app(backend, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello", 1)
        tok = backend.tokenizer
        assert tok.chat is not None
        await pilot.press("ctrl+t")
        app.chat.transcript.focus()
        await pilot.press("end")  # the reply's last token: "." (<|end|> is no token of it)
        view = app.chat.transcript.last_model_view()
        assert view is not None and view.selected == len("Hi there.") - 1
        inspector = str(app.query_one(TokenInspector).render())
        assert inspector.startswith("chosen  .")
        app.chat.branching.branch_at(1, 0, tok.chat.end)
        await pilot.pause()
        assert said(app, "That alternative ends the reply")
        assert len(backend.prompts) == 1
        app.chat.branching.branch_at(1, 1, tok.encode("o")[0])  # "Ho..." instead of "Hi..."
        await wait_for(pilot, lambda: len(backend.prompts) == 2 and not app.chat.generating)
        prompt = chat.prompt_ids(tok, messages("Hello"))
        assert backend.prompts[-1] == [*prompt, *tok.encode("Ho")]
        assert replies(app)[0].startswith("Ho")


@run_async
async def test_history_search_and_export_of_a_chat_model_conversation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = HistoryStore(tmp_path / "history.db")
    backend = FakeChatBackend("Hi there.")
    app = make_chat_app(backend, history=store)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello", 1)
        await reply_to(pilot, "Again", 2)
        asked = backend.prompts[-1]
        conv = store.list()[0]
        assert conv.id is not None
        assert store.load(conv.id).settings["layout"] == "roles"  # type: ignore[union-attr]
        assert store.load(conv.id).settings["system"] == SYSTEM  # type: ignore[union-attr]

        app.chat.conversations.new()
        app.chat.template.system = "Something else."
        app.chat.conversations.reopen(conv.id)
        await pilot.pause()
        assert app.chat.template.system == SYSTEM, "the conversation's own system turn"
        assert [v.speaker for v in app.chat.transcript.messages][:2] == ["You", "Assistant"]
        await pilot.press("ctrl+r")  # the reopened conversation asks with the same ids
        await wait_for(pilot, lambda: len(backend.prompts) == 3 and not app.chat.generating)
        assert backend.prompts[-1] == asked

        hits = store.search("Again")
        assert [(h.conversation_id, h.seq) for h in hits] == [(conv.id, 2)]
        app.chat.conversations.open_at(conv.id, 2)
        await pilot.pause()
        assert app.chat.transcript.messages[2].has_class("-hit")

        written = app.chat.saver.export(tmp_path / "talk.jsonl", app.chat.template)
        record = json.loads(written.read_text())
        assert record == {"messages": messages("Hello", "Hi there.", "Again", "Hi there.")}
        assert chat.parse_record(record), "data prepare reads it"
        md = app.chat.saver.export(tmp_path / "talk.md", app.chat.template).read_text()
        assert "**You:**\n\nHello" in md and "**Assistant:**\n\nHi there." in md


@run_async
async def test_compare_panes_answer_as_the_assistant_and_score_works() -> None:
    backend = FakeChatBackend("Hi there.")
    app = make_chat_app(backend, temperature=0.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await reply_to(pilot, "Hello", 1)
        open_compare(app.chat)
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        screen.query_one("#compare-prompt").value = "Once more"  # type: ignore[attr-defined]
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: all(p.finished.is_set() for p in screen.panes), 20)
        assert [p.text for p in screen.panes] == ["Hi there.", "Hi there."]
        tok = backend.tokenizer
        expected = chat.prompt_ids(tok, messages("Hello", "Hi there.", "Once more"))
        assert backend.prompts[-1] == expected
        screen.query_one("#compare-prompt").value = " "  # type: ignore[attr-defined]
        for pane in screen.panes:
            pane.finished.clear()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: all(p.finished.is_set() for p in screen.panes), 20)
        assert "write a message" in str(screen.panes[0].query_one(".pane-stats").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen))

        open_score(app.chat)
        await wait_for(pilot, lambda: isinstance(app.screen, ScoreScreen))
        await pilot.pause()
        score = app.screen
        assert isinstance(score, ScoreScreen)
        score.query_one("#score-input").load_text("Hi there.")  # type: ignore[attr-defined]
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: score.score is not None, 20)
        assert score.score is not None and score.score.n == len(tok.encode("Hi there."))


@run_async
async def test_switching_between_a_text_model_and_a_chat_model_changes_the_layout() -> None:
    text_model, chat_model = FakeBackend("Good morrow.\n\n"), FakeChatBackend("Hi there.")
    app = make_app(text_model)
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "Hello", 1)
        assert [v.speaker for v in app.chat.transcript.messages] == ["ROMEO", "JULIET"]
        app.chat.take_over(LoadedModel(chat_model, chat_model.tokenizer), "── chat ──", "chat")
        await pilot.pause()
        assert isinstance(app.chat.template, RoleTemplate)
        assert [v.speaker for v in app.chat.transcript.messages] == ["You", "Assistant"]
        assert not any(row.display for row in app.query(".speaker-name"))
        await reply_to(pilot, "Who are you", 2)
        tok = chat_model.tokenizer
        said_before = messages("Hello", "Good morrow.", "Who are you", system="")
        assert chat_model.prompts[-1] == chat.prompt_ids(tok, said_before)
        app.chat.take_over(LoadedModel(text_model, text_model.tokenizer), "── text ──", "text")
        await pilot.pause()
        assert app.chat.template is app.chat.dialogue
        assert [v.speaker for v in app.chat.transcript.messages][:2] == ["ROMEO", "JULIET"]
        assert all(row.display for row in app.query(".speaker-name"))


@run_async
async def test_a_message_the_chat_model_cannot_read_is_said_not_sent() -> None:
    backend = FakeChatBackend("Hi there.")
    app = make_chat_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "☃☃")  # no character this vocabulary has
        await wait_for(pilot, lambda: said(app, "Cannot ask the model"))
        assert backend.prompts == [] and not app.chat.generating
        assert [t.text for t in app.chat.session.turns] == ["☃☃"]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chat_model(tmp_path_factory.mktemp("chat-model"))


@run_async
async def test_a_trained_chat_model_replies_until_its_end_of_turn(tiny_chat: Path) -> None:
    backend = load_backend(tiny_chat, "torch")
    app = ChatApp(lambda: backend, model_label="tiny-chat")
    app.settings.temperature = 0.0
    async with app.run_test(size=SIZE) as pilot:
        await reply_to(pilot, "hello", 1)
        stats = app.chat.last_stats
        assert stats is not None and stats.stop_reason == "end"
        assert replies(app)[0].startswith("hi th") and "<|" not in replies(app)[0]
        turns = app.chat.session.turns  # type: ignore[union-attr]
        assert turns == [Turn("user", "hello"), Turn("model", replies(app)[0])]


def test_the_role_layout_refuses_what_the_chat_format_cannot_hold() -> None:
    from minigpt_tui.dialogue import DialogueTemplate, LayoutError

    tok = FakeChatBackend().tokenizer
    roles = RoleTemplate(DialogueTemplate(system="Be brief."))
    said_so_far = [Turn("user", "Hi"), Turn("model", "Hello.")]
    between = roles.fit(tok, said_so_far, 100)  # between replies: the conversation so far
    assert (
        between.ids
        == chat.assemble(
            tok.chat,  # type: ignore[arg-type]
            chat.messages_from(messages("Hi", "Hello.", system="Be brief.")),
            [tok.encode(t) for t in ("Be brief.", "Hi", "Hello.")],
        )[0].tolist()
    )
    two = roles.fit(tok, [Turn("user", "Hi"), Turn("user", "There")], 100)  # a reply said nothing
    assert two.ids == chat.prompt_ids(tok, messages("Hi\nThere", system="Be brief."))
    reply_first = [Turn("model", "first"), Turn("user", "hi")]
    for bad in ([Turn("document", "x")], reply_first, [Turn("user", "☃")]):
        with pytest.raises(LayoutError):
            roles.fit(tok, bad, 100)
