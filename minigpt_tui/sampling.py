"""The one sampler, shared by every backend and front end (numpy only, no torch).

Settings are read on every token, so a front end may change them while a reply streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class SamplingError(ValueError):
    """Out-of-range sampling settings."""


@dataclass
class SamplingSettings:
    temperature: float = 0.8  # 0 means greedy
    top_k: int = 0  # 0 means no top-k filter
    top_p: float = 1.0  # nucleus mass; 1.0 means no filter
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the context
    max_new_tokens: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise SamplingError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if self.top_k < 0:
            raise SamplingError(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top-p must be in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise SamplingError(
                f"repetition penalty must be > 0 and finite, got {self.repetition_penalty}"
            )
        if self.max_new_tokens < 0:
            raise SamplingError(f"max tokens must be >= 0, got {self.max_new_tokens}")
        if self.seed is not None and self.seed < 0:
            raise SamplingError(f"seed must be >= 0, got {self.seed}")


@dataclass
class Choice:
    token: int
    prob: float  # probability of the chosen token under the temperature-scaled distribution
    alternatives: list[tuple[int, float]]  # the most likely tokens, best first


def penalize(logits: np.ndarray, context: list[int], penalty: float) -> np.ndarray:
    """CTRL-style repetition penalty on tokens that already occur in the context."""
    if penalty == 1.0 or not context:
        return logits
    logits = np.array(logits, dtype=np.float64)  # a copy; float64 so a large penalty fits
    seen = np.unique(np.asarray(context, dtype=np.int64))
    vals = logits[seen]
    with np.errstate(over="ignore", under="ignore"):  # a huge penalty: -inf is its limit
        logits[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def distribution(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The filtered next-token distribution (float64, sums to 1). Greedy is a one-hot."""
    given, logits = logits, np.asarray(logits, dtype=np.float64)
    top = logits.max()  # NaN if any logit is NaN: one pass checks both
    _check_finite(top)
    if settings.temperature == 0 or settings.top_k == 1 or top == -np.inf:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    # Shift first, then scale: values <= 0, so a tiny temperature only sends the others
    # towards -inf (their limit) and never overflows to inf - inf = NaN; exp of those is 0.
    with np.errstate(over="ignore", under="ignore"):
        z = (logits - top) / settings.temperature
        if 0 < settings.top_k < z.size:
            # Keep the k largest logits (and any tied with the k-th, so the choice never
            # depends on the order of equal values). Ranked by the logits themselves:
            # shifting can round two logits to one value (1e-45 - 8 == 0 - 8), keeping both.
            # (The k-th of the logits as given, float32 from an engine: the same value, and
            # 8x cheaper than partitioning a new float64 copy.)
            kth = np.partition(given, -settings.top_k)[-settings.top_k]
            dropped = logits < kth
            z[dropped] = -np.inf
            probs = np.zeros_like(z)
            kept = ~dropped
            probs[kept] = np.exp(z[kept])  # numpy's exp of -inf takes a slow path: skip them
        else:
            probs = np.exp(z)
    probs /= probs.sum()
    if settings.top_p < 1.0:
        # Ranked by the logits themselves (z was shifted: that can merge two logits a
        # rounding step apart), with the tokens top-k dropped left out.
        probs = _nucleus(probs, np.where(np.isneginf(z), -np.inf, logits), settings.top_p)
    return probs


