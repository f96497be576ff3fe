"""The sampler: greedy, temperature, top-k, top-p, repetition penalty, seeds, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minigpt_tui.sampling import (
    Sampler,
    SamplingError,
    SamplingSettings,
    _best,
    _draw,
    distribution,
    penalize,
)


def logits_of(probs: list[float]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def kept(probs: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(probs)}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", -0.5),
        ("top_p", 1.01),
        ("top_p", math.nan),
        ("repetition_penalty", 0.0),
        ("max_new_tokens", -1),
    ],
)
def test_out_of_range_settings_are_refused(field: str, value: float) -> None:
    settings = SamplingSettings(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(SamplingError, match=field.split("_")[0].replace("max", "max tokens")):
        settings.validate()
    with pytest.raises(SamplingError):
        Sampler(settings)


def test_edge_values_are_accepted() -> None:
    SamplingSettings(temperature=0, top_k=0, top_p=1.0, max_new_tokens=0).validate()
    SamplingSettings(top_p=1e-9, top_k=1, repetition_penalty=0.5).validate()


def test_temperature_zero_is_greedy() -> None:
    logits = np.array([0.1, 2.0, 1.9, -3.0], dtype=np.float32)
    sampler = Sampler(SamplingSettings(temperature=0, seed=None))
    for _ in range(20):
        choice = sampler.choose(logits, [])
        assert choice.token == 1
        assert choice.prob == 1.0


def test_top_k_1_equals_greedy_whatever_the_temperature_and_seed() -> None:
    rng = np.random.default_rng(0)
    for seed in range(10):
        logits = rng.normal(size=97).astype(np.float32)
        greedy = Sampler(SamplingSettings(temperature=0)).choose(logits, [])
        top1 = Sampler(SamplingSettings(temperature=1.7, top_k=1, seed=seed)).choose(logits, [])
        assert top1.token == greedy.token == int(np.argmax(logits))


def test_temperature_scales_logits() -> None:
    logits = np.array([1.0, 2.0, 0.5, -1.0])
    for t in (0.5, 1.0, 2.0):
        got = distribution(logits, SamplingSettings(temperature=t))
        np.testing.assert_allclose(got, softmax(logits / t), rtol=1e-12)
        assert got.dtype == np.float64 and math.isclose(got.sum(), 1.0)


def test_top_k_keeps_exactly_the_k_most_likely() -> None:
    logits = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    probs = distribution(logits, SamplingSettings(temperature=1.0, top_k=2))
    assert kept(probs) == {1, 3}
    np.testing.assert_allclose(probs[[1, 3]], softmax(np.array([5.0, 4.0])))
    assert kept(distribution(logits, SamplingSettings(temperature=1.0, top_k=3))) == {1, 2, 3}
    # k >= vocabulary size (or 0) keeps everything.
    assert kept(distribution(logits, SamplingSettings(temperature=1.0, top_k=5))) == set(range(5))
    assert kept(distribution(logits, SamplingSettings(temperature=1.0, top_k=50))) == set(range(5))
    assert kept(distribution(logits, SamplingSettings(temperature=1.0, top_k=0))) == set(range(5))


def test_top_k_keeps_ties_with_the_kth_value() -> None:
    probs = distribution(np.array([1.0, 2.0, 2.0, 0.0]), SamplingSettings(top_k=2))
    assert kept(probs) == {1, 2}
    probs = distribution(np.array([3.0, 2.0, 2.0, 0.0]), SamplingSettings(top_k=2))
    assert kept(probs) == {0, 1, 2}  # the k-th value is shared, so no arbitrary choice


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (1.0, {0, 1, 2, 3}),
        (0.99, {0, 1, 2, 3}),
        (0.95, {0, 1, 2}),  # 0.5 + 0.3 + 0.15 reaches 0.95 exactly
        (0.9, {0, 1, 2}),
        (0.8, {0, 1}),  # 0.5 + 0.3 reaches 0.8 exactly: no third token
        (0.81, {0, 1, 2}),
        (0.5, {0}),
        (0.3, {0}),  # always at least the most likely token
        (1e-9, {0}),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p: float, expected: set[int]) -> None:
    probs = distribution(
        logits_of([0.5, 0.3, 0.15, 0.05]), SamplingSettings(top_p=top_p, temperature=1)
    )
    assert kept(probs) == expected
    base = np.array([0.5, 0.3, 0.15, 0.05])
    idx = sorted(expected)
    np.testing.assert_allclose(probs[idx], base[idx] / base[idx].sum(), rtol=1e-5)


def test_top_p_works_on_unsorted_vocabulary_and_after_top_k() -> None:
    logits = logits_of([0.05, 0.3, 0.15, 0.5])
    assert kept(distribution(logits, SamplingSettings(top_p=0.8, temperature=1))) == {1, 3}
    # top-k first (keeps 3, 1, 2 renormalised: 0.526, 0.316, 0.158), then top-p 0.8 on that.
    s = SamplingSettings(top_k=3, top_p=0.8, temperature=1)
    assert kept(distribution(logits, s)) == {1, 3}
    s = SamplingSettings(top_k=3, top_p=0.85, temperature=1)
    assert kept(distribution(logits, s)) == {1, 2, 3}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([2.0, -1.0, 3.0, 0.5], dtype=np.float32)
    out = penalize(logits, [0, 1, 1], 2.0)
    np.testing.assert_allclose(out, [1.0, -2.0, 3.0, 0.5])
    np.testing.assert_array_equal(logits, [2.0, -1.0, 3.0, 0.5])  # input untouched
    assert penalize(logits, [0, 1], 1.0) is logits
    assert penalize(logits, [], 2.0) is logits


def test_repetition_penalty_changes_the_greedy_choice() -> None:
    logits = np.array([3.0, 2.0, 0.0], dtype=np.float32)
    plain = Sampler(SamplingSettings(temperature=0))
    penalised = Sampler(SamplingSettings(temperature=0, repetition_penalty=1.6))
    assert plain.choose(logits, [0, 0, 2]).token == 0
    assert penalised.choose(logits, [0, 0, 2]).token == 1  # 3 / 1.6 < 2
    assert penalised.choose(logits, [1, 2]).token == 0


def draws(settings: SamplingSettings, logits: np.ndarray, n: int) -> list[int]:
    sampler = Sampler(settings)
    return [sampler.choose(logits, []).token for _ in range(n)]


def test_same_seed_same_choices_different_seed_different_choices() -> None:
    logits = np.zeros(50, dtype=np.float32)
    a = draws(SamplingSettings(temperature=1.0, seed=7), logits, 40)
    b = draws(SamplingSettings(temperature=1.0, seed=7), logits, 40)
    c = draws(SamplingSettings(temperature=1.0, seed=8), logits, 40)
    assert a == b
    assert a != c


def test_samples_follow_the_distribution() -> None:
    logits = logits_of([0.6, 0.3, 0.1])
    counts = np.bincount(
        draws(SamplingSettings(temperature=1.0, seed=0), logits, 6000), minlength=3
    )
    np.testing.assert_allclose(counts / counts.sum(), [0.6, 0.3, 0.1], atol=0.03)
    # With top-p 0.85 the third token is never drawn and the rest renormalise to 2:1.
    counts = np.bincount(
        draws(SamplingSettings(temperature=1.0, top_p=0.85, seed=0), logits, 3000), minlength=3
    )
    assert counts[2] == 0
    assert abs(counts[0] / counts.sum() - 2 / 3) < 0.04


def test_settings_are_read_on_every_choice() -> None:
    logits = np.zeros(30, dtype=np.float32)
    logits[4] = 0.1
    settings = SamplingSettings(temperature=5.0, seed=1)
    sampler = Sampler(settings)
    first = {sampler.choose(logits, []).token for _ in range(30)}
    assert len(first) > 1
    settings.temperature = 0.0  # a UI turns the dial mid-stream
    assert {sampler.choose(logits, []).token for _ in range(10)} == {4}
    settings.temperature = -1.0
    with pytest.raises(SamplingError):
        sampler.choose(logits, [])


def test_choice_reports_probability_and_alternatives_best_first() -> None:
    logits = logits_of([0.1, 0.4, 0.2, 0.3])
    choice = Sampler(SamplingSettings(temperature=1.0, seed=3)).choose(logits, [], n_alternatives=3)
    assert [t for t, _ in choice.alternatives] == [1, 3, 2]
    np.testing.assert_allclose([p for _, p in choice.alternatives], [0.4, 0.3, 0.2], rtol=1e-5)
    assert math.isclose(choice.prob, [0.1, 0.4, 0.2, 0.3][choice.token], rel_tol=1e-5)
    # Filtered-out tokens are not offered as alternatives.
    choice = Sampler(SamplingSettings(temperature=1.0, top_k=2, seed=3)).choose(logits, [])
    assert {t for t, _ in choice.alternatives} == {1, 3}


@settings(max_examples=200, deadline=None)
# Two logits a subnormal apart have equal probabilities (and shift to one value); the larger
# logit must be the one kept, by top-p and by top-k.
@example(
    logits=[0.0] * 7 + [1.0, 2.0, 7.0, 8.0, 7.75, 1.4e-45], top_p=0.999, top_k=6, temperature=1.0
)
@example(logits=[-1.18e-38, 0.0], top_p=0.5, top_k=0, temperature=1.0)
@given(
    logits=st.lists(st.floats(-8, 8), min_size=1, max_size=600),
    top_p=st.floats(0.01, 1.0),
    top_k=st.integers(0, 20),
    temperature=st.floats(0.2, 3.0),
)
def test_filters_keep_the_likeliest_tokens_and_no_more(
    logits: list[float], top_p: float, top_k: int, temperature: float
) -> None:
    z = np.asarray(logits, dtype=np.float32)
    probs = distribution(z, SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p))
    keep = probs > 0
    assert math.isclose(probs.sum(), 1.0, rel_tol=1e-9)
    # Every kept token is at least as likely as every dropped one.
    if (~keep).any():
        assert z[keep].min() >= z[~keep].max()
    # top-k: at most k tokens unless ties at the k-th value.
    if top_k:
        assert keep.sum() <= top_k or len(set(z[keep].tolist())) < keep.sum()
    # top-p: the kept mass (before the final renormalisation) reaches top_p, and without its
    # least likely token it would not.
    base = distribution(z, SamplingSettings(temperature=temperature, top_k=top_k))
    mass = base[keep].sum()
    assert mass >= top_p - 1e-9 or keep.sum() == (base > 0).sum()
    assert mass - base[keep].min() < top_p + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 2000),
    zeros=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31),
)
def test_a_draw_is_the_inverse_cdf_of_one_running_sum(size: int, zeros: float, seed: int) -> None:
    """_draw sums a block at a time; it draws what one running sum over the whole
    vocabulary does, and never a token of probability 0."""
    rng = np.random.default_rng(seed)
    probs = rng.random(size) ** 4
    probs[rng.random(size) < zeros] = 0.0
    if not probs.any():
        probs[size // 2] = 1.0
    probs /= probs.sum()
    cdf = np.cumsum(probs)
    for u in [*rng.random(200), 0.0, 1 - 1e-16]:
        token = _draw(probs, float(u))
        assert probs[token] > 0
        want = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), size - 1)
        # the same token, unless the point falls within rounding of a boundary
        assert token == want or abs(cdf[want] - u * cdf[-1]) < 1e-12


def test_a_draw_at_the_very_end_takes_the_last_likely_token() -> None:
    """A point that rounding puts at the total (u just below 1) lands on the last token of
    nonzero probability, even when whole blocks after it were filtered out."""
    probs = np.zeros(1000)
    probs[[3, 300, 301]] = [0.5, 0.25, 0.25]
    assert _draw(probs, 1.0) == 301  # beyond what a uniform in [0, 1) gives: the worst case
    assert _draw(probs, 0.0) == 3 and _draw(probs, 0.6) == 300


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 3000),
    peak=st.floats(0.0, 60.0),
    n=st.integers(0, 8),
    seed=st.integers(0, 2**31),
)
def test_alternatives_are_the_likeliest_tokens(size: int, peak: float, n: int, seed: int) -> None:
    """_best's shortcut (a threshold below the likeliest token) picks the same tokens as a
    full sort, for flat and for very peaked distributions, and never a token of probability 0."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.standard_normal(size) * 3 + np.where(np.arange(size) == 0, peak, 0))
    probs[rng.random(size) < 0.2] = 0.0
    if not probs.any():
        probs[0] = 1.0
    got = _best(probs, n)
    nonzero = np.flatnonzero(probs)
    want = nonzero[np.argsort(-probs[nonzero], kind="stable")][:n]
    assert [p for _, p in got] == probs[want].tolist()  # equal probabilities may swap tokens
    assert all(probs[t] == p > 0 for t, p in got)


def test_greedy_choice_is_the_argmax_with_certainty() -> None:
    logits = logits_of([0.1, 0.5, 0.4])
    choice = Sampler(SamplingSettings(temperature=0.0)).choose(logits, [])
    assert (choice.token, choice.prob, choice.alternatives) == (1, 1.0, [(1, 1.0)])
    assert Sampler(SamplingSettings(temperature=0.0)).choose(logits, [], 0).alternatives == []
    for bad in (np.nan, np.inf):
        broken = logits.copy()
        broken[2] = bad
        with pytest.raises(SamplingError, match="not finite"):
            Sampler(SamplingSettings(temperature=0.0)).choose(broken, [])
