"""`export gguf` and `export hf`: files that llama.cpp's format and transformers read back as
this project's model, with its tokenizer (char, GPT-2 BPE, and a trained byte-level BPE)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from export import weights
from export.gguf_export import gguf_tensors, write_gguf
from export.hf_export import bpe_tokenizer_files, hf_config, hf_state_dict, write_hf
from export.options import ExportError
from export.vocab import INERT_MERGE, VocabError, byte_level, char_vocab, from_hf_json
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import CharTokenizer, GPT2Tokenizer, gpt2_bpe_files
from tests.helpers import TEXT, cli, expect_one_line_error, make_model

UNICODE_TEXT = "Ça va? Naïve café — 10€ ☃ 😀 déjà vu, ﬁn.\n" * 3


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-formats")


def char_model_of(path: Path, text: str, seed: int, n_embd: int = 32) -> Path:
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text([text])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=n_embd)
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, tok, name=path.name))
    return path


@pytest.fixture(scope="module")
def char_model(root: Path) -> Path:
    return char_model_of(root / "char", TEXT, seed=1)


@pytest.fixture(scope="module")
def unicode_model(root: Path) -> Path:
    return char_model_of(root / "unicode", UNICODE_TEXT, seed=2)


@pytest.fixture(scope="module")
def gpt2_model(root: Path) -> Path:
    """GPT-2's vocabulary, no biases and an untied head: the other side of every option."""
    torch.manual_seed(3)
    cfg = GPTConfig(
        vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=False,
        tie_weights=False,
    )  # fmt: skip
    path = root / "gpt2"
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, GPT2Tokenizer(), name="gpt2"))
    return path


@pytest.fixture(scope="module")
def bpe_json() -> str:
    """A small byte-level BPE trained here with Hugging Face tokenizers, as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = Path(__file__).read_text(encoding="utf-8") + UNICODE_TEXT
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return str(tok.to_str())


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, tensors) of a GGUF file, as gguf's own reader sees them."""
    reader = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return meta, {t.name: t for t in reader.tensors}


def key(template: str) -> str:
    return template.format(arch="gpt2")


# --- GGUF -----------------------------------------------------------------------------------


