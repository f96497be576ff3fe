"""Tokenizers and data preparation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model import corpus as corpus_mod
from model import data
from model.data import DataError, load_dataset, prepare, token_dtype
from model.tokenizer import CharTokenizer, GPT2Tokenizer, TokenizerError, from_spec
from tests.helpers import TEXT, cli, make_corpus


def test_gpt2_bpe_works_offline_with_known_ids() -> None:
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot == 50256
    text = "Ünïcode, emoji 🎭 and\nnew lines"
    assert tok.decode(tok.encode(text)) == text
    assert from_spec(tok.spec()).encode("Hello world") == [15496, 995]


def test_wrong_bpe_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(TokenizerError, match="GPT-2's BPE files"):
        GPT2Tokenizer(str(tmp_path))


def test_char_tokenizer_round_trip_and_unknown_characters() -> None:
    tok = CharTokenizer.from_text(["hello", " world\n"])
    assert tok.chars == "\n dehlorw"
    assert tok.decode(tok.encode("hello world")) == "hello world"
    with pytest.raises(TokenizerError, match=r"'Z' \(U\+005A\)"):
        tok.encode("hello Zed")
    assert from_spec(tok.spec()).chars == tok.chars


def test_prepare_char_splits_at_a_line_boundary(tmp_path: Path) -> None:
    out = tmp_path / "d"
    res = prepare([make_corpus(tmp_path)], out, "char", val_fraction=0.1)
    ds = load_dataset(out)
    assert res.train_tokens + res.val_tokens == len(TEXT)
    assert abs(res.val_tokens - 0.1 * len(TEXT)) < 80  # within a line of the 10% point
    tok = ds.tokenizer()
    assert tok.decode(list(ds.train)) + tok.decode(list(ds.val)) == TEXT
    assert tok.decode(list(ds.train)).endswith("\n")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == tok.vocab_size


def test_prepare_streams_in_chunks_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = make_corpus(tmp_path)
    prepare([corpus], tmp_path / "whole", "gpt2")
    monkeypatch.setattr(corpus_mod, "CHUNK_CHARS", 97)  # many chunks, cut mid-line
    prepare([corpus], tmp_path / "chunked", "gpt2")
    for split in ("train.bin", "val.bin"):
        assert (tmp_path / "whole" / split).read_bytes() == (
            tmp_path / "chunked" / split
        ).read_bytes()


def test_prepare_a_directory_with_gpt2(tmp_path: Path) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_text("Hello world\n" * 50)
    (src / "b.md").write_text("To be, or not to be\n" * 50)
    res = prepare(data.source_files(src), tmp_path / "out", "gpt2", val_fraction=0.2)
    ds = load_dataset(tmp_path / "out")
    assert ds.train[:2].tolist() == [15496, 995]
    assert res.train_tokens > res.val_tokens > 0


def test_large_vocabularies_use_uint32() -> None:
    assert token_dtype(65) == np.uint16
    assert token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32


def test_cli_prepare_shakespeare_from_a_local_file(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    assert (
        cli("data", "prepare", "shakespeare", "--from-file", corpus, "--out", tmp_path / "sc") == 0
    )
    assert load_dataset(tmp_path / "sc").meta["source"] == "tinyshakespeare"
    before = (tmp_path / "sc" / "train.bin").read_bytes()
    # An existing output is refused without --force and left as it was.
    assert cli("data", "prepare", corpus, "--out", tmp_path / "sc", "--val-fraction", "0.5") == 1
    assert (tmp_path / "sc" / "train.bin").read_bytes() == before
    assert (
        cli("data", "prepare", corpus, "--out", tmp_path / "sc", "--val-fraction", "0.5", "--force")
        == 0
    )
    assert (tmp_path / "sc" / "train.bin").read_bytes() != before


def test_bad_corpora(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        prepare([empty], tmp_path / "o1", "char")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc\n")
    with pytest.raises(DataError, match="not UTF-8"):
        prepare([binary], tmp_path / "o2", "char")
    assert not (tmp_path / "o2").exists()


def _indented_source(n_funcs: int) -> str:
    """Python-like text: blank-line runs and indentation at every line boundary."""
    parts = []
    for i in range(n_funcs):
        parts.append(
            f"class C{i}:\n\n\n    def f(self, x):\n        y = x * {i}\n\n        return y\n"
            f"  \n\t\n    # note {i}   \n\n\n\n        pass\n"
        )
    return "".join(parts)


def test_threaded_gpt2_encoding_equals_whole_text_encoding() -> None:
    text = _indented_source(3000)
    assert len(text) > 100_000
    tok = GPT2Tokenizer()
    whole = tok._enc.encode_ordinary(text)  # tiktoken on the whole text, one piece
    for threads in (2, 3, 8):
        (ids,) = data.encode_texts(tok, [text], threads)
        assert ids.tolist() == whole


def test_chunked_prepare_of_indented_text_equals_whole_text_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _indented_source(600)
    corpus = make_corpus(tmp_path, text, "src.py")
    monkeypatch.setattr(corpus_mod, "CHUNK_CHARS", 1000)  # many chunks, each ending near blank runs
    prepare([corpus], tmp_path / "d", "gpt2", val_fraction=0)
    tok = GPT2Tokenizer()
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)
    assert train.tolist() == tok._enc.encode_ordinary(text)


def test_every_safe_cut_keeps_the_tokens_of_the_whole() -> None:
    import random

    from model.tokenizer import safe_cut

    rng = random.Random(0)
    atoms = ["a", "b1", " ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u3000", "'s", ".", "é", " x"]
    tok = GPT2Tokenizer()
    for _ in range(300):
        text = "".join(rng.choice(atoms) for _ in range(30))
        whole = tok._enc.encode_ordinary(text)
        for end in range(len(text) + 1):
            cut = safe_cut(text, end)
            if cut:
                assert 0 < cut <= end
                pieces = tok._enc.encode_ordinary(text[:cut]) + tok._enc.encode_ordinary(text[cut:])
                assert pieces == whole, (text, cut)


def test_gpt2_prepare_treats_written_end_of_text_as_text(tmp_path: Path) -> None:
    text = ("a <|endoftext|> b\n" * 20_000) + "end\n"
    prepare([make_corpus(tmp_path, text)], tmp_path / "d", "gpt2", val_fraction=0)
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16)
    assert train.tolist() == GPT2Tokenizer()._enc.encode_ordinary(text)
    assert 50256 not in train
