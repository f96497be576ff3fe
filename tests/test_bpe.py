"""The byte-level BPE trained on a corpus (`--tokenizer bpe:N`): training, storage in data and
model directories, and its use by training, both engines, streaming, export onnx and info."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model import checkpoint, modeldir
from model.data import load_dataset, prepare
from model.modeldir import ModelDirError
from model.startup import RunOptions
from model.tokenizer import BPETokenizer, StreamDecoder, TokenizerError, from_spec, safe_cut
from model.train import train
from tests.helpers import TEXT, cli, expect_one_line_error, make_corpus

UNICODE = "Ünïcode, emoji 🎭 and\n\nnew   lines <|endoftext|> stay text"


def test_training_gives_n_tokens_with_end_of_text_and_round_trips() -> None:
    tok = BPETokenizer.train([TEXT[i : i + 500] for i in range(0, len(TEXT), 500)], 300)
    assert tok.vocab_size == 300 and tok.eot is not None
    assert tok.token_bytes(tok.eot) == b"<|endoftext|>"
    assert tok.decode(tok.encode(UNICODE)) == UNICODE
    assert tok.eot not in tok.encode(UNICODE)  # written end-of-text is text, as with gpt2
    assert len(tok.encode("ROMEO: But soft")) < len("ROMEO: But soft")  # it learned merges
    again = BPETokenizer.from_json(tok.hf_json())
    assert again.encode(UNICODE) == tok.encode(UNICODE) and again.spec() == tok.spec()


def test_training_is_the_librarys_own_byte_level_trainer() -> None:
    """benchmarks/tokenizer_train.py compares `bpe:N` with the library's trainer set up as
    here: the same text gives the same vocabulary and merges, whether it comes one text at a
    time (as data prepare streams it) or in batches (the library's fastest iterator)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [TEXT[i : i + 300] for i in range(0, len(TEXT), 300)]
    ours = BPETokenizer.train(iter(texts), 400)
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([texts[:10], texts[10:]], trainer)
    theirs = json.loads(hf.to_str())
    assert json.loads(ours.hf_json())["model"] == theirs["model"]
    assert json.loads(ours.hf_json())["pre_tokenizer"] == theirs["pre_tokenizer"]


MEMORY_SCRIPT = """
import random
from model.tokenizer import BPETokenizer
def kb(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
rng = random.Random(0)
words = ("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=8)) for _ in range(100_000))
texts = [" ".join(next(words) for _ in range(1000)) for _ in range(100)]
start = kb("VmRSS:")
BPETokenizer.train(iter(texts), 300)
print(kb("VmHWM:") - start, kb("VmRSS:") - start)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_training_gives_back_the_memory_of_its_word_counts() -> None:
    """data prepare tokenizes the corpus after training: the trainer's word counts (100k
    distinct words here) must not stay resident under it, as glibc keeps freed memory
    unless trimmed (model/tokenizer.py release_freed_memory)."""
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    grown, kept = map(int, run.stdout.split())
    assert grown > 20_000  # KB: the word counts took memory
    assert kept < grown / 3


def test_stream_decoding_joins_utf8_split_across_tokens() -> None:
    tok = BPETokenizer.train([TEXT], 280)  # no merges for the emoji: one token per byte
    ids = tok.encode("a🎭b")
    assert len(ids) == 6
    dec = StreamDecoder(tok)
    assert [dec.push(i) for i in ids] == ["a", "", "", "", "🎭", "b"]
    assert dec.flush() == ""


def test_safe_cut_holds_for_the_trained_tokenizer() -> None:
    tok = BPETokenizer.train([TEXT], 400)
    text = "def f():\n\n        return 1\n  x = 2\nROMEO: But soft\n\t\nend"
    whole = tok.encode(text)
    for end in range(len(text) + 1):
        cut = safe_cut(text, end)
        if cut:
            assert tok.encode(text[:cut]) + tok.encode(text[cut:]) == whole


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bpe:100", "error: bpe:N must be between 257 (256 bytes and end-of-text) and 262,144"),
        ("bpe:9999999", "error: bpe:N must be between 257"),
        ("bpe:x", "error: bpe:N needs a whole number of tokens, got 'bpe:x'"),
        ("bpe", "error: --tokenizer must be char, gpt2 or bpe:N, got 'bpe'"),
    ],
)
def test_bad_vocabulary_sizes_are_one_error_line(
    tmp_path: Path, capsys: Any, kind: str, message: str
) -> None:
    corpus = make_corpus(tmp_path)
    line = expect_one_line_error(
        capsys, "data", "prepare", corpus, "--out", tmp_path / "d", "--tokenizer", kind
    )
    assert line.startswith(message)
    assert not (tmp_path / "d").exists()


def test_trained_on_the_training_split_only(tmp_path: Path) -> None:
    text = "the cat sat on the mat\n" * 200 + "zyzzyva quixotic\n" * 30
    out = tmp_path / "d"
    res = prepare([make_corpus(tmp_path, text)], out, "bpe:320", val_fraction=0.1)
    ds = load_dataset(out)
    tok = ds.tokenizer()
    assert isinstance(tok, BPETokenizer) and res.vocab_size == tok.vocab_size
    assert "zyzzyva" not in tok.decode(list(ds.train))
    assert tok.decode(list(ds.val)).endswith("the mat\n" + "zyzzyva quixotic\n" * 30)
    assert len(tok.encode("zyzzyva")) == 7  # never seen in training: one token per byte
    assert len(tok.encode(" the cat")) <= 2
    assert (out / "tokenizer.json").read_text() == tok.hf_json()
    assert ds.meta["tokenizer"] == {
        "kind": "bpe",
        "file": "tokenizer.json",
        "vocab_size": tok.vocab_size,
        "sha256": tok.spec()["sha256"],
    }


def test_a_changed_tokenizer_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "d"
    prepare([make_corpus(tmp_path)], out, "bpe:300")
    spec = load_dataset(out).tokenizer_spec
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text().replace("ROM", "rom"))
    with pytest.raises(TokenizerError, match="checksum"):
        from_spec(spec, base=out)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("bpe")
    data = tmp / "data"
    prepare([make_corpus(tmp)], data, "bpe:300", val_fraction=0.2)
    run = tmp / "run"
    train(
        {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
        {"batch_size": 4, "max_iters": 4, "eval_interval": 2, "eval_iters": 1},
        RunOptions(data=data, out=run, device="cpu"),
    )
    return data, run


def test_training_stores_the_tokenizer_with_every_checkpoint(bpe_run: tuple[Path, Path]) -> None:
    data, run = bpe_run
    info = modeldir.read(run)
    assert info.tokenizer_spec == load_dataset(data).tokenizer_spec
    assert (info.path / "tokenizer.json").read_bytes() == (data / "tokenizer.json").read_bytes()
    assert info.config.vocab_size >= 300
    (info.path / "tokenizer.json").rename(info.path / "moved.json")
    try:
        with pytest.raises(ModelDirError, match=r"lacks tokenizer\.json"):
            modeldir.read(run)
    finally:
        (info.path / "moved.json").rename(info.path / "tokenizer.json")


def test_saving_a_bpe_model_without_its_tokenizer_is_refused(
    bpe_run: tuple[Path, Path], tmp_path: Path
) -> None:
    model, info = checkpoint.load(bpe_run[1])
    with pytest.raises(ModelDirError, match="tokenizer's files"):
        checkpoint.save(tmp_path / "m", model, info.meta)
    assert not (tmp_path / "m").exists()


def test_generate_info_eval_and_export_onnx_use_it(
    bpe_run: tuple[Path, Path], tmp_path: Path, capsys: Any
) -> None:
    data, run = bpe_run
    argv = ["-n", "12", "--temperature", "0", "ROMEO:"]
    capsys.readouterr()
    assert cli("generate", "-m", run, "--backend", "torch", *argv) == 0
    torch_text = capsys.readouterr().out
    assert cli("export", "onnx", run, "--out", tmp_path / "onnx") == 0
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()
    capsys.readouterr()
    assert cli("generate", "-m", tmp_path / "onnx", "--backend", "onnx", *argv) == 0
    assert capsys.readouterr().out == torch_text and torch_text.strip()
    assert cli("info", run) == 0
    assert "bpe (300 tokens, trained; tokenizer.json)" in capsys.readouterr().out
    assert cli("eval", run, "-d", data) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console may wrap it
    found = re.search(r"val loss ([\d.]+) nats, .*, ([\d.]+) bits per character", out)
    assert found, out
    loss, bpc = float(found[1]), float(found[2])
    meta = json.loads((data / "meta.json").read_text())
    tokens = meta["val_tokens"] - 1
    assert bpc == pytest.approx(loss * tokens / 0.6931471805599453 / meta["val_chars"], 1e-3)


def test_export_gguf_and_hf_carry_it_and_convert_hf_brings_it_back(
    bpe_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import numpy as np
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run = bpe_run
    ours = from_spec(modeldir.read(run).tokenizer_spec, base=modeldir.read(run).path)
    text = "ROMEO: Ünïcode and  spaces, KING HENRY"
    ids = ours.encode(text)

    assert cli("export", "gguf", run, "--out", tmp_path / "m.gguf") == 0
    reader = GGUFReader(str(tmp_path / "m.gguf"))
    field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    assert len(tokens) == modeldir.read(run).config.vocab_size
    hf_vocab = json.loads(ours.hf_json())["model"]["vocab"]  # type: ignore[attr-defined]
    assert all(tokens[i] == piece for piece, i in hf_vocab.items())

    assert cli("export", "hf", run, "--out", tmp_path / "hf") == 0
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok(text)["input_ids"] == ids
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    model, _ = checkpoint.load(run)
    with torch.no_grad():
        x = torch.tensor([ids[:16]])  # the block size
        ref = model.eval()(x, x)[0]  # with targets: the logits at every position
        got = hf_model(x).logits
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)

    assert cli("convert", "hf", tmp_path / "hf", "--out", tmp_path / "back") == 0
    back = modeldir.read(tmp_path / "back")
    assert back.tokenizer_spec == modeldir.read(run).tokenizer_spec
    assert (back.path / "tokenizer.json").read_bytes() == (
        modeldir.read(run).path / "tokenizer.json"
    ).read_bytes()