def test_gguf_f32_reads_back_exactly(root: Path, char_model: Path, capsys: Any) -> None:
    out = root / "char-f32.gguf"
    assert cli("export", "gguf", char_model, "--out", out) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "llama-completion" in err  # the tool the README names
    meta, tensors = read_gguf(out)
    info = modeldir.read(char_model)
    cfg, chars = info.config, info.tokenizer_spec["chars"]
    K = gguf.Keys
    assert meta[K.General.ARCHITECTURE] == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2] == "gpt2"
    assert meta[K.General.NAME] == "char"
    assert meta[K.General.FILE_TYPE] == gguf.LlamaFileType.ALL_F32
    assert meta[key(K.LLM.CONTEXT_LENGTH)] == cfg.block_size
    assert meta[key(K.LLM.EMBEDDING_LENGTH)] == cfg.n_embd
    assert meta[key(K.LLM.FEED_FORWARD_LENGTH)] == 4 * cfg.n_embd
    assert meta[key(K.LLM.BLOCK_COUNT)] == cfg.n_layer
    assert meta[key(K.Attention.HEAD_COUNT)] == cfg.n_head
    assert meta[key(K.Attention.LAYERNORM_EPS)] == pytest.approx(1e-5)
    assert meta[K.Tokenizer.MODEL] == "gpt2" and meta[K.Tokenizer.PRE] == "gpt-2"
    # One token per character, written as GPT-2's byte-level text: " " is "Ġ", "\n" is "Ċ".
    assert meta[K.Tokenizer.LIST] == [byte_level(ch) for ch in chars]
    assert meta[K.Tokenizer.LIST][chars.index(" ")] == "Ġ"
    assert meta[K.Tokenizer.MERGES] == [INERT_MERGE]  # ASCII: no merge needed
    assert meta[K.Tokenizer.TOKEN_TYPE] == [gguf.TokenType.NORMAL] * len(chars)
    assert K.Tokenizer.EOS_ID not in meta  # a char vocabulary has no end-of-text
    # Every tensor llama.cpp's gpt2 loader asks for, bit for bit our weights.
    sd = weights.load(info)
    expected = gguf_tensors(cfg, sd)
    assert set(tensors) == set(expected)
    names = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GPT2]}
    assert {re.sub(r"\.\d+\.", ".{bid}.", n.rsplit(".", 1)[0]) for n in tensors} == names - {
        "output"
    }
    # What llama.cpp's src/models/gpt2.cpp loads, by name (read from its source).
    assert {"blk.1.attn_qkv.weight", "blk.1.ffn_down.bias", "output_norm.bias"} <= set(tensors)
    for name, t in tensors.items():
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert np.array_equal(t.data, expected[name]), name
    assert np.array_equal(tensors["token_embd.weight"].data, sd["wte.weight"])
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_gguf_f16_and_q8_0(root: Path, char_model: Path, qtype: str) -> None:
    out = root / f"char-{qtype}.gguf"
    assert cli("export", "gguf", char_model, "--out", out, "--type", qtype) == 0
    _, tensors = read_gguf(out)
    sd = weights.load(modeldir.read(char_model))
    expected = gguf_tensors(modeldir.read(char_model).config, sd)
    want = gguf.GGMLQuantizationType.F16 if qtype == "f16" else gguf.GGMLQuantizationType.Q8_0
    for name, t in tensors.items():
        kept_f32 = len(t.shape) == 1 or name.startswith("position_embd")
        assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if kept_f32 else want), name
        assert np.array_equal(t.data, gguf.quants.quantize(expected[name], t.tensor_type))
        back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(expected[name].shape)
        scale = np.abs(expected[name]).max()
        assert np.abs(back - expected[name]).max() <= scale / (2000 if qtype == "f16" else 200)
    assert out.stat().st_size < (root / "char-f32.gguf").stat().st_size


def test_gguf_q8_0_keeps_rows_that_are_not_whole_blocks_in_f16(root: Path) -> None:
    narrow = make_model(root, name="narrow")  # 16 wide: rows of 16, Q8_0 blocks are 32
    out = root / "narrow-q8_0.gguf"
    assert cli("export", "gguf", narrow, "--out", out, "--type", "q8_0") == 0
    _, tensors = read_gguf(out)
    assert tensors["blk.0.attn_qkv.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_gguf_gpt2_vocab_untied_and_bias_free(root: Path, gpt2_model: Path) -> None:
    out = root / "gpt2.gguf"
    assert cli("export", "gguf", gpt2_model, "--out", out) == 0
    meta, tensors = read_gguf(out)
    K = gguf.Keys.Tokenizer
    encoder_path, _ = gpt2_bpe_files()
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    tokens = meta[K.LIST]
    assert len(tokens) == 50257 and all(tokens[i] == t for t, i in encoder.items())
    assert meta[K.MERGES][:2] == ["Ġ t", "Ġ a"] and len(meta[K.MERGES]) == 50000
    assert meta[K.EOS_ID] == meta[K.BOS_ID] == 50256
    assert meta[K.TOKEN_TYPE][50256] == gguf.TokenType.CONTROL
    assert meta[K.ADD_BOS] is False
    sd = weights.load(modeldir.read(gpt2_model))
    assert np.array_equal(tensors["output.weight"].data, sd["lm_head.weight"])
    assert not tensors["blk.1.ffn_up.bias"].data.any()  # zero biases for a bias-free model


def apply_merges(text: str, merges: list[str]) -> list[str]:
    """Byte-level BPE as llama.cpp runs it: repeatedly join the adjacent pair of lowest rank."""
    rank = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    symbols = list(byte_level(text))
    while True:
        pairs = [(rank.get(p, len(rank)), i) for i, p in enumerate(itertools.pairwise(symbols))]
        best, i = min(pairs, default=(len(rank), 0))
        if best == len(rank):
            return symbols
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]


