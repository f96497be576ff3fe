"""Training on conversations: rows of whole conversations, the assistant-token loss, growing a
plain model's vocabulary for the chat tokens, and the tokenizer of a model to fine-tune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model import chat
from model.batches import make_batches
from model.chat_batches import ChatBatches, Conversations, packed_rows
from model.config import GPTConfig
from model.data import load_dataset, prepare
from model.evaluate import chat_split_loss
from model.gpt import GPT, IGNORE
from model.tokenizer import BPETokenizer, CharTokenizer, GPT2Tokenizer, chat_version
from tests.helpers import TINY_SHAPE, cli, make_model


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per message, for the checks on output


def conversation(i: int, long: bool = False) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"say {i}" + (" please" * 30 if long else "")},
        {"role": "assistant", "content": f"{i}!"},
    ]


def write_chats(path: Path, conversations: list[list[dict[str, str]]]) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


def chat_data(tmp: Path, n: int = 30, tokenizer: str = "char") -> Path:
    source = write_chats(tmp / "chat.jsonl", [conversation(i, long=i == 3) for i in range(n)])
    prepare([source], tmp / "d", tokenizer, val_fraction=0.2)
    return tmp / "d"


# ---------------------------------------------------------------------------- rows


def test_rows_hold_whole_conversations_and_train_only_the_assistant(tmp_path: Path) -> None:
    ds = load_dataset(chat_data(tmp_path))
    tok = ds.tokenizer()
    assert tok.chat is not None and ds.train_mask is not None
    batches = make_batches(ds, "train", 8, 32, "cpu", seed=0)
    assert isinstance(batches, ChatBatches)
    assert batches.truncated == 1  # conversation 3 is longer than a row
    convs = batches.conversations
    for _ in range(20):
        x, y = batches.next()
        assert x.shape == y.shape == (8, 32)
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            assert row_x[0] == tok.chat.bos  # a row starts at a conversation's start
            trained = [t for t in row_y if t != IGNORE]
            if not trained:  # only the long conversation's user turn fits in the row
                assert "please please" in tok.decode(row_x)
                continue
            # what is trained: the assistant's replies and their <|end|>, nothing else
            replies = tok.decode(trained).split("<|end|>")
            assert replies[-1] == "" and all(
                r[:-1].isdigit() and r[-1] == "!" for r in replies[:-1]
            )
            # whole conversations: after the last one that fits comes padding, never a part
            # of the next (except the one long conversation, cut at the row's end)
            text = tok.decode(row_x)
            ends = text.count("<|end|>")
            assert ends == 2 * text.count("<|endoftext|>") or "please please" in text
    assert len(convs) == int((ds.train == tok.chat.bos).sum())


def test_a_row_packs_as_many_whole_conversations_as_fit() -> None:
    tok = CharTokenizer("abc", chat=True)
    assert tok.chat is not None
    convs = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b" * k}]
        for k in (1, 2, 9)
    ]
    ids, mask = [], []
    for c in convs:
        i, m = chat.training_example(tok, c)
        ids += i
        mask += m
    tokens, masks = np.asarray(ids), np.asarray(mask, np.uint8)
    found = Conversations.find(tokens, tok.chat.bos)
    assert found.starts.tolist() == [0, 7, 15] and found.ends.tolist() == [7, 15, 30]
    assert found.row_end(0, 15) == 15 and found.row_end(0, 14) == 7  # two fit, then one
    assert found.row_end(2, 10) == 25  # too long alone: cut at the row's width
    rows = list(packed_rows(tokens, masks, tok.chat.bos, 13))
    assert len(rows) == 3  # [conv 0], [conv 1], [conv 2 cut]
    x, y = rows[0]
    assert x.tolist()[:7] == ids[:7] and (x[7:] == 0).all()
    assert y.tolist()[:6] == [IGNORE, IGNORE, IGNORE, IGNORE, ids[5], ids[6]]
    assert (y[6:] == IGNORE).all()


def test_the_same_seed_draws_the_same_rows(tmp_path: Path) -> None:
    ds = load_dataset(chat_data(tmp_path))
    a, b, one, r0, r1 = (make_batches(ds, "train", 4, 32, "cpu", seed) for seed in (3, 3, 5, 5, 5))
    for (xa, ya), (xb, yb) in zip(a.step(4), b.step(4), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # two processes with half the micro-batches each see exactly one process' batches
    whole = [x for x, _ in one.step(4)]
    halves = [x for x, _ in r0.step(4, 0, 2)] + [x for x, _ in r1.step(4, 1, 2)]
    assert all(torch.equal(p, q) for p, q in zip(whole, halves, strict=True))


# ---------------------------------------------------------------------------- the loss


def test_the_loss_counts_only_trained_targets() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    x = torch.randint(11, (2, 8))
    y = torch.randint(11, (2, 8))
    logits, full = model(x, y)
    masked = y.clone()
    masked[:, :5] = IGNORE
    _, part = model(x, masked)
    expected = torch.nn.functional.cross_entropy(
        logits[:, 5:].reshape(-1, 11), y[:, 5:].reshape(-1)
    )
    assert part is not None and full is not None
    assert torch.allclose(part, expected, atol=1e-6)
    _, none = model(x, torch.full_like(y, IGNORE))
    assert none is not None and float(none.detach()) == 0.0  # nothing to train: no NaN
    none.backward()  # and no NaN gradient either
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_whole_split_assistant_loss(tmp_path: Path) -> None:
    ds = load_dataset(chat_data(tmp_path))
    tok = ds.tokenizer()
    assert tok.chat is not None and ds.val_mask is not None
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=8))
    loss, count = chat_split_loss(model, ds.val, ds.val_mask, tok.chat.bos, 32, batch_size=2)
    assert count == int(ds.val_mask.sum())  # every trained token of the split, once
    assert 0 < loss < 10 and np.isclose(loss, np.log(tok.vocab_size), atol=1.0)


# ---------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize(("vocab", "tied"), [(50257, True), (50304, True), (50257, False)])
def test_grow_vocab_for_the_gpt2_chat_tokens(vocab: int, tied: bool) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=2, n_embd=8, tie_weights=tied)
    model = GPT(cfg)
    before = model.wte.weight.detach().clone()
    head_before = model.lm_head.weight.detach().clone()
    x = torch.randint(50257, (1, 8))
    logits_before, _ = model(x)
    model.grow_vocab(range(50257, 50261))
    assert model.config.vocab_size == max(vocab, 50261)  # a padded vocabulary keeps its size
    assert model.wte.weight.shape == (max(vocab, 50261), 8)
    assert torch.equal(model.wte.weight[:50257], before[:50257])
    new = model.wte.weight[50257:50261]
    assert torch.allclose(new, before[:50257].mean(0).expand(4, -1), atol=0.01)
    assert not torch.equal(new[0], new[1])  # a little noise keeps them apart
    if tied:
        assert model.lm_head.weight is model.wte.weight
    else:
        assert torch.equal(model.lm_head.weight[:50257], head_before[:50257])
    logits, _ = model(x)
    assert torch.allclose(logits[..., :50257], logits_before[..., :50257], atol=1e-5)
    model(x, x)[1].backward()  # type: ignore[union-attr]  # trains as a whole


def test_chat_versions_keep_every_id(tmp_path: Path) -> None:
    char = CharTokenizer("abc")
    assert chat_version(char).chat.ids() == (3, 4, 5, 6, 7)  # type: ignore[union-attr]
    gpt2 = chat_version(GPT2Tokenizer())
    assert gpt2.spec() == GPT2Tokenizer(chat=True).spec()
    bpe = BPETokenizer.train(["hello world, hello there"] * 10, 300)
    grown = chat_version(bpe)
    assert grown.chat is not None and grown.chat.bos == bpe.eot
    assert grown.chat.end == grown.vocab_size - 1 and grown.vocab_size == bpe.vocab_size + 4
    assert grown.encode("hello world") == bpe.encode("hello world")
    assert chat_version(grown) is grown
    assert chat_version(bpe).spec() == grown.spec()  # the same every time


def test_data_prepare_with_a_models_tokenizer(tmp_path: Path) -> None:
    words = ["ROMEO", "JULIET", "What light", "Good night"]
    convs = [
        [{"role": "user", "content": w}, {"role": "assistant", "content": w[::-1]}] for w in words
    ]
    convs.append([{"role": "user", "content": "100%"}, {"role": "assistant", "content": "no"}])
    source = write_chats(tmp_path / "c.jsonl", convs * 3)
    args = ["data", "prepare", source, "-o", tmp_path / "d", "--tokenizer-from", "shakespeare-char"]
    assert cli(*args) == 0
    ds = load_dataset(tmp_path / "d")
    tok = ds.tokenizer()
    assert tok.chat is not None and tok.vocab_size == 65 + 5  # the model's characters, then 5
    assert ds.meta["bad_records"] == {"unknown character": 3}  # '%' and '0' are not among them
    assert ds.meta["documents"] == 12


def test_eval_reports_the_assistant_token_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from model import checkpoint, modeldir

    monkeypatch.setenv("COLUMNS", "200")
    data = chat_data(tmp_path)
    tok = load_dataset(data).tokenizer()
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=8)
    checkpoint.save(tmp_path / "m", GPT(cfg), modeldir.make_meta(cfg, tok), tokenizer=tok)
    capsys.readouterr()
    assert cli("eval", tmp_path / "m", "--data", data) == 0
    out = capsys.readouterr().out
    assert "val assistant-token loss" in out and "tokens of the assistant's turns" in out


def test_a_chat_model_reads_the_plain_text_of_its_tokenizer() -> None:
    from model.tokenizer import reads

    plain, chat_tok = CharTokenizer("abc"), CharTokenizer("abc", chat=True)
    assert reads(chat_tok, plain) and reads(plain, plain) and reads(chat_tok, chat_tok)
    assert not reads(plain, chat_tok)  # a plain model lacks the chat tokens
    assert not reads(CharTokenizer("abd", chat=True), plain)
    assert reads(GPT2Tokenizer(chat=True), GPT2Tokenizer())


# ---------------------------------------------------------------------------- training runs


def run_args(data: Path, out: Path, *extra: Any) -> list[Any]:
    return [
        "train", "--data", data, "--out", out, "--device", "cpu", "--no-samples",
        "--batch-size", "4", "--eval-iters", "2", "--eval-interval", "4", "--max-iters", "8",
        "--log-interval", "4", *extra,
    ]  # fmt: skip


def test_training_from_scratch_on_conversations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model import modeldir

    data = chat_data(tmp_path)
    out = tmp_path / "run"
    assert cli(*run_args(data, out, *TINY_SHAPE)) == 0
    err = capsys.readouterr().err
    assert "the train and val losses are over the assistant's tokens only" in err
    assert "1 of the" in err and "longer than the context (33 tokens)" in err
    info = modeldir.read(out)
    assert info.is_chat and info.chat_template == chat.JINJA_TEMPLATE
    assert info.tokenizer().chat == load_dataset(data).tokenizer().chat
    assert info.meta["summary"]["val_loss_full"] > 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "eval" and "val_loss" in e for e in events)
    # --resume continues it
    assert cli(*run_args(data, out, "--resume", "--max-iters", "12")) == 0
    assert modeldir.read(out).meta["summary"]["iter"] == 12


def test_fine_tuning_a_plain_char_model_grows_it_and_reports_forgetting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model import checkpoint, modeldir

    base = make_model(tmp_path, text="ROMEO and JULIET, say it!\n" * 10)  # a plain char model
    plain_tok = modeldir.read(base).tokenizer()
    words = ["ROMEO", "JULIET", "say it", "and ROMEO"]
    convs = [
        [{"role": "user", "content": w}, {"role": "assistant", "content": w[::-1]}] for w in words
    ]
    source = write_chats(tmp_path / "c.jsonl", convs * 10)
    assert cli("data", "prepare", source, "-o", tmp_path / "d", "--tokenizer-from", base) == 0
    text_src = tmp_path / "t.txt"
    text_src.write_text("ROMEO and JULIET, say it!\n" * 60)
    assert cli("data", "prepare", text_src, "-o", tmp_path / "t", "--tokenizer-from", base) == 0
    out = tmp_path / "ft"
    args = run_args(tmp_path / "d", out, "--init-from", base, "--preset", "sft")
    assert cli(*args, "--text-data", tmp_path / "t", "--block-size", "16") == 0
    err = capsys.readouterr().err
    n = plain_tok.vocab_size
    assert f"grows from {n} to {n + 5} tokens" in err
    assert "plain-text loss on" in err and "before training" in err and "after" in err
    info = modeldir.read(out)
    assert info.config.vocab_size == n + 5 and info.is_chat
    summary = info.meta["summary"]
    assert summary["text_loss_before"] > 0 and summary["text_loss_after"] > 0
    model, _ = checkpoint.load(out)
    assert model.wte.weight.shape[0] == n + 5


@pytest.mark.parametrize("vocab", [50257, 50304])
def test_fine_tuning_a_gpt2_model_on_chat_data(tmp_path: Path, vocab: int) -> None:
    from model import checkpoint, modeldir

    tok = GPT2Tokenizer()
    cfg = GPTConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, n_embd=8)
    base = tmp_path / "gpt2"
    checkpoint.save(base, GPT(cfg), modeldir.make_meta(cfg, tok))
    data = chat_data(tmp_path, tokenizer="gpt2")
    out = tmp_path / "ft"
    assert (
        cli(*run_args(data, out, "--init-from", base, "--max-iters", "2", "--no-final-eval")) == 0
    )
    info = modeldir.read(out)
    assert info.config.vocab_size == max(vocab, 50261)  # grown, or its padding kept
    assert info.tokenizer_spec == {"kind": "gpt2", "chat": True}
    assert (out / "latest" / "chat_template.jinja").is_file()


def test_export_onnx_of_a_grown_gpt2_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from model import checkpoint, modeldir

    tok = GPT2Tokenizer(chat=True)
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16))
    model.grow_vocab(range(50257, 50261))
    checkpoint.save(tmp_path / "m", model, modeldir.make_meta(model.config, tok), tokenizer=tok)
    assert cli("export", "onnx", tmp_path / "m", "--out", tmp_path / "o") == 0
    info = modeldir.read(tmp_path / "o")
    assert info.config.vocab_size == 50261 and info.chat_template == chat.JINJA_TEMPLATE


def test_chat_training_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model import checkpoint, modeldir
    from tests.helpers import expect_one_line_error

    data = chat_data(tmp_path)  # char, its own vocabulary
    gpt2 = tmp_path / "gpt2"
    cfg = GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8)
    checkpoint.save(gpt2, GPT(cfg), modeldir.make_meta(cfg, GPT2Tokenizer()))
    other_char = make_model(tmp_path, text="entirely other characters: qwxz")
    plain_data = tmp_path / "plain"
    (tmp_path / "p.txt").write_text("say 1 please\n" * 100)
    prepare([tmp_path / "p.txt"], plain_data, "char")
    plain_run = tmp_path / "plain-run"
    assert cli(*run_args(plain_data, plain_run, *TINY_SHAPE, "--max-iters", "1")) == 0
    out = tmp_path / "r"
    cases = [
        (["--init-from", gpt2], "a gpt2 tokenizer, the chat data char"),
        (["--init-from", other_char], "--tokenizer-from"),
        (["--preset", "sft"], "--preset sft fine-tunes a model"),
        ([*TINY_SHAPE, "--text-data", data], "holds conversations"),
    ]
    for extra, message in cases:
        assert message in expect_one_line_error(capsys, *run_args(data, out, *extra))
    line = expect_one_line_error(capsys, *run_args(data, plain_run, "--resume"))
    assert "no chat tokens" in line


def test_a_chat_corpus_shorter_than_the_context_trains(tmp_path: Path) -> None:
    from model import modeldir

    source = write_chats(tmp_path / "c.jsonl", [conversation(i) for i in range(4)])
    prepare([source], tmp_path / "d", "char", val_fraction=0.3)
    assert len(load_dataset(tmp_path / "d").train) < 64  # rows are padded, not refused
    out = tmp_path / "r"
    shape = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "64"]
    assert cli(*run_args(tmp_path / "d", out, *shape, "--max-iters", "2")) == 0
    assert modeldir.read(out).meta["summary"]["iter"] == 2
