"""Several generations on one model at once (compare panes): where each stream gets its backend.

A backend holds one KV cache, so two Generations must not share one. Two ways to run n:

  - `Lockstep` (the ONNX backend): n streams of one model decoded together, one onnxruntime
    call per step for all of them (`OrtStreams.decode_batch`), so the weights are read once per
    step, not once per stream. One thread drives them; each Generation still samples, stops,
    slides and detokenises by itself (Generation.take / next_step), so each text is exactly
    what it would be alone;
  - `stream_slots`: each stream a backend and the lock it holds while it runs. The ONNX
    backend gives one `OrtBackend` view per stream over the same InferenceSession (one copy of
    the weights; onnxruntime runs one session from several threads), each with its own cache
    and lock, so the streams decode side by side in their own threads; any other backend
    (torch, a test's fake) gives the one backend and the one lock to all, which take turns, a
    whole reply each.

This is the one place a multi-stream backend plugs in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minigpt_tui.generation import Generation, TokenEvent
from model import jobs
from model.backend import Backend, Forkable, MultiStream, Streams


@dataclass
class StreamSlot:
    backend: Backend
    lock: threading.Lock  # held by the stream's worker while it runs on `backend`


def fork(backend: Backend) -> Backend | None:
    """A view of the backend with its own KV cache over the same weights (a `Forkable`
    backend's `fork`); None when the backend cannot be shared that way."""
    return backend.fork() if isinstance(backend, Forkable) else None


def stream_slots(backend: Backend, n: int, lock: threading.Lock) -> list[StreamSlot]:
    """n slots on `backend`; `lock` is the lock its current user (the chat) already holds."""
    views = [fork(backend) for _ in range(n)]
    if all(v is not None for v in views):
        return [StreamSlot(v, threading.Lock()) for v in views if v is not None]
    return [StreamSlot(backend, lock) for _ in range(n)]


NONE = np.zeros(0, np.float32)  # the logits of a stream that was not run


class Lockstep:
    """Up to n Generations on one model, decoded together: each step one batched call with
    every live stream's last token. Made once (each stream holds a whole-block cache); `lock`
    is held while a run uses the streams."""

    def __init__(self, streams: Streams, n: int) -> None:
        self.streams, self.n = streams, n
        self.lock = threading.Lock()

    def run(
        self,
        generations: Sequence[Generation],
        on_event: Callable[[int, TokenEvent], None],
        on_end: Callable[[int], None],
    ) -> None:
        """Run generation i on stream i until every one has ended: `on_event(i, event)` for
        each of its events, in order, then `on_end(i)`. A stream that ends (or has just been
        prefilled again to slide its window) sits the next steps out. A backend failure is
        raised, with the streams that had not ended left without their `on_end`."""
        if len(generations) > self.n:
            raise ValueError(f"{len(generations)} generations for {self.n} streams")
        # While a training runs, the network calls yield the CPUs to it (model/jobs.py).
        with self.lock, jobs.Yielding() as yielding, jobs.busy():
            run = yielding.call
            logits = []
            for i, gen in enumerate(generations):
                ids = gen.start().ids
                # One stopped before it began needs no prefill (take() ends it at once).
                logits.append(NONE if gen.cancel.is_set() else run(self.streams.prefill, i, ids))
            live = list(range(len(generations)))
            while live:
                tokens: list[int | None] = [None] * self.n
                for i in list(live):
                    gen = generations[i]
                    event = gen.take(logits[i])
                    step = None
                    if event is not None:
                        on_event(i, event)
                        step = gen.next_step()
                    if step is None:
                        tail = gen.finish()
                        if tail is not None:
                            on_event(i, tail)
                        live.remove(i)
                        on_end(i)
                    elif step.prefill:  # a slide: this stream's next logits are ready now
                        logits[i] = run(self.streams.prefill, i, step.ids)
                    else:
                        tokens[i] = step.ids[0]
                if any(t is not None for t in tokens):
                    batch = run(self.streams.decode_batch, tokens)
                    for i, t in enumerate(tokens):
                        if t is not None:
                            logits[i] = batch[i]


def lockstep(backend: Backend, n: int) -> Lockstep | None:
    """n streams of the backend's model decoded together (a `MultiStream` backend's
    `streams`); None when the backend has no several-streams decoding."""
    return Lockstep(backend.streams(n), n) if isinstance(backend, MultiStream) else None
