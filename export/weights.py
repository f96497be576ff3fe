"""A model directory's weights as numpy arrays, checked against its config (torch-free).

Names are this project's (model/gpt.py): wte, wpe, h.{i}.ln_1 / attn.c_attn / attn.c_proj /
ln_2 / mlp.c_fc / mlp.c_proj, ln_f, and lm_head when the head is not tied. Linear weights are
(out_features, in_features), as PyTorch stores them. A model without biases (`bias: false`) gets
zero biases, which is the same function, for formats that always have them.

The GGUF and Hugging Face exports write the tokenizer's own vocabulary: `vocab_rows` drops the
rows a model was padded with beyond it (`--vocab-size 50304`), which no token uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from model import modeldir
from model.config import GPTConfig
from model.modeldir import ModelDirError, ModelInfo


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of the model `cfg` describes, with its shape (no biases when bias=False)."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (cfg.block_size, C)}
    linear = {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C), "mlp.c_fc": (4 * C, C)}
    linear["mlp.c_proj"] = (C, 4 * C)
    for i in range(cfg.n_layer):
        for norm in ("ln_1", "ln_2"):
            shapes[f"h.{i}.{norm}.weight"] = (C,)
            if cfg.bias:
                shapes[f"h.{i}.{norm}.bias"] = (C,)
        for name, shape in linear.items():
            shapes[f"h.{i}.{name}.weight"] = shape
            if cfg.bias:
                shapes[f"h.{i}.{name}.bias"] = (shape[0],)
    shapes["ln_f.weight"] = (C,)
    if cfg.bias:
        shapes["ln_f.bias"] = (C,)
    if not cfg.tie_weights:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def load(info: ModelInfo) -> dict[str, np.ndarray]:
    """The float32 weights of a model directory, with zero biases filled in if it has none."""
    path = info.weights_path
    if not path.is_file():
        raise ModelDirError(f"{info.path} has no weights ({modeldir.WEIGHTS_FILE}) to export")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ModelDirError(f"cannot read {path}: {e}") from None
    expected = expected_shapes(info.config)
    missing, extra = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or extra:
        raise ModelDirError(
            f"{path} does not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name, shape in expected.items():
        if sd[name].shape != shape:
            raise ModelDirError(f"{path}: {name} has shape {sd[name].shape}, config says {shape}")
        if sd[name].dtype != np.float32:
            raise ModelDirError(f"{path}: {name} is {sd[name].dtype}, expected float32")
    if not info.config.bias:
        with_bias = expected_shapes(_with_bias(info.config))
        for name in with_bias.keys() - expected.keys():
            sd[name] = np.zeros(with_bias[name], dtype=np.float32)
    return sd


def _with_bias(cfg: GPTConfig) -> GPTConfig:
    return GPTConfig(**{**cfg.to_dict(), "bias": True})


def vocab_rows(
    cfg: GPTConfig, sd: dict[str, np.ndarray], n_vocab: int
) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """The config and weights with only the first `n_vocab` rows of the token embedding and
    the output head (a tokenizer's tokens; padding rows beyond them dropped)."""
    if n_vocab > cfg.vocab_size:
        raise ModelDirError(
            f"the tokenizer has {n_vocab} tokens but the model only {cfg.vocab_size}"
        )
    if n_vocab == cfg.vocab_size:
        return cfg, sd
    out = dict(sd)
    for name in ("wte.weight", "lm_head.weight"):
        if name in out:
            out[name] = np.ascontiguousarray(out[name][:n_vocab])
    return dataclasses.replace(cfg, vocab_size=n_vocab), out
