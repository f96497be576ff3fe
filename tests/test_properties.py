"""Property tests (hypothesis) for the pieces every generation goes through: the tokenizers,
the streaming detokeniser and the sampler.

What tests/test_sampling.py and tests/test_generation.py already cover is not repeated here (the
top-k/top-p keep sets on finite logits, streaming of *valid* text through Generation). This
file adds: round trips for any text a vocabulary covers, streaming of *arbitrary* token
sequences (torn and invalid UTF-8 included), masked (-inf) logits, and that a sampled token
is always one the filters kept.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt_tui.sampling import Sampler, SamplingSettings, distribution, penalize
from model.tokenizer import (
    GPT2_EOT,
    CharTokenizer,
    GPT2Tokenizer,
    StreamDecoder,
    encode_lenient,
    from_spec,
)

FAST = settings(max_examples=60, deadline=None)
GPT2 = GPT2Tokenizer()
# Any Unicode scalar value (no lone surrogates: they are not text and cannot be UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


# ------------------------------------------------------------------------------ tokenizers


@FAST
@given(
    vocab=st.sets(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60),
    data=st.data(),
)
def test_char_tokenizer_round_trips_any_text_its_vocabulary_covers(
    vocab: set[str], data: st.DataObject
) -> None:
    tok = CharTokenizer("".join(sorted(vocab)))
    text = data.draw(st.text(st.sampled_from(sorted(vocab)), max_size=50))
    ids = tok.encode(text)
    assert len(ids) == len(text) and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert from_spec(tok.spec()).encode(text) == ids  # the saved spec rebuilds the same vocab


@FAST
@given(vocab=st.text(min_size=1, max_size=30).map(lambda s: "".join(sorted(set(s)))), text=TEXT)
def test_lenient_encoding_drops_exactly_the_unknown_characters(vocab: str, text: str) -> None:
    tok = CharTokenizer(vocab)
    ids, dropped = encode_lenient(tok, text)
    assert set(dropped) == set(text) - set(vocab)
    assert tok.decode(ids) == "".join(ch for ch in text if ch in vocab)


@FAST
@given(text=TEXT)
def test_gpt2_round_trips_any_text(text: str) -> None:
    ids = GPT2.encode(text)
    assert all(0 <= i < GPT2.vocab_size for i in ids) and GPT2_EOT not in ids
    assert GPT2.decode(ids) == text


def test_gpt2_never_turns_typed_text_into_the_end_of_text_token() -> None:
    ids = GPT2.encode("a<|endoftext|>b")
    assert GPT2_EOT not in ids and GPT2.decode(ids) == "a<|endoftext|>b"


# ------------------------------------------------------------------------------ streaming


def _stream(tok: CharTokenizer | GPT2Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    return pieces, "".join(pieces)


@FAST
@given(ids=st.lists(st.integers(0, GPT2_EOT - 1), max_size=40))
def test_streaming_any_gpt2_tokens_equals_one_shot_decoding(ids: list[int]) -> None:
    # Arbitrary ids: byte-level tokens split characters and may form invalid UTF-8.
    _, streamed = _stream(GPT2, ids)
    assert streamed == GPT2.decode(ids)
    assert streamed == b"".join(GPT2.token_bytes(i) for i in ids).decode("utf-8", "replace")


@FAST
@given(text=TEXT)
def test_streaming_never_emits_half_a_character(text: str) -> None:
    pieces, streamed = _stream(GPT2, GPT2.encode(text))
    assert streamed == text
    # Every prefix of the output is a prefix of the text: no replacement character on the way.
    done = ""
    for piece in pieces:
        done += piece
        assert text.startswith(done)


@FAST
@given(
    vocab=st.sets(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30),
    data=st.data(),
)
def test_streaming_char_tokens_equals_one_shot_decoding(
    vocab: set[str], data: st.DataObject
) -> None:
    tok = CharTokenizer("".join(sorted(vocab)))
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    pieces, streamed = _stream(tok, ids)
    assert streamed == tok.decode(ids)
    assert pieces == [tok.chars[i] for i in ids] + [""]  # one character per token, no delay


# ------------------------------------------------------------------------------ sampler

LOGIT = st.one_of(st.floats(-30, 30), st.just(-math.inf))
SETTINGS = st.builds(
    SamplingSettings,
    temperature=st.one_of(st.just(0.0), st.floats(0.05, 5.0)),
    top_k=st.integers(0, 12),
    top_p=st.floats(0.01, 1.0),
    repetition_penalty=st.floats(0.5, 3.0),
    seed=st.integers(0, 2**32),
)


def _logits(draw_list: list[float]) -> np.ndarray:
    z = np.asarray(draw_list, dtype=np.float32)
    if not np.isfinite(z).any():
        z[0] = 0.0  # a model always leaves at least one token possible
    return z


@FAST
@given(logits=st.lists(LOGIT, min_size=1, max_size=300), s=SETTINGS)
def test_distribution_with_masked_tokens_sums_to_one_and_keeps_them_out(
    logits: list[float], s: SamplingSettings
) -> None:
    z = _logits(logits)
    probs = distribution(z, s)
    assert probs.dtype == np.float64 and np.isfinite(probs).all() and (probs >= 0).all()
    assert math.isclose(probs.sum(), 1.0, rel_tol=1e-9)
    assert not probs[np.isneginf(z)].any()  # a masked token is never possible


@FAST
@given(
    logits=st.lists(LOGIT, min_size=1, max_size=300),
    s=SETTINGS,
    context=st.lists(st.integers(0, 299), max_size=20),
    draws=st.integers(1, 8),
)
def test_sampled_tokens_are_always_ones_the_filters_kept(
    logits: list[float], s: SamplingSettings, context: list[int], draws: int
) -> None:
    z = _logits(logits)
    context = [t for t in context if t < z.size]
    probs = distribution(penalize(z, context, s.repetition_penalty), s)
    sampler = Sampler(s)
    for _ in range(draws):
        choice = sampler.choose(z, context, n_alternatives=4)
        assert probs[choice.token] > 0 and not np.isneginf(z[choice.token])
        assert math.isclose(choice.prob, probs[choice.token], rel_tol=1e-12)
        alt_probs = [p for _, p in choice.alternatives]
        assert alt_probs == sorted(alt_probs, reverse=True) and len(alt_probs) <= 4
        assert all(probs[t] > 0 for t, _ in choice.alternatives)
        if s.temperature == 0:
            assert choice.token == int(np.argmax(penalize(z, context, s.repetition_penalty)))
    # The same seed draws the same tokens.
    again = Sampler(s)
    first = Sampler(s)
    assert [again.choose(z, context).token for _ in range(draws)] == [
        first.choose(z, context).token for _ in range(draws)
    ]


@FAST
@given(
    logits=st.lists(st.floats(-30, 30), min_size=1, max_size=100),
    context=st.lists(st.integers(0, 99), max_size=30),
    penalty=st.floats(1.0, 5.0),
)
def test_repetition_penalty_only_lowers_the_tokens_already_seen(
    logits: list[float], context: list[int], penalty: float
) -> None:
    z = np.asarray(logits, dtype=np.float32)
    context = [t for t in context if t < z.size]
    out = penalize(z, context, penalty)
    seen = np.zeros(z.size, dtype=bool)
    seen[context] = True
    assert (out[~seen] == z[~seen]).all()
    assert (out[seen] <= z[seen]).all()
    assert np.array_equal(z, np.asarray(logits, dtype=np.float32))  # the input is not changed
