"""Scoring a text: how surprised the model is by each of its tokens (torch-free).

One implementation for `minigpt-tui score` and the chat app's score screen. The text is read by
the model as if the model had written it: the logits at each position give the surprisal of
the token that really comes next,

    surprisal(token) = -log2 p(token | the tokens before it)   (bits, temperature 1, no filter)

A text longer than the model's context is scored in sliding windows, as the generation loop
slides (`generation.window`): when the context holds a whole block, it slides to its last
block - stride tokens (stride: a quarter block unless the caller says), so every token after
the first block still sees at least that many tokens before it. A backend that returns every
position's logits in one pass (`WindowScorer`: the torch backends) runs each window once for
all the tokens it scores; the others (ONNX, whose graph returns the last position only) run it
token by token through their KV cache, with the same result. The first token is predicted
from end-of-text when the vocabulary has one; otherwise it has no context and is not scored
(its characters do not count towards bits per character).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minigpt_tui.errors import UserError
from minigpt_tui.generation import window
from model.backend import Backend, WindowScorer
from model.tokenizer import CharTokenizer, Tokenizer

LN2 = math.log(2.0)
N_ALTERNATIVES = 5  # top alternatives kept per position
MAX_BYTES = 8_000_000  # the largest text scored at once (memory: ~60 bytes a token)


class ScoreError(UserError):
    """A text that cannot be scored (empty, binary, characters the model lacks)."""


@dataclass
class Score:
    """Per-token values of a scored text (arrays of length n, the scored tokens)."""

    tokens: np.ndarray  # (n,) int64: the token ids scored
    bits: np.ndarray  # (n,) float64: surprisal of each token, in bits
    top_ids: np.ndarray  # (n, k) int64: the model's likeliest tokens at each position
    top_probs: np.ndarray  # (n, k) float64: their probabilities
    characters: int  # characters of the text the scored tokens cover
    block_size: int
    windows: int = 1  # contexts the text was scored in (1: it fit)
    first_unscored: bool = False  # the first token had no context (no end-of-text token)
    min_context: int = 0  # fewest tokens any token after the first block sees before it
    unscored_ids: list[int] = field(default_factory=list)  # the leading token not scored

    @property
    def n(self) -> int:
        return int(self.tokens.size)

    @property
    def total_bits(self) -> float:
        return float(self.bits.sum())

    @property
    def bits_per_char(self) -> float:
        return self.total_bits / self.characters if self.characters else 0.0

    @property
    def bits_per_token(self) -> float:
        return self.total_bits / self.n if self.n else 0.0

    @property
    def perplexity(self) -> float:
        """Per token: 2 ** (mean bits per token)."""
        return float(2.0**self.bits_per_token)

    def probability(self, i: int) -> float:
        return float(2.0 ** -self.bits[i])

    def notes(self) -> list[str]:
        """What a reader of the figures should know (windows, an unscored first token)."""
        out = []
        if self.windows > 1:
            out.append(
                f"the text is longer than the model's context ({self.block_size} tokens): "
                f"scored in {self.windows} sliding windows; every token after the first "
                f"{self.block_size} sees at least {self.min_context} tokens before it"
            )
        if self.first_unscored:
            out.append(
                "the first token has no context (this vocabulary has no end-of-text token) "
                "and is not scored"
            )
        return out


def surprisal_bits(logits: np.ndarray, token: int) -> float:
    """-log2 softmax(logits)[token], computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    m = float(z.max())
    log_total = m + math.log(float(np.exp(z - m).sum()))
    return (log_total - float(z[token])) / LN2


def check_text(tokenizer: Tokenizer, text: str, where: str = "the text") -> list[int]:
    """The tokens of `text`, or a ScoreError when a model with this tokenizer cannot score it."""
    if not text:
        raise ScoreError(f"{where} is empty: nothing to score")
    if isinstance(tokenizer, CharTokenizer):
        unknown = tokenizer.unknown_chars(text)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ScoreError(f"{where} has characters this model's vocabulary lacks: {shown}{more}")
    ids = tokenizer.encode(text)
    if tokenizer.eot is None and len(ids) < 2:
        raise ScoreError(
            f"{where} is one token long: a model without an end-of-text token needs at least "
            "two tokens (the first one has no context)"
        )
    return ids


