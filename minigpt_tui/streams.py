"""Several generations on one model at once (compare panes): where each stream gets its backend.

A backend holds one KV cache, so two Generations must not share one. `stream_slots` gives each
of n streams a backend and the lock it holds while it runs:

  - the ONNX backend: one `OrtBackend` view per stream over the same InferenceSession (one copy
    of the weights; onnxruntime runs one session from several threads), each with its own
    cache and lock, so the streams decode side by side;
  - any other backend (torch, a test's fake): the one backend and the one lock for all streams,
    which then take turns, a whole reply each.

This is the one place a multi-stream backend plugs in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from model.backend import Backend


@dataclass
class StreamSlot:
    backend: Backend
    lock: threading.Lock  # held by the stream's worker while it runs on `backend`


def fork(backend: Backend) -> Backend | None:
    """A view of the backend with its own KV cache over the same weights (the ONNX backend's
    `fork`); None when the backend cannot be shared that way."""
    make = getattr(backend, "fork", None)
    return make() if callable(make) else None


def stream_slots(backend: Backend, n: int, lock: threading.Lock) -> list[StreamSlot]:
    """n slots on `backend`; `lock` is the lock its current user (the chat) already holds."""
    views = [fork(backend) for _ in range(n)]
    if all(v is not None for v in views):
        return [StreamSlot(v, threading.Lock()) for v in views if v is not None]
    return [StreamSlot(backend, lock) for _ in range(n)]
