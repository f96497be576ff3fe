"""Scoring a text: how surprised the model is by each of its tokens (torch-free).

One implementation for `minigpt-tui score` and the chat app's score screen. The text is fed to
the model through the engine's backends token by token, as if the model had written it: every
step's logits give the surprisal of the token that really comes next,

    surprisal(token) = -log2 p(token | the tokens before it)   (bits, temperature 1, no filter)

A text longer than the model's context is scored in sliding windows exactly as the generation
loop slides (`generation.window`): when the cache is full the last 3/4 of a block is
prefilled again, so every token after the first block still sees at least that many tokens
before it. The first token is predicted from end-of-text when the vocabulary has one;
otherwise it has no context and is not scored (its characters do not count towards bits per
character).
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
from model.backend import Backend
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
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Score `text` (see the module docstring); ScoreError for a text that cannot be scored."""
    ids = check_text(tokenizer, text)
    start = [tokenizer.eot] if tokenizer.eot is not None else []
    score = score_ids(backend, ids, tokenizer.vocab_size, start, cancel=cancel, progress=progress)
    unscored = tokenizer.decode(score.unscored_ids) if score.unscored_ids else ""
    score.characters = len(text) - len(unscored)
    return score


def score_ids(
    backend: Backend,
    ids: list[int],
    vocab_size: int,
    start: list[int],
    *,
    n_alternatives: int = N_ALTERNATIVES,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Surprisal of every token of `ids` after `start` (empty: ids[0] is left unscored).

    `progress(done, total)` is called every 256 tokens; setting `cancel` stops early (the
    Score then covers the tokens done so far).
    """
    seq = list(start) + list(ids)
    first = len(start) if start else 1  # index in seq of the first scored token
    n = len(seq) - first
    block = backend.block_size
    k = min(n_alternatives, vocab_size)
    bits = np.zeros(n, dtype=np.float64)
    top_ids = np.zeros((n, k), dtype=np.int64)
    top_probs = np.zeros((n, k), dtype=np.float64)
    context = seq[:first]
    logits = backend.prefill(context)
    cache_len = len(context)
    windows, done = 1, 0
    for j in range(n):
        if cancel is not None and cancel.is_set():
            break
        target = seq[first + j]
        z = np.asarray(logits[:vocab_size], dtype=np.float64)  # a padded vocabulary: cut
        z = z - z.max()
        logp = z - math.log(float(np.exp(z).sum()))  # (V,) natural log-probabilities
        bits[j] = -logp[target] / LN2
        best = np.argpartition(-logp, k - 1)[:k] if k < logp.size else np.arange(logp.size)
        best = best[np.argsort(-logp[best], kind="stable")]
        top_ids[j] = best
        top_probs[j] = np.exp(logp[best])
        done = j + 1
        if progress is not None and done % 256 == 0:
            progress(done, n)
        if done == n:
            break
        context.append(target)
        if cache_len >= block:  # the cache is full: slide as the generation loop does
            context = window(context, block)
            logits = backend.prefill(context)
            cache_len = len(context)
            windows += 1
        else:
            logits = backend.decode(target)
            cache_len += 1
    return Score(
        tokens=np.asarray(seq[first : first + done], dtype=np.int64),
        bits=bits[:done],
        top_ids=top_ids[:done],
        top_probs=top_probs[:done],
        characters=0,
        block_size=block,
        windows=windows,
        first_unscored=not start,
        min_context=len(window(list(range(block + 1)), block)) if windows > 1 else 0,
        unscored_ids=[] if start else seq[:1],
    )


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