def score_text(
    backend: Backend,
    tokenizer: Tokenizer,
    text: str,
    *,
    stride: int | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Score `text` (see the module docstring); ScoreError for a text that cannot be scored."""
    ids = check_text(tokenizer, text)
    start = [tokenizer.eot] if tokenizer.eot is not None else []
    score = score_ids(
        backend,
        ids,
        tokenizer.vocab_size,
        start,
        stride=stride,
        cancel=cancel,
        progress=progress,
    )
    unscored = tokenizer.decode(score.unscored_ids) if score.unscored_ids else ""
    score.characters = len(text) - len(unscored)
    return score


def default_stride(block_size: int) -> int:
    """Tokens scored per slide when the user does not say: a quarter block, as the generation
    loop slides (`generation.window` keeps the last 3/4 of a block)."""
    return block_size - len(window(list(range(block_size + 1)), block_size))


def plan_windows(first: int, length: int, block: int, stride: int) -> list[tuple[int, int]]:
    """The contexts that score seq[first:length]: (a, t) for each target index t, whose
    context is seq[a:t]. It grows token by token; when it holds a whole block, it slides to
    its last block - stride tokens (so `stride` tokens are scored per slide, and every one
    after the first block sees at least block - stride tokens before it)."""
    keep = block - stride
    out, a = [], 0
    for t in range(first, length):
        out.append((a, t))
        if t - a >= block:
            a = t + 1 - keep
    return out


def score_ids(
    backend: Backend,
    ids: list[int],
    vocab_size: int,
    start: list[int],
    *,
    n_alternatives: int = N_ALTERNATIVES,
    stride: int | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Surprisal of every token of `ids` after `start` (empty: ids[0] is left unscored).

    `stride`: tokens scored per slide of a context that no longer fits (default: a quarter
    block). A backend that gives every position's logits in one pass (`WindowScorer`) runs
    each context once for all the tokens it scores; others run it token by token through
    their KV cache. `progress(done, total)` follows the work; setting `cancel` stops early
    (the Score then covers the tokens done so far).
    """
    seq = list(start) + list(ids)
    first = len(start) if start else 1  # index in seq of the first scored token
    block = backend.block_size
    stride = default_stride(block) if stride is None else stride
    if not 1 <= stride < block:
        raise ScoreError(f"--stride must be between 1 and {block - 1} (the block size - 1)")
    plan = plan_windows(first, len(seq), block, stride)
    k = min(n_alternatives, vocab_size)
    out = _Filler(len(plan), k, vocab_size)
    run = _score_in_passes if isinstance(backend, WindowScorer) else _score_token_by_token
    run(backend, seq, plan, out, cancel, progress)
    done, windows = out.done, len({a for a, _ in plan[: out.done]}) or 1
    return Score(
        tokens=np.asarray(seq[first : first + done], dtype=np.int64),
        bits=out.bits[:done],
        top_ids=out.top_ids[:done],
        top_probs=out.top_probs[:done],
        characters=0,
        block_size=block,
        windows=windows,
        first_unscored=not start,
        min_context=block - stride if windows > 1 else 0,
        unscored_ids=[] if start else seq[:1],
    )


class _Filler:
    """The per-token arrays of a Score, filled in order, a row or several at a time."""

    def __init__(self, n: int, k: int, vocab_size: int) -> None:
        self.bits = np.zeros(n, dtype=np.float64)
        self.top_ids = np.zeros((n, k), dtype=np.int64)
        self.top_probs = np.zeros((n, k), dtype=np.float64)
        self.k, self.vocab_size, self.done = k, vocab_size, 0

    def add(self, logits: np.ndarray, targets: list[int]) -> None:
        """logits: (m, vocab or more) for the next m targets."""
        z = np.asarray(logits[:, : self.vocab_size], dtype=np.float64)  # a padded vocabulary
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (m, V) natural log-probs
        m, k, rows = len(targets), self.k, np.arange(len(targets))
        i = self.done
        self.bits[i : i + m] = -logp[rows, targets] / LN2
        if k < logp.shape[1]:
            best = np.argpartition(-logp, k - 1, axis=1)[:, :k]
        else:
            best = np.broadcast_to(np.arange(logp.shape[1]), (m, logp.shape[1]))
        order = np.argsort(-np.take_along_axis(logp, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        self.top_ids[i : i + m] = best
        self.top_probs[i : i + m] = np.exp(np.take_along_axis(logp, best, axis=1))
        self.done += m


def _score_token_by_token(
    backend: Backend,
    seq: list[int],
    plan: list[tuple[int, int]],
    out: _Filler,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Prefill each context's start, then decode one target at a time through the cache."""
    logits: np.ndarray | None = None
    for j, (a, t) in enumerate(plan):
        if cancel is not None and cancel.is_set():
            return
        if j == 0 or a != plan[j - 1][0]:
            logits = backend.prefill(seq[a:t])
        else:
            logits = backend.decode(seq[t - 1])
        assert logits is not None
        out.add(np.asarray(logits)[None], [seq[t]])
        if progress is not None and out.done % 256 == 0:
            progress(out.done, len(plan))


def _score_in_passes(
    backend: Backend,
    seq: list[int],
    plan: list[tuple[int, int]],
    out: _Filler,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """One pass per context for all the targets it scores: the logits at position t - 1 - a
    of seq[a:t_last] predict target t."""
    assert isinstance(backend, WindowScorer)
    j = 0
    while j < len(plan):
        if cancel is not None and cancel.is_set():
            return
        a = plan[j][0]
        end = j
        while end < len(plan) and plan[end][0] == a:
            end += 1
        targets = [t for _, t in plan[j:end]]
        logits = backend.logits_all(seq[a : targets[-1]])  # (t_last - a, V)
        out.add(logits[[t - 1 - a for t in targets]], [seq[t] for t in targets])
        j = end
        if progress is not None:
            progress(out.done, len(plan))


def read_text_file(path: Path) -> str:
    """The text of a file to score, or one ScoreError line saying why it is not one: a regular
    file of at most MAX_BYTES, read with that limit (a device's stat size says nothing)."""
    from model import userfile

    try:
        data = userfile.read_bytes(path, MAX_BYTES)
    except FileNotFoundError:
        raise ScoreError(f"{path}: no such file") from None
    except userfile.TooLarge as e:
        raise ScoreError(f"{e}: score at most that much text at once (split it)") from None
    except userfile.UserFileError as e:
        raise ScoreError(str(e)) from None
    except OSError as e:
        raise ScoreError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_text(data, str(path))


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text from bytes, or a ScoreError for binary data."""
    if b"\x00" in data[:65536]:
        raise ScoreError(f"{where} is not a text file (it holds binary data)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScoreError(
            f"{where} is not a UTF-8 text file ({e.reason} at byte {e.start})"
        ) from None
    if not text:
        raise ScoreError(f"{where} is empty: nothing to score")
    return text
