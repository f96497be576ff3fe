"""Send your message (or the document) and take the model's reply into the conversation.

    send / regenerate -> start_reply -> ReplyController: Started -> Tokens... -> Finished

A message typed while the model loads is sent once it is ready (`send_when_loaded`). A reply
dropped by New, a mode switch or Quit keeps what it said so far (`cancel`), as Esc does, so that
the save that follows has it. While a reply streams, [ ] { } steer sampling instead of typing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.tui import probability_view
from minigpt_tui.tui.loading import describe
from minigpt_tui.tui.reply import DocumentTarget, ReplyController, ReplyTarget
from minigpt_tui.tui.widgets.prompt_input import SteerableTextArea
from minigpt_tui.tui.widgets.status_bar import StatusBar
from minigpt_tui.tui.widgets.transcript import MessageView

if TYPE_CHECKING:
    from minigpt_tui.tui.app import ChatApp


class MessageSender:
    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.send_when_loaded = False

    @property
    def status(self) -> StatusBar:
        return self.app.query_one(StatusBar)

    def send(self) -> None:
        app = self.app
        if app.too_small:  # nothing of the conversation shows: never send unseen
            return
        if app.session is None:  # typed ahead while the model loads: send once it is ready
            if app.prompt_input.text.strip() or app.mode == "complete":
                self.send_when_loaded = True
                self.status.state = "loading… (will send when ready)"
            return
        self.send_when_loaded = False
        if app.generating:
            app.say("Still replying: Esc stops it.", timeout=2)
            return
        if app.mode == "complete":
            app.session.document = app.session.document_before = app.document.text
            self.start_reply()
            return
        text = app.prompt_input.text
        if not text.strip():
            return
        app.prompt_input.remember(text)
        app.prompt_input.load_text("")
        app.branching.apply_edit()
        app.session.turns.append(Turn("user", text))
        app.transcript.add("user", app.template.user, text)
        app.branching.label()
        self.start_reply()

    def start_reply(self) -> None:
        app = self.app
        session, backend = app.session, app.backend
        assert session is not None and backend is not None
        prompt = session.prompt()
        for notice in session.notices(prompt):
            app.say(notice.text, severity=notice.severity, timeout=notice.timeout)
        generation = session.generation(backend, prompt)
        app.prompt_len = min(len(prompt.ids), session.block_size)
        target: ReplyTarget
        if app.mode == "chat":
            target = app.transcript.add("model", app.template.model)
            app.transcript.anchor()
        else:
            app.document.read_only = True
            target = DocumentTarget(app.document)
        app.replies.start(generation, target)

    def started(self) -> None:
        self.status.state = "replying…"
        self.set_steering(True)

    def tokens(self, event: ReplyController.Tokens) -> None:
        app = self.app
        if event.reply is not app.replies.reply:
            return
        if isinstance(event.reply.target, MessageView) and app.transcript.show_probs:
            probability_view.inspect(app, event.tokens[-1])
        app.sync_context(len(event.reply.generation.generated))

    def finished(self, event: ReplyController.Finished) -> None:
        app = self.app
        reply, gen = event.reply, event.reply.generation
        if not app.replies.end(reply):
            return  # a reply from a conversation that is gone (new / reopened)
        assert app.session is not None
        app.last_stats = gen.stats
        status = self.status
        status.ttft = gen.stats.time_to_first_token
        status.tokens_per_sec = gen.stats.tokens_per_second
        status.state = "stopped" if gen.stats.stop_reason == "cancelled" else "ready"
        if isinstance(reply.target, MessageView):
            # The view's text: a reply continued from another token starts with its old part.
            text = DialogueTemplate.clean(reply.target.text)
            if text:
                app.session.turns.append(Turn("model", text))
                reply.target.set_text(text)
                app.branching.kept_reply(reply.target)
            else:  # nothing said: Ctrl+R asks again
                reply.target.remove()
        else:
            app.document.read_only = False
            app.session.document = app.session.document_after = app.document.text
        if event.error is not None:
            app.say(f"Generation failed: {describe(event.error)}", severity="error", timeout=10)
        app.conversations.save()
        app.sync_context()
        self.set_steering(False)
        app.workflow.between_replies()

    def stop(self) -> None:
        if self.app.generating:
            self.app.replies.stop()
            self.status.state = "stopping…"

    def cancel(self) -> None:
        """Drop the streaming reply (New, a mode switch, Quit), keeping what it has said so
        far in the conversation, as Esc does, so that the save that follows has it."""
        app = self.app
        reply = app.replies.reply
        if reply is None:
            return
        said = reply.generation.text  # a snapshot: the worker may add a token after this
        app.replies.cancel()
        if isinstance(reply.target, MessageView) and app.session is not None:
            text = DialogueTemplate.clean(said)
            if text:
                app.session.turns.append(Turn("model", text))
        app.document.read_only = False
        self.set_steering(False)

    def regenerate(self) -> None:
        app = self.app
        session = app.session
        if session is None or app.generating:
            return
        if app.mode == "complete":
            if app.document.text != session.document_after:
                app.say("The document changed since the last continuation; Ctrl+G continues it.")
                return
            app.document.load_text(session.document_before)
            session.document = session.document_before
        elif not session.turns:
            return
        elif session.turns[-1].role == "model":
            session.turns.pop()
            last = app.transcript.last_model_view()
            if last is not None:
                last.remove()
        self.start_reply()

    def set_steering(self, on: bool) -> None:
        """While a reply streams, [ ] { } steer sampling instead of typing into the text boxes."""
        for box in self.app.query(SteerableTextArea):
            box.steering = on
        self.app.refresh_bindings()
