"""`data prepare` on conversation corpora: tokens, masks, splits and bad records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import chat, corpus, data
from model.data import DataError, load_dataset, prepare
from tests.helpers import cli, make_model


def conversation(i: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Answer in one word."}] if i % 3 == 0 else []
    messages += [
        {"role": "user", "content": f"What is {i} plus one?\n"},
        {"role": "assistant", "content": f" It is {i + 1}."},
    ]
    if i % 2:
        messages += [
            {"role": "user", "content": "And twice that? ünï 🎭"},
            {"role": "assistant", "content": f"{2 * (i + 1)}"},
        ]
    return messages


CONVERSATIONS = [conversation(i) for i in range(40)]


def sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in messages]}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("tokenizer", ["char", "gpt2", "bpe:300"])
def test_conversations_become_the_chat_format_with_masks(tmp_path: Path, tokenizer: str) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS])
    res = prepare([source], tmp_path / "d", tokenizer, val_fraction=0.2)
    ds = load_dataset(tmp_path / "d")
    tok = ds.tokenizer()
    assert tok.chat is not None and ds.format == "chat" and ds.is_chat
    assert res.format == "chat" and res.stats.documents == 40
    # every conversation whole, in order: train the first ones, val the rest
    ids = np.concatenate([ds.train, ds.val])
    mask = np.concatenate([ds.mask("train"), ds.mask("val")])  # type: ignore[list-item]
    expected = [chat.training_example(tok, m) for m in CONVERSATIONS]
    assert ids.tolist() == [i for e in expected for i in e[0]]
    assert mask.tolist() == [i for e in expected for i in e[1]]
    assert ds.train[0] == tok.chat.bos and ds.val[0] == tok.chat.bos  # never cut
    n_train = int((ds.train == tok.chat.bos).sum())
    assert 25 <= n_train <= 36  # about 80% of the conversations
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["format"] == "chat" and meta["documents"] == 40
    assert meta["trained_tokens"] == {
        "train": int(ds.train_mask.sum()),
        "val": int(ds.val_mask.sum()),
    }  # type: ignore[union-attr]
    assert (tmp_path / "d" / "chat_template.jinja").read_text() == chat.JINJA_TEMPLATE


def test_sharegpt_gives_the_same_data_as_messages(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"messages": m} for m in CONVERSATIONS])
    b = write_jsonl(tmp_path / "b.jsonl", [sharegpt(m) for m in CONVERSATIONS])
    prepare([a], tmp_path / "da", "gpt2")
    prepare([b], tmp_path / "db", "gpt2")
    for name in ("train.bin", "val.bin", "train.mask.bin", "val.mask.bin"):
        assert (tmp_path / "da" / name).read_bytes() == (tmp_path / "db" / name).read_bytes()


def test_parquet_conversations(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"messages": CONVERSATIONS, "id": list(range(40))})
    pq.write_table(table, tmp_path / "chat.parquet", row_group_size=7)
    prepare([tmp_path / "chat.parquet"], tmp_path / "dp", "gpt2")
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS])
    prepare([tmp_path / "chat.jsonl"], tmp_path / "dj", "gpt2")
    ds_p, ds_j = load_dataset(tmp_path / "dp"), load_dataset(tmp_path / "dj")
    both = np.concatenate([ds_p.train, ds_p.val]).tolist()
    assert both == np.concatenate([ds_j.train, ds_j.val]).tolist()
    assert ds_p.is_chat and ds_p.val_mask is not None


def test_chunks_and_threads_do_not_change_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS])
    prepare([source], tmp_path / "whole", "gpt2")
    monkeypatch.setattr(corpus, "CHUNK_CHARS", 50)
    monkeypatch.setattr(data, "_threads", lambda: 3)
    prepare([source], tmp_path / "small", "gpt2")
    for name in ("train.bin", "val.bin", "train.mask.bin", "val.mask.bin"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "small" / name).read_bytes()


def test_bad_records_are_skipped_and_counted_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [{"messages": m} for m in CONVERSATIONS[:5]]
    user = {"role": "user", "content": "hi"}
    bad = [
        {"messages": [user]},
        {"messages": [user, {"role": "tool", "content": "x"}]},
        {"messages": [user, user]},
        {"messages": [user, {"role": "assistant", "content": ""}]},
        {"messages": [user, {"role": "assistant", "content": "a <|end|>"}]},
        {"messages": "hi"},
    ]
    source = tmp_path / "chat.jsonl"
    write_jsonl(source, good[:2] + bad + good[2:])
    with source.open("a") as f:
        f.write("{not json\n")
    assert cli("data", "prepare", source, "--out", tmp_path / "d", "--tokenizer", "gpt2") == 0
    err = capsys.readouterr().err
    assert "warning: 7 bad records of 12" in err and "5 conversations" in err
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["bad_records"] == {
        "no assistant turn": 1,
        "unknown role": 1,
        "roles out of order": 1,
        "empty content": 1,
        "marker in content": 1,
        "not a conversation": 1,
        "not JSON": 1,
    }
    assert meta["documents"] == 5


def test_format_is_detected_and_can_be_forced(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"text": "hello there"}] * 5)
    chats = write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS[:4]])
    assert data.data_format([plain]) == "text"
    assert data.data_format([chats]) == "chat"
    assert data.data_format([chats], "text") == "text"
    # a record with both is a conversation unless --format text says otherwise
    both = write_jsonl(tmp_path / "both.jsonl", [{"text": "x", "messages": CONVERSATIONS[0]}] * 4)
    assert data.data_format([both]) == "chat"
    res = prepare([both], tmp_path / "as-text", "char", fmt="text", val_fraction=0.5)
    assert res.format == "text" and not load_dataset(tmp_path / "as-text").is_chat
    with pytest.raises(DataError, match="chat and plain records mixed"):
        prepare([plain], tmp_path / "forced", "char", fmt="chat")


def test_plain_data_is_unchanged(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "plain.jsonl", [{"text": "hello there"}] * 5)
    prepare([source], tmp_path / "d", "gpt2", val_fraction=0.4)
    ds = load_dataset(tmp_path / "d")
    assert ds.format == "text" and ds.mask("train") is None and ds.tokenizer().chat is None
    assert not (tmp_path / "d" / "train.mask.bin").exists()
    assert not (tmp_path / "d" / "chat_template.jinja").exists()


def test_a_damaged_mask_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS])
    out = tmp_path / "d"
    prepare([source], out, "char")
    mask = out / "train.mask.bin"
    mask.write_bytes(mask.read_bytes()[:-1])
    with pytest.raises(DataError, match="does not match"):
        load_dataset(out)
    mask.write_bytes(b"\x02" * (mask.stat().st_size + 1))
    with pytest.raises(DataError, match="other than 0 and 1"):
        load_dataset(out)
    mask.unlink()
    with pytest.raises(DataError, match="missing"):
        load_dataset(out)


def test_data_prepare_force_replaces_chat_data(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS])
    out = tmp_path / "d"
    prepare([source], out, "bpe:300")
    prepare([source], out, "char", force=True)  # masks, template and tokenizer.json are data
    assert load_dataset(out).tokenizer().kind == "char"


def test_info_shows_a_chat_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    from model import checkpoint, modeldir
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer(chat=True)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    path = tmp_path / "m"
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, tok, name="c"), tokenizer=tok)
    capsys.readouterr()
    assert cli("info", path) == 0
    out = capsys.readouterr().out
    assert "<|user|> 50,258" in out and "<|end|> 50,260" in out
    assert "bos_token" in out and "chat_template.jinja" in out
    plain = make_model(tmp_path)
    assert cli("info", plain) == 0
    assert "chat template" not in capsys.readouterr().out


def test_export_onnx_keeps_the_template(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from model import checkpoint, modeldir
    from model.config import GPTConfig
    from model.gpt import GPT
    from model.tokenizer import CharTokenizer

    tok = CharTokenizer("abc ", chat=True)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    path = tmp_path / "m"
    checkpoint.save(path, GPT(cfg), modeldir.make_meta(cfg, tok, name="c"), tokenizer=tok)
    assert cli("export", "onnx", path, "--out", tmp_path / "o", "--no-verify") == 0
    info = modeldir.read(tmp_path / "o")
    assert info.chat_template == chat.JINJA_TEMPLATE and info.tokenizer().chat == tok.chat
