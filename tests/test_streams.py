"""minigpt_tui/streams.py: compare panes on one ONNX model get their own KV caches over one
session (one copy of the weights), and run side by side without disturbing each other."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from minigpt_tui.generation import Generation, TokenEvent, load_backend
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.streams import fork, lockstep, stream_slots
from tests.test_onnx import build


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_onnx

    path = build(tmp_path_factory.mktemp("streams") / "m", block_size=32, sharpen=4.0)
    export_onnx(path, verify=False)
    return path


def settings(seed: int) -> SamplingSettings:
    return SamplingSettings(temperature=1.0, max_new_tokens=70, seed=seed)


def test_streams_share_the_session_and_match_one_at_a_time(onnx_model: Path) -> None:
    backend = load_backend(onnx_model)
    tok = backend.info.tokenizer()
    prompt = tok.encode("ROMEO:")
    alone = []
    for seed in (1, 2, 3):
        gen = Generation(backend, tok, prompt, settings(seed))
        list(gen)
        alone.append(gen.text)
    slots = stream_slots(backend, 3, threading.Lock())
    assert len({id(s.lock) for s in slots}) == 3  # each runs on its own
    assert all(s.backend.model is backend.model for s in slots)  # type: ignore[attr-defined]
    # Step the three generations in turn, one token each: no stream sees another's cache.
    gens = [Generation(s.backend, tok, prompt, settings(i + 1)) for i, s in enumerate(slots)]
    its = [iter(g) for g in gens]
    live = set(range(3))
    while live:
        for i in sorted(live):
            if next(its[i], None) is None:
                live.discard(i)
    assert [g.text for g in gens] == alone
    assert gens[0].stats.slides >= 1  # long enough to slide past the 32-token window


def test_other_backends_take_turns_on_one_lock() -> None:
    from test_tui_support import FakeBackend

    fake = FakeBackend()
    lock = threading.Lock()
    assert fork(fake) is None  # type: ignore[arg-type]
    slots = stream_slots(fake, 2, lock)  # type: ignore[arg-type]
    assert all(s.backend is fake and s.lock is lock for s in slots)


def test_lockstep_gives_each_stream_exactly_its_text_alone(onnx_model: Path) -> None:
    """Three generations decoded together, each with its own prompt, settings and seed, give
    the events each gives alone: through window slides, a stop string, an early end (that
    stream then sits out) and a cancel."""
    backend = load_backend(onnx_model)
    tok = backend.info.tokenizer()
    prompts = [tok.encode(p) for p in ("ROMEO:", "JULIET:\nO Romeo", "")]
    runs = [
        SamplingSettings(temperature=1.0, max_new_tokens=90, seed=1),
        SamplingSettings(temperature=0.8, top_k=5, repetition_penalty=1.3, max_new_tokens=20),
        SamplingSettings(temperature=1.2, top_p=0.9, max_new_tokens=120, seed=3),
    ]
    runs[1].seed = 2
    first = Generation(backend, tok, prompts[2], runs[2])
    runs[2].stop = ["".join(e.text for e in first)[60:62]]  # a stop string it will meet

    def alone(i: int, cancel_after: int = 0) -> tuple[list[TokenEvent], Generation]:
        gen = Generation(backend, tok, prompts[i], runs[i])
        events = []
        for event in gen:
            events.append(event)
            if len(events) == cancel_after:
                gen.cancel.set()
        return events, gen

    def together(cancel_after: int = 0) -> tuple[list[list[TokenEvent]], list[Generation]]:
        gens = [Generation(backend, tok, p, s) for p, s in zip(prompts, runs, strict=True)]
        events: list[list[TokenEvent]] = [[], [], []]
        ended: list[int] = []

        def on_event(i: int, event: TokenEvent) -> None:
            assert i not in ended
            events[i].append(event)
            if i == 0 and len(events[0]) == cancel_after:
                gens[0].cancel.set()

        batch = lockstep(backend, 4)
        assert batch is not None
        batch.run(gens, on_event, ended.append)
        assert sorted(ended) == [0, 1, 2]
        return events, gens

    events, gens = together()
    for i, gen in enumerate(gens):
        want, ref = alone(i)
        assert events[i] == want and gen.text == ref.text and len(want) > 5
        assert gen.stats.stop_reason == ref.stats.stop_reason
        assert gen.stats.slides == ref.stats.slides
    reasons = [g.stats.stop_reason for g in gens]
    assert reasons == ["length", "length", "stop"]
    assert gens[0].stats.slides >= 2 and gens[2].stats.slides >= 1  # past the 32-token block
    assert len(gens[1].generated) == 20  # it ended first and sat out the later steps
    events, gens = together(cancel_after=7)
    assert events[0] == alone(0, cancel_after=7)[0] and len(events[0]) == 7
    assert gens[0].stats.stop_reason == "cancelled"
    assert [events[i] for i in (1, 2)] == [alone(1)[0], alone(2)[0]]
    assert gens[0].stats.tokens_per_second > 0


def test_lockstep_stopped_before_it_began_runs_nothing(onnx_model: Path) -> None:
    backend = load_backend(onnx_model)
    tok = backend.info.tokenizer()
    gens = [Generation(backend, tok, tok.encode("ROMEO:"), settings(i)) for i in range(2)]
    gens[1].cancel.set()
    batch = lockstep(backend, 2)
    assert batch is not None
    batch.run(gens, lambda i, e: None, lambda i: None)
    assert [g.stats.stop_reason for g in gens] == ["length", "cancelled"]
    assert gens[1].stats.new_tokens == 0
    assert batch.streams.lengths[1] == 0  # type: ignore[attr-defined]  # never prefilled


def test_lockstep_only_where_the_backend_decodes_streams_together() -> None:
    from test_tui_support import FakeBackend

    assert lockstep(FakeBackend(), 4) is None  # type: ignore[arg-type]