def test_char_vocab_of_multibyte_characters_tokenizes_one_token_per_character(
    root: Path, unicode_model: Path
) -> None:
    chars = modeldir.read(unicode_model).tokenizer_spec["chars"]
    assert any(len(ch.encode()) == 4 for ch in chars)  # up to 4-byte characters
    vocab = char_vocab(chars)
    token_id = {t: i for i, t in enumerate(vocab.tokens)}
    ids = [token_id[s] for s in apply_merges(UNICODE_TEXT, vocab.merges)]
    assert ids == CharTokenizer(chars).encode(UNICODE_TEXT)
    out = root / "unicode.gguf"
    assert cli("export", "gguf", unicode_model, "--out", out, "--type", "q8_0") == 0
    meta, _ = read_gguf(out)
    assert meta[gguf.Keys.Tokenizer.MERGES] == vocab.merges
    assert meta[gguf.Keys.Tokenizer.LIST] == vocab.tokens


def test_gguf_bpe_from_tokenizer_json(root: Path, bpe_json: str) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(bpe_json)
    vocab = from_hf_json(bpe_json)
    assert len(vocab.tokens) == hf.get_vocab_size() == 320
    assert all(vocab.tokens[i] == t for t, i in hf.get_vocab().items())
    eot = hf.token_to_id("<|endoftext|>")
    assert vocab.eot == eot and vocab.types[eot] == gguf.TokenType.CONTROL
    text = "def read_gguf(path: Path) -> tuple:\n    return 'naïve café'"
    token_id = {t: i for i, t in enumerate(vocab.tokens)}
    # Our reference BPE on whole words agrees with tokenizers' own encoding.
    import regex

    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    ids = [token_id[s] for w in regex.findall(pattern, text) for s in apply_merges(w, vocab.merges)]
    assert ids == hf.encode(text).ids
    # A model of that vocabulary padded to 384 rows: written with the tokenizer's 320.
    torch.manual_seed(4)
    cfg = GPTConfig(vocab_size=384, block_size=16, n_layer=1, n_head=2, n_embd=32)
    sd = {k: v.numpy() for k, v in checkpoint.state_for_saving(GPT(cfg)).items()}
    out = root / "bpe.gguf"
    with pytest.raises(ExportError, match="320 tokens for a model of 384 rows"):
        write_gguf(out, cfg, sd, vocab, "f32", name="bpe")
    write_gguf(out, *weights.vocab_rows(cfg, sd, 320), vocab, "f32", name="bpe")
    meta, tensors = read_gguf(out)
    assert meta[gguf.Keys.Tokenizer.LIST] == vocab.tokens
    assert meta[gguf.Keys.Tokenizer.EOS_ID] == eot
    assert tensors["token_embd.weight"].data.shape == (320, 32)
    assert np.array_equal(tensors["token_embd.weight"].data, sd["wte.weight"][:320])


def test_gguf_refuses_a_tokenizer_llama_cpp_would_split_differently(bpe_json: str) -> None:
    spec = json.loads(bpe_json)
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(VocabError, match="pre-tokenizer"):
        from_hf_json(json.dumps(spec))
    spec = json.loads(bpe_json)
    spec["normalizer"] = {"type": "Lowercase"}
    with pytest.raises(VocabError, match="normalizer"):
        from_hf_json(json.dumps(spec))


