"""minigpt_tui/streams.py: compare panes on one ONNX model get their own KV caches over one
session (one copy of the weights), and run side by side without disturbing each other."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from minigpt_tui.engine import Generation, load_backend
from minigpt_tui.sampling import SamplingSettings
from minigpt_tui.streams import fork, stream_slots
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
