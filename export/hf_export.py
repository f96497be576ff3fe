"""Export a model directory to the Hugging Face layout: transformers' GPT2LMHeadModel.

    export_hf(model_dir, out_dir)    config.json + model.safetensors + the tokenizer's files

`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer` load the
result with no custom code. This model is GPT-2's equations, so only names and layout change:
Hugging Face stores the four Linear layers of a block as Conv1D, (in, out), the transpose of
PyTorch's (out, in); a model without biases gets zero biases. The tokenizer files:

    gpt2   vocab.json + merges.txt (GPT-2's published files, as openai-community/gpt2 ships them)
    bpe    its own tokenizer.json (a trained byte-level BPE)
    char   a tokenizer.json of one token per character (a BPE with no merges, and a decoder
           that joins the characters), giving this project's ids

A chat model (model/chat.py) also gets what transformers' chat API reads: its special tokens
as special added tokens (in tokenizer.json, or for gpt2 in tokenizer_config.json's
`added_tokens_decoder`, ids 50257..50260), `bos_token` `<|endoftext|>`, `eos_token` `<|end|>`
(the end of a turn), `pad_token` `<|endoftext|>`, and the template as chat_template.jinja (the
file transformers v5 saves) and as tokenizer_config.json's `chat_template` (what older versions
read); `apply_chat_template(messages, add_generation_prompt=True)` then gives exactly
`model.chat.prompt_ids`. generation_config.json's `eos_token_id` is [<|end|>, <|endoftext|>], so
`generate` ends a reply where this project's engine does.

The vocabulary is the tokenizer's own size: rows a model was padded with beyond it
(`--vocab-size 50304`) are dropped. config.json also carries a `minigpt_tui` section (the
tokenizer spec and the bias flag), so that `convert hf` brings back exactly this model (less
any padding rows). Torch-free.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from export import weights
from export.options import ExportError
from model import modeldir, userfile
from model.config import GPTConfig
from model.tokenizer import (
    END_TEXT,
    TEMPLATE_FILE,
    CharTokenizer,
    ChatTokens,
    HasHFJson,
    Tokenizer,
    gpt2_bpe_files,
)

# Hugging Face's Conv1D layers: stored (in_features, out_features).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_WEIGHTS = "model.safetensors"
GENERATION_CONFIG = "generation_config.json"
EOT_TEXT = "<|endoftext|>"


@dataclass
class HFResult:
    path: Path
    files: list[str]
    size_bytes: int
    tokenizer: str
    seconds: float


def export_hf(
    model_path: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False
) -> HFResult:
    """Write MODEL as a Hugging Face GPT-2 directory at `out`; see the module docstring."""
    t0 = time.perf_counter()
    info = modeldir.read(model_path)
    target = Path(out).expanduser()
    if _is_our_model_dir(target):
        raise ExportError(f"{target} is a minigpt-tui model directory; choose another --out")
    modeldir.check_output(target, force=force, directory=True, inputs=[info.path])
    sd = weights.load(info)
    tokenizer = info.tokenizer()
    cfg, sd = weights.vocab_rows(info.config, sd, tokenizer.vocab_size)
    files = tokenizer_files(tokenizer, cfg.block_size, info.chat_template)
    if tokenizer.chat is not None:
        files[GENERATION_CONFIG] = _json(generation_config(tokenizer.chat))
    config = hf_config(cfg, tokenizer.eot, tokenizer.spec(), tokenizer.chat)
    write_hf(target, config, hf_state_dict(sd), files)
    names = sorted(p.name for p in target.iterdir())
    return HFResult(
        path=target,
        files=names,
        size_bytes=sum((target / n).stat().st_size for n in names),
        tokenizer=tokenizer.kind,
        seconds=time.perf_counter() - t0,
    )


def write_hf(
    target: Path, config: dict[str, Any], state: dict[str, np.ndarray], files: dict[str, bytes]
) -> None:
    """Write the directory under a temporary name; it appears at `target` only when complete."""
    with modeldir.staged_dir(target, replace=target.exists()) as tmp:
        save_file(state, str(tmp / HF_WEIGHTS), metadata={"format": "pt"})
        modeldir.write_json(tmp / "config.json", config)
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def _is_our_model_dir(path: Path) -> bool:
    try:
        text = userfile.read_text(path / modeldir.CONFIG_FILE, modeldir.MAX_CONFIG_BYTES)
        meta = json.loads(text)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == modeldir.FORMAT


def hf_state_dict(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our weights (export/weights.py, biases filled in) under GPT2LMHeadModel's names."""
    out = {}
    for name, array in sd.items():
        if name == "lm_head.weight":
            out[name] = array
            continue
        if name.endswith(CONV1D):
            array = array.T
        out["transformer." + name] = np.ascontiguousarray(array)
    return out


