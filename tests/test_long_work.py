"""Long work is bounded and visible: the final validation's default bound, progress and Ctrl+C
skip; `eval` and `score` progress and --stride; windows of model/evaluate.py."""

from __future__ import annotations

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
from tests.helpers import cli, make_data

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