def test_gguf_default_name_and_force(
    tmp_path: Path, char_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("export", "gguf", char_model, "--type", "f16") == 0
    first = (tmp_path / "char-f16.gguf").read_bytes()
    err = expect_one_line_error(capsys, "export", "gguf", char_model, "--type", "f16")
    assert "already exists; pass --force" in err
    assert (tmp_path / "char-f16.gguf").read_bytes() == first  # untouched
    assert cli("export", "gguf", char_model, "--type", "f16", "--force") == 0
    assert (tmp_path / "char-f16.gguf").read_bytes() == first  # same model, same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["char-f16.gguf"]  # no temp left


# --- Hugging Face ---------------------------------------------------------------------------


def our_logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    model, _ = checkpoint.load(model_dir)
    with torch.no_grad():
        return model.eval()(torch.tensor([ids]))[0]


def hf_logits(hf_dir: Path, ids: list[int]) -> torch.Tensor:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    assert type(model).__name__ == "GPT2LMHeadModel"
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize(
    ("fixture", "text"),
    [
        ("char_model", "ROMEO:\nBut soft, what light?\n\n"),
        ("unicode_model", "Ça va? déjà vu 😀 ﬁn.\n"),
        ("gpt2_model", "Hello world!\n\n        indented   spaces's 123 — é 😀"),
    ],
)
def test_hf_loads_in_transformers_with_our_ids_and_logits(
    root: Path, fixture: str, text: str, request: pytest.FixtureRequest
) -> None:
    import transformers

    model_dir: Path = request.getfixturevalue(fixture)
    out = root / f"hf-{fixture}"
    assert cli("export", "hf", model_dir, "--out", out) == 0
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = modeldir.read(model_dir).tokenizer()
    ids = ours.encode(text)
    assert tok(text)["input_ids"] == ids
    assert tok.decode(ids) == text
    assert_close(hf_logits(out, ids), our_logits(model_dir, ids))


def test_hf_bpe_from_tokenizer_json(root: Path, bpe_json: str) -> None:
    import transformers
    from tokenizers import Tokenizer

    torch.manual_seed(5)
    cfg = GPTConfig(vocab_size=320, block_size=64, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg).eval()
    sd = {k: v.numpy() for k, v in checkpoint.state_for_saving(model).items()}
    out = root / "hf-bpe"
    spec = {"kind": "bpe"}
    write_hf(out, hf_config(cfg, 0, spec), hf_state_dict(sd), bpe_tokenizer_files(bpe_json, 64))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def hf_logits(hf_dir: Path) -> naïve 10€"
    ids = Tokenizer.from_str(bpe_json).encode(text).ids
    assert tok(text)["input_ids"] == ids and tok.decode(ids) == text
    assert tok.eos_token == "<|endoftext|>"
    with torch.no_grad():
        assert_close(hf_logits(out, ids), model(torch.tensor([ids]))[0])


@pytest.mark.parametrize("fixture", ["char_model", "gpt2_model"])
def test_export_hf_then_convert_hf_is_exact(
    root: Path, fixture: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    hf_dir, back = root / f"rt-hf-{fixture}", root / f"rt-back-{fixture}"
    assert cli("export", "hf", model_dir, "--out", hf_dir) == 0
    assert cli("convert", "hf", hf_dir, "--out", back) == 0
    a, b = modeldir.read(model_dir), modeldir.read(back)
    assert a.config == b.config and a.tokenizer_spec == b.tokenizer_spec
    wa, wb = load_file(str(a.weights_path)), load_file(str(b.weights_path))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].dtype == wb[name].dtype and wa[name].tobytes() == wb[name].tobytes()


def test_export_hf_force_replaces_only_an_export(
    tmp_path: Path, char_model: Path, capsys: Any
) -> None:
    out = tmp_path / "hf"
    assert cli("export", "hf", char_model, "--out", out) == 0
    err = expect_one_line_error(capsys, "export", "hf", char_model, "--out", out)
    assert "already exists; pass --force" in err
    assert cli("export", "hf", char_model, "--out", out, "--force") == 0
    assert (out / "model.safetensors").is_file()
    # Never replaces a directory of other files, or one of this project's model directories.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    err = expect_one_line_error(capsys, "export", "hf", char_model, "--out", other, "--force")
    assert "is not a model directory" in err and (other / "todo.txt").is_file()
    err = expect_one_line_error(capsys, "export", "hf", char_model, "--out", char_model, "--force")
    assert "is a minigpt-tui model directory" in err
    assert modeldir.read(char_model).has_weights


# --- bad input ------------------------------------------------------------------------------


def test_bad_inputs_get_one_error_line(tmp_path: Path, char_model: Path, capsys: Any) -> None:
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_bytes((char_model / "config.json").read_bytes())
    cases = [
        (("export", "gguf", char_model, "--type", "q4_k"), "--type must be"),
        (("export", "gguf", char_model, "--out", tmp_path / "no" / "x.gguf"), "does not exist"),
        (("export", "gguf", char_model, "--out", tmp_path), "is a directory"),
        (("export", "gguf", no_weights, "--out", tmp_path / "x.gguf"), "has no weights"),
        (("export", "gguf", tmp_path / "missing"), "model not found"),
        (("export", "hf", no_weights, "--out", tmp_path / "hf"), "has no weights"),
        (("export", "hf", char_model, "--out", tmp_path / "no" / "hf"), "does not exist"),
        (("export", "hf", char_model), "Missing option"),
    ]
    for args, message in cases:
        assert message in expect_one_line_error(capsys, *args), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config-only"]  # nothing written


def test_exports_need_no_torch(tmp_path: Path) -> None:
    from tests.test_no_torch import run_child

    code = f"""
from minigpt_tui.cli import main
for args in (["export", "gguf", "shakespeare-char", "--out", {str(tmp_path / "s.gguf")!r},
              "--type", "q8_0"],
             ["export", "hf", "shakespeare-char", "--out", {str(tmp_path / "hf")!r}]):
    try:
        main(args)
    except SystemExit as e:
        assert not e.code, e.code
bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not bad, bad
"""
    res = run_child(code)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s.gguf").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()


def _enospc(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_keeps_the_previous_exports(
    tmp_path: Path, char_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    gguf_file, hf_dir = tmp_path / "m.gguf", tmp_path / "hf"
    assert cli("export", "gguf", char_model, "--out", gguf_file) == 0
    assert cli("export", "hf", char_model, "--out", hf_dir) == 0
    before = {p: p.read_bytes() for p in [gguf_file, *hf_dir.iterdir()]}
    monkeypatch.setattr(os, "fsync", _enospc)  # the disk is full when the data reaches it
    for args in (("gguf", "--out", gguf_file), ("hf", "--out", hf_dir)):
        err = expect_one_line_error(capsys, "export", args[0], char_model, *args[1:], "--force")
        assert "No space left on device" in err
    assert {p: p.read_bytes() for p in [gguf_file, *hf_dir.iterdir()]} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m.gguf"]  # no temporary left


def test_export_hf_files_all_get_the_umask_mode(tmp_path: Path) -> None:
    """model.safetensors used to be 0600 (a private temporary file renamed) beside 0644 files."""
    model = make_model(tmp_path)
    old = os.umask(0o022)
    try:
        assert cli("export", "hf", model, "--out", tmp_path / "hf") == 0
        assert cli("export", "gguf", model, "--out", tmp_path / "m.gguf") == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "m.gguf").stat().st_mode & 0o777 == 0o644


def test_char_tokenizer_json_is_written_without_the_tokenizers_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inference install has no `tokenizers`: export hf of a character model works there,
    and its tokenizer.json is the one the library itself writes."""
    import sys

    from export.hf_export import char_tokenizer_json

    chars = "\n !'ab\u00e9\u20ac\U0001f600\\\""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders
    from tokenizers.models import BPE

    reference = tokenizers.Tokenizer(BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    reference.decoder = decoders.Fuse()
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now fails
    assert json.loads(char_tokenizer_json(chars)) == json.loads(reference.to_str())
    model = make_model(tmp_path)
    assert cli("export", "hf", model, "--out", tmp_path / "hf") == 0
    monkeypatch.delitem(sys.modules, "tokenizers")
    loaded = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    ids = loaded.encode("ROMEO: hi").ids
    assert loaded.decode(ids) == "ROMEO: hi"
