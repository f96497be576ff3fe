"""Send your message (or the document) and take the model's reply into the conversation.

    send / regenerate -> start_reply -> ReplyController: Started -> Tokens... -> Finished

A message typed while the model loads is sent once it is ready (`send_when_loaded`). A reply
dropped by New, a mode switch or Quit keeps what it said so far (`cancel`), as Esc does, so that
the save that follows has it. While a reply streams, [ ] { } steer sampling instead of typing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.dialogue import LayoutError, Turn
from minigpt_tui.tui.loading import describe
from minigpt_tui.tui.reply import DocumentTarget, ReplyController, ReplyTarget
from minigpt_tui.tui.widgets.transcript import MessageView

if TYPE_CHECKING:
    from minigpt_tui.tui.chat.chat import Chat


class MessageSender:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.send_when_loaded = False

    def send(self) -> None:
        chat = self.chat
        if chat.hidden:  # nothing of the conversation shows: never send unseen
            return
        if chat.session is None:  # typed ahead while the model loads: send once it is ready
            if chat.prompt_input.text.strip() or chat.mode == "complete":
                self.send_when_loaded = True
                chat.state = "loading… (will send when ready)"
            return
        self.send_when_loaded = False
        if chat.generating:
            chat.say("Still replying: Esc stops it.", timeout=2)
            return
        if chat.mode == "complete":
            chat.session.document = chat.session.document_before = chat.document.text
            self.start_reply()
            return
        text = chat.prompt_input.text
        if not text.strip():
            return
        chat.prompt_input.remember(text)
        chat.prompt_input.load_text("")
        chat.branching.apply_edit()
        chat.session.add_turn(Turn("user", text))
        chat.transcript.add("user", chat.template.speaker("user"), text)
        chat.branching.label()
        self.start_reply()

    def start_reply(self) -> None:
        chat = self.chat
        session, backend = chat.session, chat.backend
        assert session is not None and backend is not None
        try:
            prompt = session.prompt()
        except LayoutError as e:  # your message stays; Ctrl+R asks again after a change
            chat.say(f"Cannot ask the model: {e}", severity="error", timeout=8)
            chat.conversations.save()
            return
        for notice in session.notices(prompt):
            chat.say(notice.text, severity=notice.severity, timeout=notice.timeout)
        generation = session.generation(backend, prompt)
        chat.sync_context(prompt=len(prompt.ids))
        target: ReplyTarget
        if chat.mode == "chat":
            target = chat.transcript.add("model", chat.template.speaker("model"))
            chat.transcript.anchor()
        else:
            chat.document.read_only = True
            target = DocumentTarget(chat.document)
        chat.replies.start(generation, target)

    def started(self) -> None:
        self.chat.state = "replying…"
        self.chat.set_steering(True)

    def tokens(self, event: ReplyController.Tokens) -> None:
        chat = self.chat
        if event.reply is not chat.replies.reply:
            return
        if isinstance(event.reply.target, MessageView) and chat.transcript.show_probs:
            chat.show_token(event.tokens[-1])
        chat.sync_context(len(event.reply.generation.generated))

    def finished(self, event: ReplyController.Finished) -> bool:
        """Keep the finished reply; False when it belonged to a conversation that is gone."""
        chat = self.chat
        reply, gen = event.reply, event.reply.generation
        if not chat.replies.end(reply):
            return False  # a reply from a conversation that is gone (new / reopened)
        assert chat.session is not None
        chat.last_stats = gen.stats
        chat.ttft = gen.stats.time_to_first_token
        chat.tokens_per_sec = gen.stats.tokens_per_second
        chat.state = "stopped" if gen.stats.stop_reason == "cancelled" else "ready"
        if isinstance(reply.target, MessageView):
            # The view's text: a reply continued from another token starts with its old part.
            text = chat.template.clean(reply.target.text)
            if text:
                chat.session.add_turn(Turn("model", text))
                reply.target.set_text(text)
                chat.branching.kept_reply(reply.target)
            else:  # nothing said: Ctrl+R asks again
                reply.target.remove()
        else:
            chat.document.read_only = False
            chat.session.document = chat.session.document_after = chat.document.text
        if event.error is not None:
            chat.say(f"Generation failed: {describe(event.error)}", severity="error", timeout=10)
        chat.conversations.save()
        chat.sync_context()
        chat.set_steering(False)
        return True

    def stop(self) -> None:
        if self.chat.generating:
            self.chat.replies.stop()
            self.chat.state = "stopping…"

    def cancel(self) -> None:
        """Drop the streaming reply (New, a mode switch, Quit), keeping what it has said so
        far in the conversation, as Esc does, so that the save that follows has it."""
        chat = self.chat
        reply = chat.replies.reply
        if reply is None:
            return
        said = reply.generation.text  # a snapshot: the worker may add a token after this
        chat.replies.cancel()
        if isinstance(reply.target, MessageView) and chat.session is not None:
            text = chat.template.clean(said)
            if text:
                chat.session.add_turn(Turn("model", text))
        if chat.document_area is not None:
            chat.document.read_only = False
        chat.set_steering(False)

    def regenerate(self) -> None:
        chat = self.chat
        session = chat.session
        if session is None or chat.generating:
            return
        if chat.mode == "complete":
            if chat.document.text != session.document_after:
                chat.say("The document changed since the last continuation; Ctrl+G continues it.")
                return
            chat.document.load_text(session.document_before)
            session.document = session.document_before
        elif not session.turns:
            return
        elif session.drop_last_reply():
            last = chat.transcript.last_model_view()
            if last is not None:
                last.remove()
        self.start_reply()
