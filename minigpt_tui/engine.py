"""The generation engine: one protocol every backend implements, one generation loop.

A backend only runs the network: `prefill` a context into a fresh KV cache, then `decode` one
token at a time. Everything else (windowing past block_size, sampling, stop strings,
incremental detokenisation, cancellation) lives here once, for every backend and front end.

Torch-free: the PyTorch backend is imported only when asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from minigpt_tui.sampling import Sampler, SamplingSettings
from model import modeldir
from model.tokenizer import StreamDecoder, Tokenizer


class EngineError(RuntimeError):
    """A model that cannot be loaded or run by the requested backend."""


class Backend(Protocol):
    name: str  # "torch" or "onnx"
    info: modeldir.ModelInfo

    @property
    def block_size(self) -> int: ...

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Start a fresh cache holding `ids`; return the last position's logits (vocab,)."""
        ...

    def decode(self, token: int) -> np.ndarray:
        """Append one token to the cache; return its logits (vocab,)."""
        ...


def window(context: Sequence[int], block_size: int) -> list[int]:
    """The part of the context the model sees when it no longer fits: the last 3/4 of a block.

    Sliding by a quarter block at a time keeps re-prefills rare while keeping most context.
    """
    if len(context) <= block_size:
        return list(context)
    keep = max(1, block_size - block_size // 4)
    return list(context[-keep:])


@dataclass
class TokenEvent:
    token: int
    text: str  # newly printable text (may be empty while a character or stop string is pending)
    prob: float
    alternatives: list[tuple[int, float]]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_truncated: bool = False
    new_tokens: int = 0
    slides: int = 0
    time_to_first_token: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""  # "length", "stop", "cancelled", "eot"
    started: float = field(default_factory=time.perf_counter)

    @property
    def tokens_per_second(self) -> float:
        n = self.new_tokens - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0


class Generation:
    """Iterate to stream TokenEvents; `stats` fills in as it goes."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.settings = settings
        self.sampler = sampler or Sampler(settings)
        self.cancel = cancel or threading.Event()
        ids = list(prompt_ids)
        if not ids:  # start from end-of-text, or a newline for vocabularies without one
            eot = tokenizer.eot
            ids = [eot] if eot is not None else tokenizer.encode("\n")
        self.stats = GenerationStats(prompt_tokens=len(ids))
        if len(ids) > backend.block_size:
            ids = ids[-backend.block_size:]
            self.stats.prompt_truncated = True
        self.context = ids
        self.generated: list[int] = []
        self.text = ""  # everything emitted so far

    def __iter__(self) -> Iterator[TokenEvent]:
        s, stats = self.settings, self.stats
        decoder = StreamDecoder(self.tokenizer)
        pending = ""  # decoded text held back because it may begin a stop string
        logits = self.backend.prefill(self.context)
        cache_len = len(self.context)
        t_first = time.perf_counter()
        while True:
            if self.cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            if len(self.generated) >= s.max_new_tokens:
                stats.stop_reason = "length"
                break
            choice = self.sampler.choose(logits, self.context)
            tok = choice.token
            self.generated.append(tok)
            self.context.append(tok)
            stats.new_tokens += 1
            if stats.new_tokens == 1:
                stats.time_to_first_token = time.perf_counter() - stats.started
                t_first = time.perf_counter()
            if tok == self.tokenizer.eot:
                stats.stop_reason = "eot"
                yield TokenEvent(tok, "", choice.prob, choice.alternatives)
                break
            pending += decoder.push(tok)
            out, pending, stopped = _split_stop(pending, s.stop)
            self.text += out
            yield TokenEvent(tok, out, choice.prob, choice.alternatives)
            if stopped:
                stats.stop_reason = "stop"
                break
            if len(self.generated) >= s.max_new_tokens or self.cancel.is_set():
                continue  # no need to run the network for a token nobody will sample
            if cache_len >= self.backend.block_size:
                self.context = window(self.context, self.backend.block_size)
                logits = self.backend.prefill(self.context)
                cache_len = len(self.context)
                stats.slides += 1
            else:
                logits = self.backend.decode(tok)
                cache_len += 1
            stats.decode_seconds = time.perf_counter() - t_first
        tail = pending + decoder.flush()
        if tail and stats.stop_reason != "stop":
            out, _, _ = _split_stop(tail, s.stop, final=True)
            if out:
                self.text += out
                yield TokenEvent(-1, out, 1.0, [])
        stats.decode_seconds = time.perf_counter() - t_first


def _split_stop(text: str, stops: list[str], final: bool = False) -> tuple[str, str, bool]:
    """Split text into (printable, held back, stopped) with respect to the stop strings."""
    if not stops:
        return text, "", False
    cut = min((i for i in (text.find(st) for st in stops if st) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "", True
    if final:
        return text, "", False
    # Hold back the longest suffix that is a prefix of some stop string.
    hold = 0
    for st in stops:
        for n in range(min(len(st) - 1, len(text)), hold, -1):
            if text.endswith(st[:n]):
                hold = n
                break
    return (text[: len(text) - hold], text[len(text) - hold:], False) if hold else (text, "", False)


def load_backend(
    model: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None
) -> Backend:
    """Load a model directory with the named backend ("auto" prefers ONNX when exported)."""
    from minigpt_tui.models import resolve_model

    info = modeldir.read(resolve_model(model))
    if backend == "auto":
        backend = "onnx" if info.has_onnx and device == "cpu" else "torch"
    if backend == "onnx":
        if not info.has_onnx:
            raise EngineError(f"{info.path} has no {modeldir.ONNX_FILE}; run "
                              "'minigpt-tui export onnx' first or use --backend torch")
        from export.ort_engine import OrtBackend

        return OrtBackend(info, threads=threads)
    if backend == "torch":
        if not info.has_weights:
            raise EngineError(f"{info.path} has no {modeldir.WEIGHTS_FILE}")
        try:
            from model.engine import TorchBackend
        except ImportError as e:
            raise EngineError(
                f"the torch backend needs PyTorch ({e}); install minigpt-tui[train] "
                "or use an ONNX model"
            ) from None
        return TorchBackend(info, device=device, threads=threads)
    raise EngineError(f"unknown backend {backend!r}; choose auto, torch or onnx")
