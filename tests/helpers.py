"""Small shared builders for tests: text, prepared data, tiny models, training command lines,
and the hostile text no output may pass on to a terminal."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from model import checkpoint, modeldir
from model.config import GPTConfig
from model.data import prepare
from model.gpt import GPT
from model.tokenizer import CharTokenizer, Tokenizer

TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
) * 40

# A model name / text that would set the terminal title, clear the screen, turn text red
# (C1 CSI, one byte) and break or eat rich markup, if anything passed it on as it is.
EVIL = "\x1b]0;PWNED\x07\x1b[2J[/][old]\x9b31m\u202eevil"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")  # none of these may reach the terminal


def assert_inert(text: str) -> None:
    """Nothing in `text` can drive a terminal, and markup came out as the characters it is."""
    for ch in RAW:
        assert ch not in text, f"{ch!r} reached the output: {text!r}"


def make_corpus(tmp: Path, text: str = TEXT, name: str = "corpus.txt") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def make_data(tmp: Path, text: str = TEXT, tokenizer: str = "char") -> Path:
    out = tmp / f"data-{tokenizer}"
    prepare([make_corpus(tmp, text)], out, tokenizer, val_fraction=0.2)
    return out


def make_model(
    tmp: Path, name: str = "tiny", block_size: int = 32, seed: int = 0, text: str = TEXT
) -> Path:
    import torch

    torch.manual_seed(seed)
    tok = CharTokenizer.from_text([text])
    cfg = GPTConfig(
        vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16
    )
    path = tmp / name
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, tok, name=name))
    return path


def make_chat_model(
    path: Path, tokenizer: Tokenizer, reply: str, vocab_pad: int = 0, seed: int = 0
) -> Path:
    """A tiny chat model whose greedy reply to any conversation is `reply` and then <|end|>.

    Random weights (an untied head), except that the token embedding of <|assistant|>, of each
    token of `reply` and of <|end|> is a large random vector, and the head's row of the token
    that follows each of them points along what ln_f makes of it: each step's logit for the
    next token of the chain is about 10 above every other. The blocks' small contribution
    leaves the chain in charge, so every runtime decodes exactly this reply and stops.
    `vocab_pad` extra rows stand for a vocabulary padded for training (--vocab-size 50304).
    """
    import torch

    chat = tokenizer.chat
    assert chat is not None, "a chat tokenizer is needed"
    chain = [chat.assistant, *tokenizer.encode(reply), chat.end]
    assert len(set(chain)) == len(chain), "the reply's tokens must differ from one another"
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=tokenizer.vocab_size + vocab_pad,
        block_size=256,
        n_layer=2,
        n_head=2,
        n_embd=64,
        tie_weights=False,
    )
    model = GPT(cfg)
    with torch.no_grad():
        for a, b in itertools.pairwise(chain):
            v = torch.randn(cfg.n_embd)
            model.wte.weight[a] = 4 * v
            model.lm_head.weight[b] += 10 * (v - v.mean()) / v.std() / cfg.n_embd
    meta = modeldir.make_meta(cfg, tokenizer, name=path.name)
    checkpoint.save(path, model, meta, replace=True, tokenizer=tokenizer)
    return path


def cli(*args: str) -> int:
    """Run the CLI in-process; returns its exit code."""
    from minigpt_tui.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def expect_one_line_error(capsys: Any, *args: Any) -> str:
    """Run the CLI in-process; assert a non-zero exit, no traceback, and that stderr ends with
    ONE `error: ...` line (progress a command printed before failing may come above it).
    Returns that line."""
    capsys.readouterr()
    code = cli(*args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"{args} exited 0; stderr: {err!r}"
    assert "Traceback" not in err, f"{args}: {err}"
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"{args}: {err!r}"
    return errors[0]


TINY_SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "32"]


def tiny_train_args(data: Path, out: Path, *extra: str) -> list[Any]:
    """`train` on the CPU, quick and quiet, with a checkpoint every 5 steps."""
    return [
        "train", "--data", data, "--out", out, "--device", "cpu", "--no-samples",
        "--no-final-eval", "--batch-size", "4", "--eval-iters", "1", "--eval-interval", "5",
        "--ckpt-interval", "5", "--log-interval", "5", *extra,
    ]  # fmt: skip


RUN_FLAGS = ["--device", "cpu", "--no-samples", "--no-final-eval", "--batch-size", "4"]
RUN_FLAGS += ["--eval-iters", "1"]
SHAPE = ["--block-size", "16", "--n-layer", "1", "--n-head", "2"]


def train_argv(data: Path, out: Path, *extra: str, width: int = 16) -> list[str]:
    """`train` of a one-layer model `width` wide (a resumed run keeps its shape)."""
    shape = [] if "--resume" in extra else [*SHAPE, "--n-embd", str(width)]
    return ["train", "--data", str(data), "--out", str(out), *RUN_FLAGS, *shape, *extra]