def hf_config(
    cfg: GPTConfig,
    eot: int | None,
    tokenizer_spec: dict[str, Any],
    chat: ChatTokens | None = None,
) -> dict[str, Any]:
    """GPT2LMHeadModel's config.json for `cfg`, with our own section for the round trip."""
    eos: int | list[int] | None = generation_config(chat)["eos_token_id"] if chat else eot
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",  # GPT-2's tanh GELU, as model/gpt.py uses
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eot,
        "eos_token_id": eos,
        "use_cache": True,
        "dtype": "float32",
        modeldir.HF_SECTION: {
            "format": modeldir.FORMAT,
            "tokenizer": tokenizer_spec,
            "bias": cfg.bias,
        },
    }


def generation_config(chat: ChatTokens) -> dict[str, Any]:
    """generation_config.json of a chat model: a reply ends at <|end|> (or <|endoftext|>)."""
    return {
        "bos_token_id": chat.bos,
        "eos_token_id": [chat.end, chat.bos],
        "pad_token_id": chat.bos,
    }


def tokenizer_files(
    tokenizer: Tokenizer, block_size: int, chat_template: str | None = None
) -> dict[str, bytes]:
    """The files AutoTokenizer loads this tokenizer from, by name; a chat tokenizer's carry
    its special tokens and `chat_template` (see the module docstring)."""
    chat = tokenizer.chat
    if isinstance(tokenizer, CharTokenizer):
        hf_json = char_tokenizer_json(tokenizer.chars)
        if chat is not None:
            hf_json = with_special_tokens(hf_json, chat)
        files = {"tokenizer.json": hf_json.encode("utf-8")}
        cls, eot = "PreTrainedTokenizerFast", chat is not None
    elif tokenizer.kind == "gpt2":
        encoder, merges = gpt2_bpe_files()
        files = {"vocab.json": encoder.read_bytes(), "merges.txt": merges.read_bytes()}
        cls, eot = "GPT2Tokenizer", True
    elif isinstance(tokenizer, HasHFJson):  # a trained BPE ("bpe" kind)
        hf_json = tokenizer.hf_json()
        files = {"tokenizer.json": hf_json.encode("utf-8")}
        cls, eot = "PreTrainedTokenizerFast", EOT_TEXT in _added_tokens(hf_json)
    else:
        raise ExportError(f"tokenizer kind {tokenizer.kind!r} cannot be exported")
    config = tokenizer_config(cls, block_size, eot, chat, chat_template)
    if chat is not None and chat_template is not None:
        files[TEMPLATE_FILE] = chat_template.encode("utf-8")
    return files | {"tokenizer_config.json": _json(config)}


def bpe_tokenizer_files(hf_json: str, block_size: int) -> dict[str, bytes]:
    """A trained tokenizer (not a chat one), from its Hugging Face tokenizer.json."""
    config = tokenizer_config(
        "PreTrainedTokenizerFast", block_size, EOT_TEXT in _added_tokens(hf_json)
    )
    return {"tokenizer.json": hf_json.encode("utf-8"), "tokenizer_config.json": _json(config)}


def _added_tokens(hf_json: str) -> list[str]:
    try:
        return [t.get("content") for t in json.loads(hf_json).get("added_tokens") or []]
    except (ValueError, AttributeError, TypeError) as e:
        raise ExportError(f"not a Hugging Face tokenizer.json: {e}") from None


def tokenizer_config(
    cls: str,
    block_size: int,
    eot: bool,
    chat: ChatTokens | None = None,
    chat_template: str | None = None,
) -> dict[str, Any]:
    """tokenizer_config.json: the class, the context, the special tokens."""
    config: dict[str, Any] = {
        "tokenizer_class": cls,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,  # decode must give back the text exactly
        "add_prefix_space": False,
    }
    if eot:
        config |= {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    if chat is not None:
        config |= {"bos_token": EOT_TEXT, "eos_token": END_TEXT, "pad_token": EOT_TEXT}
        config["added_tokens_decoder"] = {
            str(i): _special_token(text) for text, i in chat.by_text().items()
        }
        if chat_template is not None:
            config["chat_template"] = chat_template
    return config


def _special_token(text: str) -> dict[str, Any]:
    """An added special token as the tokenizers library and transformers write it: matched
    whole, as it is, wherever it appears in a rendered template."""
    flags = ("single_word", "lstrip", "rstrip", "normalized")
    return {"content": text, **dict.fromkeys(flags, False), "special": True}


def with_special_tokens(hf_json: str, chat: ChatTokens) -> str:
    """A tokenizer.json with a chat tokenizer's special tokens added at their ids."""
    document = json.loads(hf_json)
    added = [{"id": i, **_special_token(text)} for text, i in chat.by_text().items()]
    document["added_tokens"] = [*document.get("added_tokens", []), *added]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def char_tokenizer_json(chars: str) -> str:
    """A Hugging Face tokenizer.json that maps each character to its index in `chars`: a BPE
    with no merges and a Fuse decoder (the characters joined with nothing between them).
    Written out here, field for field as the tokenizers library writes it (a test checks),
    so that the inference install, which lacks that library, can export character models."""
    model: dict[str, Any] = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": {ch: i for i, ch in enumerate(chars)},
        "merges": [],
    }
    document: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": model,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
