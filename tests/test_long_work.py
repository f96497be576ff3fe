"""Long work is bounded and visible: the final validation's default bound, progress and Ctrl+C
skip; `eval` and `score` progress and --stride; windows of model/evaluate.py."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model import modeldir
from model.config import GPTConfig
from model.evaluate import split_loss, windows
from model.gpt import GPT
from model.startup import RunOptions
from model.train import train
from tests.helpers import cli, expect_one_line_error, make_data

TINY = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
SHORT = {"batch_size": 2, "max_iters": 4, "eval_interval": 4, "eval_iters": 1}


def run(tmp_path: Path, **kw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    tmp_path.mkdir(exist_ok=True)
    opts = RunOptions(
        data=make_data(tmp_path), out=tmp_path / "run", device="cpu", on_event=events.append, **kw
    )
    return train(TINY, SHORT, opts), events


@pytest.mark.parametrize("stride", [16, 5, 1])
def test_windows_predict_every_position_once(stride: int) -> None:
    plan = windows(101, 16, stride)
    covered = [p for _, end, first in plan for p in range(first, end)]
    assert covered == list(range(100))
    for start, end, first in plan:
        assert end - start <= 16
        if start:  # every window after the first gives its tokens >= 16 - stride of context
            assert first - start >= 16 - stride


def test_bounded_windows_are_evenly_spread_and_a_small_split_is_whole() -> None:
    assert windows(101, 16, max_tokens=1000) == windows(101, 16)
    plan = windows(100_001, 16, max_tokens=1600)
    assert 90 <= len(plan) <= 100
    starts = [s for s, _, _ in plan]
    assert starts[0] == 0 and starts[-1] > 99_000  # spread over the whole split
    with pytest.raises(ValueError, match="stride"):
        windows(100, 16, stride=17)


def test_split_loss_matches_a_plain_loop() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    tokens = np.random.default_rng(0).integers(0, 20, 61).astype(np.uint16)
    want, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for s in range(0, 60, 8):
            x = torch.from_numpy(tokens[s : min(s + 8, 60)].astype(np.int64))[None]
            y = torch.from_numpy(tokens[s + 1 : min(s + 8, 60) + 1].astype(np.int64))
            logits, _ = model(x)
            want += float(torch.nn.functional.cross_entropy(logits[0], y, reduction="sum"))
            n += y.numel()
    assert split_loss(model, tokens, 8, batch_size=3) == pytest.approx(want / n, rel=1e-6)
    done: list[int] = []
    split_loss(model, tokens, 8, batch_size=3, progress=done.append)
    assert sum(done) == 60


def test_final_validation_is_bounded_and_says_so(tmp_path: Path) -> None:
    whole, events = run(tmp_path, final_eval_tokens=None)
    assert not [e for e in events if e["event"] == "notice"]
    bounded, events = run(tmp_path / "b", final_eval_tokens=64)
    notes = [e["text"] for e in events if e["event"] == "notice"]
    covered = [int(m[1]) for n in notes if (m := re.search(r"covers (\d+) of the split's", n))]
    assert covered and 48 <= covered[0] <= 64
    assert bounded["val_loss_full"] is not None
    assert bounded["val_loss_full"] != whole["val_loss_full"]
    info = modeldir.read(tmp_path / "b" / "run")
    assert info.meta["summary"]["val_loss_full"] == bounded["val_loss_full"]


def test_the_default_bound_keeps_a_small_split_whole(tmp_path: Path) -> None:
    default = RunOptions(data=tmp_path, out=tmp_path).final_eval_tokens
    assert default is not None and default > 111_540  # Tiny Shakespeare's val split, char-level
    whole, _ = run(tmp_path, final_eval_tokens=None)
    bounded, _ = run(tmp_path / "d", final_eval_tokens=default)
    assert bounded["val_loss_full"] == whole["val_loss_full"]


def test_ctrl_c_skips_the_final_validation_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    def interrupt(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    result, events = run(tmp_path, on_progress=interrupt)
    assert len(seen) == 1 and seen[0][1] > seen[0][0]  # stopped after its first batch
    assert result["reason"] == "done" and result["val_loss_full"] is None
    assert any("final validation skipped" in e.get("text", "") for e in events)
    info = modeldir.read(tmp_path / "run")
    assert info.meta["summary"]["iter"] == SHORT["max_iters"]
    assert "val_loss_full" not in info.meta["summary"]


def test_train_shows_the_final_validations_progress(tmp_path: Path, capsys: Any) -> None:
    data = make_data(tmp_path)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cpu"]
    args += ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16"]
    args += ["--batch-size", "2", "--max-iters", "2", "--eval-iters", "1", "--no-samples"]
    assert cli(*args, "--final-eval-tokens", "32") == 0
    err = capsys.readouterr().err
    done = re.findall(r"final validation: (\d+)/(\d+) tokens \(Ctrl\+C skips it\)", err)
    assert done and done[-1][0] == done[-1][1] and 16 <= int(done[-1][1]) <= 32
    assert f"covers {done[-1][1]} of the split's" in err


class TokenByToken:
    """A torch backend without WindowScorer: scoring runs token by token through its cache."""

    def __init__(self, backend: Any) -> None:
        self.inner, self.name, self.info = backend, backend.name, backend.info
        self.block_size = backend.block_size

    def prefill(self, ids: Any) -> Any:
        return self.inner.prefill(ids)

    def decode(self, token: int) -> Any:
        return self.inner.decode(token)


@pytest.mark.parametrize("stride", [None, 1, 13, 31])
def test_scoring_in_passes_equals_token_by_token(tmp_path: Path, stride: int | None) -> None:
    from minigpt_tui.generation import load_backend
    from minigpt_tui.scoring import score_text
    from tests.helpers import TEXT, make_model

    backend = load_backend(make_model(tmp_path), backend="torch")
    tok, text = backend.info.tokenizer(), TEXT[:300]
    fast = score_text(backend, tok, text, stride=stride)
    slow = score_text(TokenByToken(backend), tok, text, stride=stride)  # type: ignore[arg-type]
    assert fast.n == slow.n == 299 and fast.windows == slow.windows > 1
    np.testing.assert_allclose(fast.bits, slow.bits, atol=1e-4)
    np.testing.assert_array_equal(fast.top_ids[:, 0], slow.top_ids[:, 0])
    assert fast.min_context == 32 - (stride or 8)


def test_score_stride_and_progress_on_the_command_line(tmp_path: Path, capsys: Any) -> None:
    from minigpt_tui import progress
    from tests.helpers import TEXT, make_model

    model = make_model(tmp_path)
    text = tmp_path / "t.txt"
    text.write_text(TEXT[:400])
    figures = {}
    for stride in ("8", "24"):
        assert cli("score", str(text), "-m", str(model), "--stride", stride, "--json") == 0
        figures[stride] = json.loads(capsys.readouterr().out)
    assert figures["8"]["windows"] > figures["24"]["windows"]
    assert figures["8"]["total_bits"] != figures["24"]["total_bits"]
    err = expect_one_line_error(capsys, "score", str(text), "-m", str(model), "--stride", "32")
    assert "--stride must be between 1 and 31" in err
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress, "LINE_SECONDS", 0.0)
        assert cli("score", str(text), "-m", str(model), "--backend", "torch") == 0
    assert re.search(r"scoring: [\d,]+/399 tokens", capsys.readouterr().err)


def test_eval_stride_and_progress(tmp_path: Path, capsys: Any) -> None:
    from minigpt_tui import progress
    from tests.helpers import make_model

    model, data = make_model(tmp_path), make_data(tmp_path)
    losses = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress, "LINE_SECONDS", 0.0)
        for stride in ("32", "8"):
            assert cli("eval", str(model), "--data", str(data), "--stride", stride) == 0
            out, err = capsys.readouterr()
            losses.append(float(re.search(r"val loss ([\d.]+)", out)[1]))  # type: ignore[index]
            assert re.search(r"val loss: [\d,]+/[\d,]+ tokens", err)
    assert losses[0] != losses[1]
    err = expect_one_line_error(capsys, "eval", str(model), "--data", str(data), "--stride", "33")
    assert "--stride must be at most the block size 32" in err


def test_the_progress_bar_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from minigpt_tui.progress import work_progress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with work_progress("scoring", 10, "tokens", console=console) as update:
        update(5)
        update(10)
    assert "scoring" in buf.getvalue() and "10/10 tokens" in buf.getvalue()
