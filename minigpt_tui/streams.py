"""Several generations on one model at once (compare panes): where each stream gets its backend.

A backend holds one KV cache, so two Generations must not share one. `stream_slots` gives each
of n streams a backend and the lock it holds while it runs:

  - the ONNX backend: one `OrtBackend` view per stream over the same InferenceSession (one copy
    of the weights; onnxruntime runs one session from several threads), each with its own
    cache and lock, so the streams decode side by side;
  - any other backend (torch, a test's fake): the one backend and the one lock for all streams,
    which then take turns, a whole reply each.

This is the one place a multi-stream backend plugs in: a backend that decodes B streams in one
call per step (the decode-speed branch's `OrtStreams`) would give each stream a slot that
forwards to its row of the batch.
"""

from __future__ import annotations

import copy
import sys
import threading
from dataclasses import dataclass

import numpy as np

from model.backend import Backend


@dataclass
class StreamSlot:
    backend: Backend
    lock: threading.Lock  # held by the stream's worker while it runs on `backend`


def fork(backend: Backend) -> Backend | None:
    """A view of an ONNX backend with its own KV cache over the same session; None when the
    backend cannot be shared that way."""
    ort = sys.modules.get("export.ort_engine")  # never import onnxruntime just to check
    if ort is None or not isinstance(backend, ort.OrtBackend):
        return None
    view = copy.copy(backend)  # shares session, config and names; not the cache below
    view._cache = None
    view._cache_len = 0
    view._token = np.zeros((1, 1), dtype=np.int64)
    return view


def stream_slots(backend: Backend, n: int, lock: threading.Lock) -> list[StreamSlot]:
    """n slots on `backend`; `lock` is the lock its current user (the chat) already holds."""
    views = [fork(backend) for _ in range(n)]
    if all(v is not None for v in views):
        return [StreamSlot(v, threading.Lock()) for v in views if v is not None]
    return [StreamSlot(backend, lock) for _ in range(n)]