def _nucleus(probs: np.ndarray, z: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of likeliest tokens whose mass reaches top_p (at least one).

    Tokens are ranked by their logits `z`, not their probabilities: two logits a rounding
    step apart can have equal probabilities, and the larger logit must still come first.
    """
    # Sorting a 50k vocabulary costs milliseconds a token, so sort only the m likeliest
    # candidates, growing m until they hold enough mass (they almost always do at once).
    m = min(probs.size, 256)
    while True:
        cand = np.argpartition(-probs, m - 1)[:m] if m < probs.size else np.arange(probs.size)
        if m == probs.size or probs[cand].sum() >= top_p:
            break
        m = min(probs.size, 16 * m)  # a flatter distribution: more candidates
    order = cand[np.argsort(-z[cand], kind="stable")]
    cum = np.cumsum(probs[order])
    # The tolerance stops rounding in the running sum from keeping one token too many.
    n_keep = int(np.searchsorted(cum, top_p - 1e-12, side="left")) + 1
    out = np.zeros_like(probs)
    keep = order[:n_keep]
    out[keep] = probs[keep] / probs[keep].sum()
    return out


class Sampler:
    def __init__(self, settings: SamplingSettings) -> None:
        settings.validate()
        self.settings = settings
        self.reseed(settings.seed)

    def reseed(self, seed: int | None) -> None:
        self._seed = seed
        self._rng: np.random.Generator | None = None

    @property
    def rng(self) -> np.random.Generator:
        """The random generator, made at the first draw: greedy decoding never needs one,
        and numpy.random costs a cold start ~10 ms of imports (issue 25)."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    def choose(self, logits: np.ndarray, context: list[int], n_alternatives: int = 5) -> Choice:
        s = self.settings
        s.validate()
        logits = penalize(logits, context, s.repetition_penalty)
        if s.temperature == 0 or s.top_k == 1:  # greedy: no distribution to build
            token = _argmax(logits)
            return Choice(token=token, prob=1.0, alternatives=[(token, 1.0)][:n_alternatives])
        probs = distribution(logits, s)
        token = _draw(probs, self.rng.random())
        return Choice(
            token=token, prob=float(probs[token]), alternatives=_best(probs, n_alternatives)
        )


def _check_finite(top: float) -> None:
    """Refuse the largest logit if it is NaN or infinity (then the model is broken)."""
    if np.isnan(top) or top == np.inf:
        raise SamplingError(
            "the model's output is not finite (NaN or infinity): its weights are broken, "
            "e.g. saved from a training run that diverged"
        )


def _argmax(logits: np.ndarray) -> int:
    """The likeliest token (the first of equals), refusing logits that are not finite."""
    token = int(np.argmax(logits))
    _check_finite(logits[token])  # NaN if any logit is NaN (argmax stops at the first NaN)
    return token


DRAW_BLOCK = 256  # _draw's running sums go a block at a time


def _draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw for a uniform u in [0, 1): the first token whose running sum of
    probabilities exceeds u x their total (a token of probability 0 is never drawn).

    The running sum goes through the totals of DRAW_BLOCK tokens, then only inside the block
    that holds the point: at a 50k vocabulary, 10x cheaper than one sum over every token
    (numpy's cumsum runs one element at a time), for the same draw up to rounding."""
    n = probs.size
    whole = n - n % DRAW_BLOCK
    sums = probs[:whole].reshape(-1, DRAW_BLOCK).sum(axis=1)
    if whole < n:
        sums = np.append(sums, probs[whole:].sum())
    cum = np.cumsum(sums)
    point = u * cum[-1]
    block = min(int(np.searchsorted(cum, point, side="right")), cum.size - 1)
    start = block * DRAW_BLOCK
    inside = probs[start : start + DRAW_BLOCK]
    run = np.cumsum(inside) + (cum[block - 1] if block else 0.0)
    token = start + min(int(np.searchsorted(run, point, side="right")), inside.size - 1)
    if probs[token] == 0:  # only where rounding put the point past the last likely token
        token = int(np.flatnonzero(probs[: token + 1])[-1])
    return token


def _best(probs: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n likeliest tokens of nonzero probability with their probabilities, best first.

    The n likeliest are among the tokens within a factor of the likeliest whenever there are
    n of those: a comparison over the vocabulary instead of a partition of it (4x cheaper)."""
    if n <= 0:
        return []
    top = probs.max()
    pool = np.empty(0, np.intp)
    for factor in (1e-2, 1e-5):
        pool = np.flatnonzero(probs >= top * factor)
        if pool.size >= n:
            break
    else:
        pool = np.flatnonzero(probs)
    if pool.size > n:
        pool = pool[np.argpartition(-probs[pool], n - 1)[:n]]
    pool = pool[np.argsort(-probs[pool], kind="stable")]
    return list(zip(pool.tolist(), probs[pool].tolist(), strict=True))  # Python ints, floats
