"""The generation loop: one loop for every backend and front end, and `load_backend`.

A backend (the protocol is in model/backend.py) only runs the network. Everything else
(windowing past block_size, sampling, stop tokens and stop strings, incremental
detokenisation, cancellation) lives here once.

Torch-free: the PyTorch backend is imported only when asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigpt_tui.sampling import Sampler, SamplingSettings
from model import jobs, modeldir
from model.backend import Backend, EngineError, check_backend, tune_allocator
from model.tokenizer import StreamDecoder, Tokenizer, TokenizerError


def stop_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The tokens a generation stops at (never shown, never part of the text): end-of-text,
    and a chat model's end of turn (`<|end|>`, model/chat.py)."""
    ids = {tokenizer.eot} if tokenizer.eot is not None else set()
    if tokenizer.chat is not None:
        ids |= {tokenizer.chat.bos, tokenizer.chat.end}
    return frozenset(ids)


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
class Step:
    """What the network runs next for a Generation: prefill `ids` into a fresh cache (the
    start, or a slide when the block is full), or decode the one token in `ids`."""

    ids: list[int]
    prefill: bool


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prompt_truncated: bool = False
    new_tokens: int = 0
    slides: int = 0
    time_to_first_token: float = 0.0
    decode_seconds: float = 0.0
    # "length", "stop" (a stop string), "cancelled", "eot" (end-of-text), "end" (end of turn)
    stop_reason: str = ""
    started: float = field(default_factory=time.perf_counter)

    @property
    def tokens_per_second(self) -> float:
        n = self.new_tokens - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0


class Generation:
    """Iterate to stream TokenEvents; `stats` fills in as it goes.

    The settings object is read on every token, so a front end may change it mid-stream. An
    empty prompt starts from end-of-text (or a newline for vocabularies without one); a prompt
    longer than block_size keeps its last block_size tokens (`stats.prompt_truncated`). A
    final event with token -1 carries text that was held back until the end (an incomplete
    character, or the start of a stop string that never completed).

    A stop token (`stop_ids`; by default end-of-text and a chat model's `<|end|>`) ends the
    generation: it is in `generated` and the context (the model made it) but no event carries
    it and it is not in `text`, so no front end shows or keeps it.
    """

    def __init__(
        self,
        backend: Backend,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
        sampler: Sampler | None = None,
        alternatives: int = 5,
        stops: Collection[int] | None = None,
    ) -> None:
        """alternatives: how many of the likeliest tokens each TokenEvent lists (0: none, which
        saves their ranking when nobody shows them). stops: the stop tokens (None: the
        tokenizer's, `stop_ids`)."""
        settings.validate()
        self.alternatives = alternatives
        self.backend = backend
        self.tokenizer = tokenizer
        self.settings = settings
        self.sampler = sampler or Sampler(settings)
        self.cancel = cancel or threading.Event()
        self.stops = frozenset(stops) if stops is not None else stop_ids(tokenizer)
        ids = list(prompt_ids)
        if not ids:
            ids = _start_ids(tokenizer)
        self.stats = GenerationStats(prompt_tokens=len(ids))
        if len(ids) > backend.block_size:
            ids = ids[-backend.block_size :]
            self.stats.prompt_truncated = True
        self.context = ids  # what the model sees: the current window
        self.generated: list[int] = []
        self.text = ""  # everything emitted so far
        self._decoder = StreamDecoder(tokenizer)
        self._pending = ""  # decoded text held back because it may begin a stop string
        self._cache_len = 0  # tokens in the backend's KV cache
        self._t_first = 0.0  # when the first token was chosen

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        # A model may have more outputs than its tokenizer has tokens (a padded vocabulary):
        # never sample a token that cannot be decoded.
        return logits[: self.tokenizer.vocab_size]

    def __iter__(self) -> Iterator[TokenEvent]:
        """The whole generation on this Generation's backend, one network call per token
        (the process counts as busy meanwhile, and while a training runs the calls run at idle
        priority: model/jobs.py)."""
        with jobs.Yielding() as yielding, jobs.busy():
            run = yielding.call
            step: Step | None = self.start()
            while step is not None:
                if step.prefill:
                    logits = run(self.backend.prefill, step.ids)
                else:
                    logits = run(self.backend.decode, step.ids[0])
                event = self.take(logits)
                if event is None:
                    break
                yield event
                step = self.next_step()
            tail = self.finish()
            if tail is not None:
                yield tail

    # The loop above in four steps, so that a driver running several Generations on one model
    # (minigpt_tui/streams.py) makes the network calls for all of them and each still samples,
    # stops and detokenises exactly as alone: start, then take(logits) / next_step() until
    # either returns None, then finish().

    def start(self) -> Step:
        """Begin: the context to prefill into a fresh cache."""
        self.stats.started = time.perf_counter()
        self._t_first = self.stats.started
        self._decoder = StreamDecoder(self.tokenizer)
        self._pending = ""
        self._cache_len = len(self.context)
        return Step(self.context, prefill=True)

    def take(self, logits: np.ndarray) -> TokenEvent | None:
        """Sample the next token from the network's output for the last step; None when the
        generation ended before it (cancelled, or no tokens left to make) or with it (a stop
        token, which no event carries)."""
        s, stats = self.settings, self.stats
        if stats.new_tokens:
            stats.decode_seconds = time.perf_counter() - self._t_first
        if self.cancel.is_set():
            stats.stop_reason = "cancelled"
            return None
        if len(self.generated) >= s.max_new_tokens:
            stats.stop_reason = "length"
            return None
        choice = self.sampler.choose(self._logits(logits), self.context, self.alternatives)
        tok = choice.token
        self.generated.append(tok)
        self.context.append(tok)
        stats.new_tokens += 1
        if stats.new_tokens == 1:
            self._t_first = time.perf_counter()
            stats.time_to_first_token = self._t_first - stats.started
        if tok in self.stops:
            stats.stop_reason = "eot" if tok == self.tokenizer.eot else "end"
            return None
        self._pending += self._decoder.push(tok)
        out, self._pending, stopped = _split_stop(self._pending, s.stop)
        self.text += out
        if stopped:
            stats.stop_reason = "stop"
        return TokenEvent(tok, out, choice.prob, choice.alternatives)

    def next_step(self) -> Step | None:
        """What the network runs for the token just taken; None when the generation is over."""
        stats = self.stats
        if stats.stop_reason:  # "stop" (a stop token ends in take())
            return None
        if self.cancel.is_set():  # no need to run the network for a token nobody will sample
            stats.stop_reason = "cancelled"
            return None
        if len(self.generated) >= self.settings.max_new_tokens:
            stats.stop_reason = "length"
            return None
        if self._cache_len >= self.backend.block_size:
            # The cache is full: keep the last part of the context and prefill again.
            self.context = window(self.context, self.backend.block_size)
            self._cache_len = len(self.context)
            stats.slides += 1
            return Step(self.context, prefill=True)
        self._cache_len += 1
        return Step(self.context[-1:], prefill=False)

    def finish(self) -> TokenEvent | None:
        """End: the text held back until now (an incomplete character, or the start of a stop
        string that never completed), as a last event with token -1, if there is any."""
        stats, tail = self.stats, None
        if stats.stop_reason != "stop":
            out, _, stopped = _split_stop(
                self._pending + self._decoder.flush(), self.settings.stop, final=True
            )
            if stopped:
                stats.stop_reason = "stop"
            if out:
                self.text += out
                tail = TokenEvent(-1, out, 1.0, [])
        if stats.new_tokens:
            stats.decode_seconds = time.perf_counter() - self._t_first
        return tail


