"""One reply at a time, from start to finish: stream a Generation into a target on screen.

A worker thread runs the Generation and pushes its TokenEvents into the reply's queue; a timer
on the UI thread moves them to the reply's target about 30 times a second (so a fast model
never floods the UI and a slow one never freezes it). Whoever owns the controller (the app, or
any widget) hears about the reply through messages posted to it:

    Started(reply) -> Tokens(reply, tokens)... -> Finished(reply, error)

The owner takes the result in its Finished handler and calls `end(reply)`: until then the
reply counts as running, so nothing can see a finished reply whose result is not yet kept.
`cancel()` drops the reply at once (its worker stops at the next token); its late messages
are not posted. The running Generation reads its SamplingSettings on every token, so changing
them steers the reply; setting its cancel Event (`stop()`) ends it early as "cancelled".
"""

from __future__ import annotations

import collections
import threading
from typing import Protocol

from textual.dom import DOMNode
from textual.message import Message
from textual.timer import Timer
from textual.widgets import TextArea

from minigpt_tui.generation import Generation, TokenEvent

FLUSH_HZ = 30  # UI updates per second while a reply streams


class ReplyTarget(Protocol):
    """Where a reply's text goes as it streams (a message in the transcript, the document)."""

    def append(self, tokens: list[TokenEvent]) -> None: ...


class DocumentTarget:
    """Complete mode: the continuation is typed into the document, which is read-only meanwhile."""

    def __init__(self, document: TextArea) -> None:
        self.document = document

    def append(self, tokens: list[TokenEvent]) -> None:
        text = "".join(t.text for t in tokens)
        if text:
            self.document.insert(text, self.document.document.end)
            self.document.scroll_end(animate=False)


class Reply:
    """A Generation streaming into a target, with the tokens made but not yet shown."""

    def __init__(self, generation: Generation, target: ReplyTarget) -> None:
        self.generation = generation
        self.target = target
        self.queue: collections.deque[TokenEvent] = collections.deque()  # worker -> UI


class ReplyController:
    class Started(Message):
        def __init__(self, reply: Reply) -> None:
            super().__init__()
            self.reply = reply

    class Tokens(Message):
        """Tokens just shown in the reply's target (one batch per UI update)."""

        def __init__(self, reply: Reply, tokens: list[TokenEvent]) -> None:
            super().__init__()
            self.reply = reply
            self.tokens = tokens

    class Finished(Message):
        """The reply ended: all its tokens are shown; `error` is set when the backend failed."""

        def __init__(self, reply: Reply, error: BaseException | None) -> None:
            super().__init__()
            self.reply = reply
            self.error = error

    def __init__(self, owner: DOMNode) -> None:
        self.owner = owner  # runs the workers and the timer, and receives the messages
        self.reply: Reply | None = None  # the reply streaming now, if any
        # One generation at a time on the backend's cache: a reply cancelled by New or a mode
        # switch may still be finishing its last token when the next one starts.
        self.backend_lock = threading.Lock()
        self._timer: Timer | None = None

    @property
    def running(self) -> bool:
        return self.reply is not None

    def start(self, generation: Generation, target: ReplyTarget, worker: bool = True) -> Reply:
        """Stream `generation` into `target`. With worker=False the controller starts no worker
        of its own: whoever runs the generation (the compare screen, decoding several panes
        together) appends its events to `reply.queue` and calls `finish_from_thread` at the
        end."""
        reply = Reply(generation, target)
        self.reply = reply
        if self._timer is None:  # made on first use: a timer needs the owner's running loop
            self._timer = self.owner.set_interval(1 / FLUSH_HZ, self._flush, pause=True)
        self._timer.resume()
        self.owner.post_message(self.Started(reply))
        if worker:
            self.owner.run_worker(
                lambda: self._run(reply), thread=True, exit_on_error=False, group="generate"
            )
        return reply

    def stop(self) -> None:
        """Ask the reply to end after the current token (it finishes as "cancelled")."""
        if self.reply is not None:
            self.reply.generation.cancel.set()

    def cancel(self) -> None:
        """Drop the reply now: its worker stops at the next token and nothing more is posted."""
        if self.reply is not None:
            self.reply.generation.cancel.set()
            self.reply = None
            self._pause()

    def end(self, reply: Reply) -> bool:
        """The owner kept the finished reply's result: the controller is free again. False
        when the reply was cancelled meanwhile (a conversation that is gone)."""
        if reply is not self.reply:
            return False
        self.reply = None
        return True

    def _pause(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def _run(self, reply: Reply) -> None:  # worker thread
        error: BaseException | None = None
        with self.backend_lock:
            try:
                for event in reply.generation:
                    reply.queue.append(event)
            except Exception as e:  # a backend failure mid-reply: report it, keep the app
                error = e
        self.finish_from_thread(reply, error)

    def finish_from_thread(self, reply: Reply, error: BaseException | None) -> None:
        """The reply's generation has ended (from the worker that ran it)."""
        self.owner.app.call_from_thread(self._finished, reply, error)

    def _flush(self) -> None:
        """Move queued tokens onto the screen (FLUSH_HZ times a second while replying)."""
        reply = self.reply
        if reply is None:
            return
        tokens: list[TokenEvent] = []
        while reply.queue:
            tokens.append(reply.queue.popleft())
        if tokens:
            reply.target.append(tokens)
            self.owner.post_message(self.Tokens(reply, tokens))

    def _finished(self, reply: Reply, error: BaseException | None) -> None:
        if reply is not self.reply:
            return  # cancelled: a reply from a conversation that is gone (new / reopened)
        self._flush()
        self._pause()
        self.owner.post_message(self.Finished(reply, error))
