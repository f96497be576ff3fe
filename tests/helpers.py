"""Small shared builders for tests: text, prepared data and tiny models."""

from __future__ import annotations

from pathlib import Path

from model import checkpoint, modeldir
from model.config import GPTConfig
from model.data import prepare
from model.gpt import GPT
from model.tokenizer import CharTokenizer

TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
) * 40


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


def cli(*args: str) -> int:
    """Run the CLI in-process; returns its exit code."""
    from minigpt_tui.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
