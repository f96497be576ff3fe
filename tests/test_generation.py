"""The generation engine: KV cache vs recompute, windowing, stop strings, UTF-8 streaming,
cancellation, seeds, backend loading, and the dialogue template."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt_tui.dialogue import DialogueTemplate, Turn
from minigpt_tui.generation import Generation, load_backend, stop_ids, window
from minigpt_tui.sampling import SamplingSettings
from model import checkpoint, modeldir
from model.backend import EngineError
from model.config import GPTConfig
from model.gpt import GPT
from model.modeldir import ModelDirError
from model.tokenizer import CharTokenizer, GPT2Tokenizer
from model.torch_backend import TorchBackend, TorchRecomputeBackend

CORPUS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n.,:;!?'-"


# ---------------------------------------------------------------------------------------------
# Helpers: a scripted backend (no network) and a tiny random model directory.


class ScriptedBackend:
    """Emits a fixed token sequence (one-hot logits) and records what the engine asks of it."""

    name = "scripted"
    info: Any = None  # a scripted backend has no model directory

    def __init__(self, script: Sequence[int], vocab: int, block_size: int = 1024, pad: int = 0):
        self.script = list(script)
        self.vocab = vocab
        self.pad = pad  # extra outputs past the tokenizer's vocabulary (a padded model)
        self._block_size = block_size
        self.calls: list[tuple[str, list[int]]] = []
        self.cache: list[int] = []
        self.step = 0

    @property
    def block_size(self) -> int:
        return self._block_size

    def _next(self) -> np.ndarray:
        logits = np.zeros(self.vocab + self.pad, dtype=np.float32)
        if self.pad:
            logits[self.vocab :] = 100.0  # the padding would win if it were not masked
        logits[self.script[min(self.step, len(self.script) - 1)]] = 50.0
        self.step += 1
        return logits

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        assert 0 < len(ids) <= self.block_size
        self.calls.append(("prefill", list(ids)))
        self.cache = list(ids)
        return self._next()

    def decode(self, token: int) -> np.ndarray:
        self.calls.append(("decode", [token]))
        self.cache.append(token)
        assert len(self.cache) <= self.block_size
        return self._next()


def run(backend: object, tokenizer: object, prompt: Sequence[int], **kw: object) -> Generation:
    settings = SamplingSettings(**{"temperature": 0.0, **kw})  # type: ignore[arg-type]
    gen = Generation(backend, tokenizer, prompt, settings)  # type: ignore[arg-type]
    gen.events = list(gen)  # type: ignore[attr-defined]
    return gen


@functools.cache
def _gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return _gpt2()


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.from_text([CORPUS])


def make_model(path: Path, block_size: int, seed: int = 0, vocab_pad: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text([CORPUS])
    cfg = GPTConfig(
        vocab_size=tok.vocab_size + vocab_pad,
        block_size=block_size,
        n_layer=2,
        n_head=2,
        n_embd=32,
    )
    model = GPT(cfg)
    with torch.no_grad():  # large random weights: varied greedy output, far from ties
        for name, p in model.named_parameters():
            if not name.startswith("ln") and ".ln_" not in name:
                p.normal_(0.0, 0.15)
    checkpoint.save(path, model, modeldir.make_meta(cfg, tok, name="tiny"))
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "tiny", block_size=48)


# ---------------------------------------------------------------------------------------------
# Must-show (1): the KV-cache engine equals recomputing the whole window at every step.


class Recorder:
    """Wraps a backend and keeps every logits vector it returns."""

    def __init__(self, inner: TorchBackend | TorchRecomputeBackend) -> None:
        self.inner = inner
        self.logits: list[np.ndarray] = []
        self.name, self.info = inner.name, inner.info

    @property
    def block_size(self) -> int:
        return self.inner.block_size

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.logits.append(self.inner.prefill(ids))
        return self.logits[-1]

    def decode(self, token: int) -> np.ndarray:
        self.logits.append(self.inner.decode(token))
        return self.logits[-1]


@pytest.mark.parametrize("static", [False, True], ids=["growing-cache", "static-cache"])
@pytest.mark.parametrize("prompt", ["hello world", "ROMEO:" * 12])  # the second is > block_size
def test_kv_cache_matches_full_recompute_over_300_tokens_with_slides(
    tiny_dir: Path, char_tok: CharTokenizer, prompt: str, static: bool
) -> None:
    """Both caches: the growing one (CPU default) and the static one that CUDA replays as a
    graph, here run eagerly; every slide re-prefills the static buffers, stale keys masked."""
    info = modeldir.read(tiny_dir)
    backend = TorchBackend(info, static_cache=static)
    assert backend.static_cache is static and not backend.cuda_graph
    cached = Recorder(backend)
    reference = Recorder(TorchRecomputeBackend(info))
    ids = char_tok.encode(prompt)
    a = run(cached, char_tok, ids, max_new_tokens=300)
    b = run(reference, char_tok, ids, max_new_tokens=300)
    assert a.generated == b.generated
    assert len(a.generated) == 300
    assert a.stats.slides == b.stats.slides >= 3  # block 48: it slid many times
    assert a.stats.prompt_truncated == (len(ids) > 48)
    assert len(cached.logits) == len(reference.logits) == 300
    worst = max(
        float(np.abs(x - y).max()) for x, y in zip(cached.logits, reference.logits, strict=True)
    )
    assert worst < 1e-5, worst
    assert len(set(a.generated)) > 5  # the comparison covered varied text


partial_static = functools.partial(TorchBackend, static_cache=True)


def test_static_cache_is_written_in_place_up_to_the_filled_positions(tiny_dir: Path) -> None:
    backend = TorchBackend(modeldir.read(tiny_dir), static_cache=True)
    backend.prefill([1, 2, 3])
    cache = backend._cache
    assert cache is not None and cache[0][0].shape[2] == 48  # block_size positions, always
    backend.decode(4)
    keys = cache[0][0][0, 0]  # (block_size, hs)
    assert bool(keys[:4].abs().sum(dim=-1).gt(0).all()) and bool(keys[4:].eq(0).all())
    backend.prefill([5])  # a fresh context reuses the same buffers
    assert backend._cache is cache


def test_backends_refuse_contexts_that_do_not_fit(tiny_dir: Path) -> None:
    info = modeldir.read(tiny_dir)
    for make in (TorchBackend, TorchRecomputeBackend, partial_static):
        backend = make(info)
        with pytest.raises(ValueError, match="do not fit"):
            backend.prefill([1] * 49)
        backend.prefill([1] * 48)
        with pytest.raises(ValueError, match="do not fit"):
            backend.decode(2)
    with pytest.raises(RuntimeError, match="before prefill"):
        TorchBackend(info).decode(1)


# ---------------------------------------------------------------------------------------------
# Must-show (2): seeds.


def test_same_seed_same_text_different_seed_different_text(
    tiny_dir: Path, char_tok: CharTokenizer
) -> None:
    backend = TorchBackend(modeldir.read(tiny_dir))
    ids = char_tok.encode("hello")

    def text(seed: int) -> str:
        return run(
            backend, char_tok, ids, temperature=1.0, top_k=20, seed=seed, max_new_tokens=60
        ).text

    first = text(1)
    assert len(first) == 60
    assert text(1) == first
    assert text(2) != first
    assert text(3) != first


# ---------------------------------------------------------------------------------------------
# Windowing, truncation, empty prompts, limits, cancellation.


def test_window_keeps_the_last_three_quarters_of_a_block() -> None:
    assert window(list(range(10)), 16) == list(range(10))
    assert window(list(range(16)), 16) == list(range(16))
    assert window(list(range(17)), 16) == list(range(5, 17))
    assert window([1, 2], 1) == [2]


def test_engine_slides_the_window_and_never_overfills_the_cache(char_tok: CharTokenizer) -> None:
    script = [char_tok.encode(c)[0] for c in "abcdefg" * 10]
    backend = ScriptedBackend(script, char_tok.vocab_size, block_size=8)
    prompt = char_tok.encode("xyz")
    gen = run(backend, char_tok, prompt, max_new_tokens=40)
    full = prompt + gen.generated
    assert gen.generated == script[:40]
    prefills = [ids for kind, ids in backend.calls if kind == "prefill"]
    assert prefills[0] == prompt
    for ids in prefills[1:]:  # each slide re-prefills the last 6 tokens (3/4 of 8)
        assert len(ids) == 6
        n = len(ids)
        assert any(full[i : i + n] == ids for i in range(len(full)))
    assert gen.stats.slides == len(prefills) - 1 >= 5
    # The model saw every generated token but the last exactly once as a decode or in a prefill.
    decoded = [ids[0] for kind, ids in backend.calls if kind == "decode"]
    assert len(decoded) + len(prefills) == 40


def test_prompt_longer_than_block_keeps_its_tail(char_tok: CharTokenizer) -> None:
    backend = ScriptedBackend([1], char_tok.vocab_size, block_size=8)
    prompt = char_tok.encode("hello world, ROMEO")
    gen = run(backend, char_tok, prompt, max_new_tokens=3)
    assert backend.calls[0] == ("prefill", prompt[-8:])
    assert gen.stats.prompt_truncated and gen.stats.prompt_tokens == len(prompt)
    assert len(gen.generated) == 3


def test_empty_prompt_starts_from_end_of_text_or_newline(
    char_tok: CharTokenizer, gpt2: GPT2Tokenizer
) -> None:
    backend = ScriptedBackend([5], char_tok.vocab_size)
    run(backend, char_tok, [], max_new_tokens=2)
    assert backend.calls[0] == ("prefill", char_tok.encode("\n"))
    backend = ScriptedBackend([5], gpt2.vocab_size)
    run(backend, gpt2, [], max_new_tokens=2)
    assert backend.calls[0] == ("prefill", [gpt2.eot])
    no_newline = CharTokenizer("abc")
    backend = ScriptedBackend([1], 3)
    gen = run(backend, no_newline, [], max_new_tokens=2)
    assert backend.calls[0] == ("prefill", [0]) and gen.text == "bb"


def test_max_new_tokens_and_zero(char_tok: CharTokenizer) -> None:
    backend = ScriptedBackend([char_tok.encode("a")[0]], char_tok.vocab_size)
    gen = run(backend, char_tok, [1], max_new_tokens=0)
    assert gen.generated == [] and gen.text == "" and gen.stats.stop_reason == "length"
    gen = run(ScriptedBackend([3], char_tok.vocab_size), char_tok, [1], max_new_tokens=7)
    assert len(gen.generated) == 7 and gen.stats.stop_reason == "length"
    assert gen.stats.new_tokens == 7


def test_cancel_stops_between_tokens(char_tok: CharTokenizer) -> None:
    backend = ScriptedBackend([3], char_tok.vocab_size)
    cancel = threading.Event()
    gen = Generation(backend, char_tok, [1], SamplingSettings(max_new_tokens=100), cancel=cancel)
    seen = []
    for event in gen:
        seen.append(event.token)
        if len(seen) == 3:
            cancel.set()
    assert seen == [3, 3, 3]
    assert gen.stats.stop_reason == "cancelled"
    assert len(backend.calls) == 3  # prefill + 2 decodes: no work for the cancelled token


def test_end_of_text_stops_and_padded_vocabulary_is_never_sampled(gpt2: GPT2Tokenizer) -> None:
    assert gpt2.eot is not None
    script = [*gpt2.encode("Hi there"), gpt2.eot, *gpt2.encode(" never")]
    backend = ScriptedBackend(script, gpt2.vocab_size, pad=47)  # a model with 50304 outputs
    gen = run(backend, gpt2, gpt2.encode("Say"), max_new_tokens=50, temperature=0.9, seed=0)
    assert gen.text == "Hi there"
    assert gen.generated[-1] == gpt2.eot
    assert gen.stats.stop_reason == "eot"
    assert max(gen.generated) < gpt2.vocab_size
    assert all(e.token != gpt2.eot for e in gen.events)  # type: ignore[attr-defined]


def test_a_chat_model_stops_at_end_of_turn_and_no_event_carries_it() -> None:
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ", chat=True)
    assert tok.chat is not None
    script = [*tok.encode("ok then"), tok.chat.end, *tok.encode("never")]
    gen = run(ScriptedBackend(script, tok.vocab_size), tok, [tok.chat.bos], max_new_tokens=50)
    assert gen.text == "ok then" and gen.stats.stop_reason == "end"
    assert [e.token for e in gen.events] == tok.encode("ok then")  # type: ignore[attr-defined]
    assert gen.generated[-1] == tok.chat.end  # the model made it: it is in the context
    assert stop_ids(tok) == {tok.chat.bos, tok.chat.end}
    script = [*tok.encode("ab"), tok.chat.bos, *tok.encode("cd")]  # <|endoftext|> stops too
    gen = run(ScriptedBackend(script, tok.vocab_size), tok, [0], max_new_tokens=50)
    assert gen.text == "ab" and gen.stats.stop_reason == "eot"
    # Stop tokens are the caller's to choose: none, and the marker is text like any other.
    backend = ScriptedBackend([*tok.encode("ok"), tok.chat.end, 0], tok.vocab_size)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=4)
    gen = Generation(backend, tok, [0], settings, stops=[])
    list(gen)
    assert gen.text == "ok<|end|>a" and gen.stats.stop_reason == "length"


def test_settings_change_mid_stream(char_tok: CharTokenizer) -> None:
    backend = ScriptedBackend([3], char_tok.vocab_size)
    settings = SamplingSettings(temperature=0.0, max_new_tokens=100)
    gen = Generation(backend, char_tok, [1], settings)
    n = 0
    for _ in gen:
        n += 1
        if n == 4:
            settings.max_new_tokens = 6
    assert n == 6


def test_stats_are_filled(char_tok: CharTokenizer) -> None:
    gen = run(ScriptedBackend([3], char_tok.vocab_size), char_tok, [1, 2], max_new_tokens=20)
    st = gen.stats
    assert st.prompt_tokens == 2 and st.new_tokens == 20
    assert 0 < st.time_to_first_token < 5
    assert st.decode_seconds > 0 and st.tokens_per_second > 0


# ---------------------------------------------------------------------------------------------
# Must-show (4): stop strings and UTF-8 streaming.


def test_stop_string_split_across_tokens(gpt2: GPT2Tokenizer) -> None:
    text = "The cat sat on the mat. Then it slept."
    script = gpt2.encode(text)
    gen = run(
        ScriptedBackend(script, gpt2.vocab_size), gpt2, [1], max_new_tokens=50, stop=["at. Th"]
    )
    assert gen.text == "The cat sat on the m"
    assert gen.stats.stop_reason == "stop"
    # "at. Th" spans the tokens " mat", ".", " Then": nothing of it was ever printed.
    assert "".join(e.text for e in gen.events) == gen.text  # type: ignore[attr-defined]


def test_earliest_of_several_stop_strings_wins(char_tok: CharTokenizer) -> None:
    script = char_tok.encode("hello world ROMEO")
    gen = run(
        ScriptedBackend(script, char_tok.vocab_size),
        char_tok,
        [1],
        max_new_tokens=30,
        stop=["ROMEO", "o w", "xyz"],
    )
    assert gen.text == "hell"


@pytest.mark.parametrize(
    "stops, expected",
    [
        (["hello world", "llo"], "I said he"),  # "llo" completes first, inside one token
        (["world", "o w"], "I said hell"),  # both complete within " world": "o w" first
        ([" world.", "ld"], "I said hello wor"),
        (["lo", " hello"], "I said"),  # both end with " hello": the longer one wins
    ],
)
def test_the_first_stop_to_complete_wins_whatever_the_tokens(
    gpt2: GPT2Tokenizer, stops: list[str], expected: str
) -> None:
    script = gpt2.encode("I said hello world.")  # "I", " said", " hello", " world", "."
    gen = run(ScriptedBackend(script, gpt2.vocab_size), gpt2, [1], max_new_tokens=9, stop=stops)
    assert gen.text == expected and gen.stats.stop_reason == "stop"


def test_partial_stop_is_held_back_then_released(char_tok: CharTokenizer) -> None:
    script = char_tok.encode("ab hello")
    gen = run(
        ScriptedBackend(script, char_tok.vocab_size),
        char_tok,
        [1],
        max_new_tokens=len(script),
        stop=["b hi"],
    )
    texts = [e.text for e in gen.events]  # type: ignore[attr-defined]
    assert texts[:5] == ["a", "", "", "", "b he"]  # "b", " ", "h" wait until "e" rules "b hi" out
    assert gen.text == "ab hello"
    # At the end of the stream a pending prefix is released in a final event (token -1).
    gen = run(
        ScriptedBackend(script, char_tok.vocab_size),
        char_tok,
        [1],
        max_new_tokens=len(script),
        stop=["llo!"],
    )
    events = gen.events  # type: ignore[attr-defined]
    assert events[-1].token == -1 and events[-1].text == "llo"
    assert gen.text == "ab hello" and gen.stats.stop_reason == "length"


@pytest.mark.parametrize("text", ["héllo 😀 日本語, ok 🎉🎉 naïve — 𝔘𝔫𝔦", "😀", "日本語"])
def test_utf8_streaming_never_prints_a_broken_character(gpt2: GPT2Tokenizer, text: str) -> None:
    script = gpt2.encode(text)
    assert any(len(gpt2.token_bytes(t).decode("utf-8", "ignore")) == 0 for t in script) or len(
        script
    ) < len(text.encode()), "the text must split characters across tokens"
    gen = run(ScriptedBackend(script, gpt2.vocab_size), gpt2, [1], max_new_tokens=len(script))
    events = gen.events  # type: ignore[attr-defined]
    assert "".join(e.text for e in events) == gpt2.decode(script) == text
    assert all("\ufffd" not in e.text for e in events)
    assert any(e.text == "" for e in events)  # some tokens were held back mid-character


def test_emoji_bytes_are_held_back_until_complete(gpt2: GPT2Tokenizer) -> None:
    script = gpt2.encode(" 😀!")  # b' \xf0\x9f\x98', b'\x80', b'!'
    assert [gpt2.token_bytes(t) for t in script] == [b" \xf0\x9f\x98", b"\x80", b"!"]
    gen = run(ScriptedBackend(script, gpt2.vocab_size), gpt2, [1], max_new_tokens=3)
    assert [e.text for e in gen.events] == [" ", "😀", "!"]  # type: ignore[attr-defined]


def test_incomplete_character_at_the_end_is_flushed_as_replacement(gpt2: GPT2Tokenizer) -> None:
    first = gpt2.encode(" 😀")[0]  # three bytes of a four-byte character
    gen = run(ScriptedBackend([first], gpt2.vocab_size), gpt2, [1], max_new_tokens=1)
    assert gen.text == gpt2.decode([first])  # one-shot decode agrees: " \ufffd"


def test_stop_string_with_multibyte_characters(gpt2: GPT2Tokenizer) -> None:
    script = gpt2.encode("我爱日本語和中文")
    gen = run(ScriptedBackend(script, gpt2.vocab_size), gpt2, [1], max_new_tokens=30, stop=["本語"])
    assert gen.text == "我爱日"


_ALPHABET = "ab \n日😀"


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(_ALPHABET, min_size=1, max_size=30),
    stops=st.lists(st.text(_ALPHABET, min_size=1, max_size=4), max_size=3),
)
def test_streamed_text_equals_one_shot_decode_cut_at_the_first_stop(
    text: str, stops: list[str]
) -> None:
    tok = _gpt2()
    script = tok.encode(text)
    gen = run(
        ScriptedBackend(script, tok.vocab_size), tok, [1], max_new_tokens=len(script), stop=stops
    )
    # Reference: feed one character at a time; stop at the first stop string to complete.
    expected, cuts = text, []
    for end in range(1, len(text) + 1):
        cuts = [text.find(s) for s in stops if text.find(s, 0, end) >= 0]
        if cuts:
            expected = text[: min(cuts)]
            break
    assert gen.text == expected
    assert "".join(e.text for e in gen.events) == expected  # type: ignore[attr-defined]
    assert gen.stats.stop_reason == ("stop" if cuts else "length")


# ---------------------------------------------------------------------------------------------
# Chat over a base model: the dialogue template.


def test_dialogue_render_and_stops() -> None:
    t = DialogueTemplate()
    turns = [
        Turn("user", "Hello, fair one.\n"),
        Turn("model", "Good morrow."),
        Turn("user", "How now?"),
    ]
    assert t.render(turns) == (
        "ROMEO:\nHello, fair one.\n\nJULIET:\nGood morrow.\n\nROMEO:\nHow now?\n\nJULIET:\n"
    )
    assert t.render([]) == "JULIET:\n"
    assert t.stop_strings() == ["\n\n", "\nROMEO:"]
    custom = DialogueTemplate(user="Q", model="A", turn="{name}: {text}\n", stops=["\n"])
    assert custom.render([Turn("user", "hi {there}")]) == "Q: hi {there}\nA: "
    assert custom.stop_strings() == ["\n", "\nQ:"]
    assert DialogueTemplate.clean("\nreply\n") == "reply"


def test_dialogue_reply_stops_at_the_next_user_turn_or_a_blank_line(
    char_tok: CharTokenizer,
) -> None:
    t = DialogueTemplate()
    for continuation, reply in [
        ("I am here.\nROMEO:\nno", "I am here."),
        ("Go hence.\n\nJULIET: more", "Go hence."),
        ("Two\nlines.\nROMEO: x", "Two\nlines."),
    ]:
        script = char_tok.encode(continuation)
        gen = run(
            ScriptedBackend(script, char_tok.vocab_size),
            char_tok,
            char_tok.encode(t.render([Turn("user", "hello")])),
            max_new_tokens=len(script),
            stop=t.stop_strings(),
        )
        assert t.clean(gen.text) == reply
        assert gen.stats.stop_reason == "stop"


# ---------------------------------------------------------------------------------------------
# Loading backends.


def test_load_backend(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = load_backend(tiny_dir, backend="auto")
    assert backend.name == "torch" and backend.block_size == 48
    assert load_backend(tiny_dir / "model.safetensors").name == "torch"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "step-000010").symlink_to(tiny_dir, target_is_directory=True)
    modeldir.point_latest(run_dir, run_dir / "step-000010")
    assert load_backend(run_dir).info.path == tiny_dir.resolve()
    with pytest.raises(EngineError, match="unknown backend"):
        load_backend(tiny_dir, backend="tensorflow")
    with pytest.raises(EngineError, match=r"no model\.onnx"):
        load_backend(tiny_dir, backend="onnx")
    with pytest.raises(ModelDirError, match="not found"):
        load_backend(tmp_path / "missing")
    with pytest.raises(ModelDirError, match="not a model directory"):
        load_backend(tmp_path)
    monkeypatch.setattr("minigpt_tui.models.BUNDLED_DIR", tmp_path / "no-bundle")
    with pytest.raises(EngineError, match="bundled default model"):
        load_backend(None)


def test_padded_model_vocabulary_generates_only_known_tokens(
    tmp_path: Path, char_tok: CharTokenizer
) -> None:
    path = make_model(tmp_path / "padded", block_size=16, vocab_pad=30)
    backend = load_backend(path, backend="torch")
    gen = run(backend, char_tok, char_tok.encode("hi"), temperature=2.0, seed=0, max_new_tokens=100)
    assert max(gen.generated) < char_tok.vocab_size