def _start_ids(tokenizer: Tokenizer) -> list[int]:
    """What an empty prompt starts from: end-of-text, else a newline, else token 0."""
    if tokenizer.eot is not None:
        return [tokenizer.eot]
    try:
        return tokenizer.encode("\n") or [0]
    except TokenizerError:  # a character vocabulary without a newline
        return [0]


def _split_stop(text: str, stops: list[str], final: bool = False) -> tuple[str, str, bool]:
    """Split text into (printable, held back, stopped) with respect to the stop strings.

    The text stops at the stop string that is complete first (the earliest end; of two ending
    together, the longer), as if it arrived one character at a time, so the result does not
    depend on how the text was split into tokens.
    """
    if not stops:
        return text, "", False
    found = [(i + len(st), i) for st in stops if st and (i := text.find(st)) >= 0]
    if found:
        return text[: min(found)[1]], "", True
    if final:
        return text, "", False
    # Hold back the longest suffix that is a prefix of some stop string.
    hold = 0
    for st in stops:
        for n in range(min(len(st) - 1, len(text)), hold, -1):
            if text.endswith(st[:n]):
                hold = n
                break
    return (
        (text[: len(text) - hold], text[len(text) - hold :], False) if hold else (text, "", False)
    )


def load_backend(
    model: str | Path | None,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    spin: bool = False,
) -> Backend:
    """Load a model with the named backend ("auto" prefers ONNX when exported).

    `spin`: the ONNX backend's threads may spin between operators on a quiet machine, for a
    lone generation with nothing else to run (`generate`; export/ort_backend.make_session).

    `model` is a model directory, a run directory, a file inside a model directory, or the
    name of a bundled model; None or "" means the bundled default.
    """
    from minigpt_tui.models import DEFAULT_MODEL, resolve_model

    check_backend(backend)
    tune_allocator()  # a decode step's numpy arrays reuse memory (model/backend.py)
    jobs.join("infer")  # so that trainings leave it a CPU while it generates (model/jobs.py)
    path = resolve_model(model)
    if not model and not path.exists():
        raise EngineError(
            f"no --model given and the bundled default model {DEFAULT_MODEL!r} is not installed"
        )
    info = modeldir.read(path)
    if backend == "auto":
        asked_onnx = path.suffix == ".onnx"  # the user named the ONNX file itself
        backend = "onnx" if info.has_onnx and (device == "cpu" or asked_onnx) else "torch"
    if backend == "onnx":
        if device not in ("cpu", "auto"):
            raise EngineError(
                f"the ONNX backend runs on the CPU; --device {device} needs --backend torch"
            )
        if not info.has_onnx:
            raise EngineError(
                f"{info.path} has no {modeldir.ONNX_FILE}; run "
                "'minigpt-tui export onnx' first or use --backend torch"
            )
        try:
            from export.ort_backend import OrtBackend
        except ImportError as e:
            raise EngineError(f"the ONNX backend is not available ({e})") from None
        return OrtBackend(info, threads=threads, spin=spin)
    # backend == "torch"
    if not info.has_weights:
        raise EngineError(f"{info.path} has no {modeldir.WEIGHTS_FILE}")
    try:
        from model.torch_backend import TorchBackend
    except ImportError as e:
        raise EngineError(
            f"the torch backend needs PyTorch ({e}); install minigpt-tui[train] "
            "or use an ONNX model"
        ) from None
    return TorchBackend(info, device=device, threads=threads)
