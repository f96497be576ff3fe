"""`minigpt-tui score` and minigpt_tui/scoring.py, checked against the torch model's own loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TEXT, cli, expect_one_line_error

from minigpt_tui.generation import load_backend
from minigpt_tui.scoring import score_ids, score_text, surprisal_bits
from model import checkpoint
from tests.test_onnx import build

BLOCK = 32


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_onnx

    path = build(tmp_path_factory.mktemp("score") / "m", block_size=BLOCK, sharpen=4.0)
    export_onnx(path, verify=False)
    return path


def torch_bits(model_dir: Path, ids: list[int]) -> np.ndarray:
    """Surprisal (bits) of ids[1:] from the plain training forward pass, in one block."""
    net, _ = checkpoint.load(model_dir, "cpu")
    net.eval()
    x = torch.tensor([ids[:-1]])
    y = torch.tensor([ids[1:]])
    with torch.no_grad():
        logits, loss = net(x, y)
        logp = torch.log_softmax(logits[0].double(), dim=-1)
    per_token = -logp[torch.arange(len(ids) - 1), y[0]] / math.log(2)
    assert loss is not None
    # The loss the model reports is the mean of the same per-token values, in nats.
    assert float(loss) * (len(ids) - 1) / math.log(2) == pytest.approx(
        float(per_token.sum()), rel=1e-5
    )
    return per_token.numpy()


def test_cli_figures_match_the_torch_loss(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TEXT[: BLOCK + 1]  # 33 characters: 32 scored tokens, exactly one block
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert cli("score", path, "--model", onnx_model, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    ids = modeldir_ids(onnx_model, text)
    expected = torch_bits(onnx_model, ids)
    assert out["backend"] == "onnx" and out["windows"] == 1 and out["tokens"] == BLOCK
    assert out["total_bits"] == pytest.approx(float(expected.sum()), rel=1e-4)
    assert out["characters"] == len(text) - 1  # the first character has no context
    assert out["bits_per_char"] == pytest.approx(expected.sum() / (len(text) - 1), rel=1e-4)
    assert out["perplexity"] == pytest.approx(2 ** expected.mean(), rel=1e-4)
    per = out["per_token"]
    assert [p["id"] for p in per] == ids[1:]
    assert [p["text"] for p in per] == list(text[1:])
    np.testing.assert_allclose([p["bits"] for p in per], expected, rtol=1e-4, atol=1e-5)
    for p in per:
        probs = [a["prob"] for a in p["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert p["prob"] <= probs[0] + 1e-6

    capsys.readouterr()
    assert cli("score", path, "--model", onnx_model) == 0
    printed = capsys.readouterr().out
    assert f"{expected.sum():,.1f} bits" in printed
    assert f"bits/char    {expected.sum() / (len(text) - 1):.4f}" in printed


def test_long_text_is_scored_in_windows_and_says_so(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TEXT[:100]
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert cli("score", path, "--model", onnx_model, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 99 and out["windows"] > 1
    assert any("sliding windows" in note for note in out["notes"])
    ids = modeldir_ids(onnx_model, text)
    bits = np.array([p["bits"] for p in out["per_token"]])
    # The first block is scored with the whole prefix as context, like the training pass.
    np.testing.assert_allclose(bits[:BLOCK], torch_bits(onnx_model, ids[: BLOCK + 1]), rtol=1e-4)
    capsys.readouterr()
    assert cli("score", path, "--model", onnx_model) == 0
    err = capsys.readouterr().err
    assert "sliding windows" in err and "at least 24 tokens" in err


def modeldir_ids(model: Path, text: str) -> list[int]:
    from model import modeldir

    return modeldir.read(model).tokenizer().encode(text)


def test_windows_match_the_torch_model_on_each_window(onnx_model: Path) -> None:
    """After a slide every token is predicted from the window the engine keeps."""
    backend = load_backend(onnx_model)
    tok = backend.info.tokenizer()
    ids = tok.encode(TEXT[:80])
    result = score_ids(backend, ids, tok.vocab_size, [])
    # Replay the engine's windows: the context before token j+1 is what the loop held.
    from minigpt_tui.generation import window

    context, cache, contexts = ids[:1], 1, []
    for j in range(1, len(ids)):
        contexts.append(list(context))
        context.append(ids[j])
        if cache >= BLOCK:
            context = window(context, BLOCK)
            cache = len(context)
        else:
            cache += 1
    for j in (40, 60, len(ids) - 2):
        ctx = contexts[j]
        assert len(ctx) >= BLOCK - BLOCK // 4
        want = torch_bits(onnx_model, [*ctx, ids[j + 1]])[-1]
        assert result.bits[j] == pytest.approx(want, rel=1e-3)


def test_first_token_scored_from_end_of_text() -> None:
    """A vocabulary with end-of-text: the first token is predicted from it (GPT-2 style)."""

    class Backend:
        block_size = 8
        seen: list[list[int]] = []  # noqa: RUF012

        def prefill(self, ids: list[int]) -> np.ndarray:
            self.seen.append(list(ids))
            return np.arange(5, dtype=np.float32)

        def decode(self, token: int) -> np.ndarray:
            return np.arange(5, dtype=np.float32)[::-1].copy()

    result = score_ids(Backend(), [1, 2, 3], 5, [4])  # type: ignore[arg-type]
    assert Backend.seen == [[4]] and result.n == 3 and not result.first_unscored
    assert result.bits[0] == pytest.approx(surprisal_bits(np.arange(5.0), 1))
    assert result.bits[1] == pytest.approx(surprisal_bits(np.arange(5.0)[::-1], 2))
    assert list(result.top_ids[0][:2]) == [4, 3]


def test_score_text_counts_characters_it_scored(onnx_model: Path) -> None:
    backend = load_backend(onnx_model)
    result = score_text(backend, backend.info.tokenizer(), "ROMEO: soft")
    assert result.n == 10 and result.characters == 10
    assert result.bits_per_char == pytest.approx(result.total_bits / 10)


def test_bad_files_are_one_line_errors(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\x00\x01\x02abc")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    unknown = tmp_path / "u.txt"
    unknown.write_text("ROMEO: €uro", encoding="utf-8")
    one = tmp_path / "one.txt"
    one.write_text("R")
    cases = {
        binary: "binary data",
        latin: "not a UTF-8 text file",
        empty: "is empty",
        unknown: "'€'",
        one: "one token long",
        tmp_path / "missing.txt": "no such file",
        tmp_path: "is a directory",
    }
    for path, words in cases.items():
        line = expect_one_line_error(capsys, "score", path, "--model", onnx_model)
        assert words in line, line


def test_the_score_view_shows_control_characters_inert() -> None:
    """A token's text (a BPE vocabulary, or the pasted text) may hold ESC: never drawn raw."""
    from minigpt_tui.scoring import Score
    from minigpt_tui.tui.widgets.score_view import ScoredText

    pieces = {0: "\x1b]0;TITLE\x07", 1: "\x1b[2J", 2: "ok"}
    score = Score(
        tokens=np.array([1, 2]),
        bits=np.array([1.0, 2.0]),
        top_ids=np.array([[1], [2]]),
        top_probs=np.array([[0.5], [0.25]]),
        characters=6,
        block_size=8,
        first_unscored=True,
        unscored_ids=[0],
    )
    view = ScoredText()
    view.redraw = lambda: None  # type: ignore[method-assign]  # drawing needs a mounted app
    view.show(score, lambda ids: "".join(pieces[i] for i in ids))
    shown = [view.lead, *view.texts]
    assert not any("\x1b" in s or "\x07" in s for s in shown)
    assert shown == ["\\x1b]0;TITLE\\x07", "\\x1b[2J", "ok"]
