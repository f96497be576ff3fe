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

config.json also carries a `minigpt_tui` section (the tokenizer spec and the bias flag), so
that `convert hf` brings back exactly this model: the round trip is exact. Torch-free.
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
from model.tokenizer import CharTokenizer, HasHFJson, Tokenizer, gpt2_bpe_files

# Hugging Face's Conv1D layers: stored (in_features, out_features).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_WEIGHTS = "model.safetensors"
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
    files = tokenizer_files(tokenizer, info.config.block_size)
    config = hf_config(info.config, tokenizer.eot, tokenizer.spec())
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


def hf_config(cfg: GPTConfig, eot: int | None, tokenizer_spec: dict[str, Any]) -> dict[str, Any]:
    """GPT2LMHeadModel's config.json for `cfg`, with our own section for the round trip."""
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
        "eos_token_id": eot,
        "use_cache": True,
        "dtype": "float32",
        modeldir.HF_SECTION: {
            "format": modeldir.FORMAT,
            "tokenizer": tokenizer_spec,
            "bias": cfg.bias,
        },
    }


def tokenizer_files(tokenizer: Tokenizer, block_size: int) -> dict[str, bytes]:
    """The files AutoTokenizer loads this tokenizer from, by name."""
    if isinstance(tokenizer, CharTokenizer):
        files = {"tokenizer.json": char_tokenizer_json(tokenizer.chars).encode("utf-8")}
        return files | _tokenizer_config("PreTrainedTokenizerFast", block_size, eot=False)
    if tokenizer.kind == "gpt2":
        encoder, merges = gpt2_bpe_files()
        files = {"vocab.json": encoder.read_bytes(), "merges.txt": merges.read_bytes()}
        return files | _tokenizer_config("GPT2Tokenizer", block_size, eot=True)
    if not isinstance(tokenizer, HasHFJson):  # only a trained BPE ("bpe" kind) is left
        raise ExportError(f"tokenizer kind {tokenizer.kind!r} cannot be exported")
    return bpe_tokenizer_files(tokenizer.hf_json(), block_size)


def bpe_tokenizer_files(hf_json: str, block_size: int) -> dict[str, bytes]:
    """A trained tokenizer, from its Hugging Face tokenizer.json."""
    try:
        added = [t.get("content") for t in json.loads(hf_json).get("added_tokens") or []]
    except (ValueError, AttributeError, TypeError) as e:
        raise ExportError(f"not a Hugging Face tokenizer.json: {e}") from None
    files = {"tokenizer.json": hf_json.encode("utf-8")}
    return files | _tokenizer_config("PreTrainedTokenizerFast", block_size, EOT_TEXT in added)


def _tokenizer_config(cls: str, block_size: int, eot: bool) -> dict[str, bytes]:
    config: dict[str, Any] = {
        "tokenizer_class": cls,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,  # decode must give back the text exactly
        "add_prefix_space": False,
    }
    if eot:
        config |= {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    return {"tokenizer_config.json": (json.dumps(config, indent=2) + "\n").encode("utf-8")}


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
