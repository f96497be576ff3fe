"""Import GPT-2 weights from a local Hugging Face-format directory (offline).

OpenAI's GPT-2 (and any GPT2LMHeadModel) gets GPT-2's tokenizer. A directory written by
`export hf` also carries a `minigpt_tui` section with the model's own tokenizer spec and bias
flag, which are restored, so export hf -> convert hf gives back the same model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from model import checkpoint, modeldir, userfile
from model.config import ConfigError, GPTConfig
from model.gpt import GPT
from model.modeldir import ModelDirError
from model.tokenizer import GPT2Tokenizer, Tokenizer, TokenizerError, from_spec

# Hugging Face stores these as Conv1D, i.e. (in_features, out_features): transpose them.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # masks older exports store


def _read_hf_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    try:
        hf = json.loads(userfile.read_text(path, modeldir.MAX_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError) as e:  # UserFileError is a ValueError
        raise ModelDirError(f"{path} is not a GPT-2 Hugging Face config: {e!s}") from None
    if not isinstance(hf, dict):
        raise ModelDirError(f"{path} is not a GPT-2 Hugging Face config: not a JSON object")
    return hf


def _our_section(src: Path, hf: dict[str, Any]) -> dict[str, Any]:
    """What `export hf` recorded beyond Hugging Face's keys (empty for other directories)."""
    section = hf.get(modeldir.HF_SECTION) or {}
    if not isinstance(section, dict):
        raise ModelDirError(f"{src / 'config.json'}: {modeldir.HF_SECTION} is not a table")
    return section


def gpt_config(src: Path, hf: dict[str, Any]) -> GPTConfig:
    """Our config from `hf`, src's config.json, taking its values as they are: a width of
    "16", 2.7 layers or a tie_word_embeddings of "false" is refused, never coerced."""
    path = src / "config.json"
    try:
        cfg = GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            dropout=0.0,
            bias=_our_section(src, hf).get("bias", True),
            tie_weights=hf.get("tie_word_embeddings", True),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{path} is not a GPT-2 Hugging Face config: {e!s}") from None
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ModelDirError(f"{path}: model_type {hf.get('model_type')!r} is not gpt2")
    _check_implemented(path, hf, cfg)
    try:
        cfg.validate()
    except ConfigError as e:
        raise ModelDirError(f"{path}: {e}") from None
    return cfg


# GPT2Config's keys that change what the model computes, and the values model/gpt.py
# implements (transformers' defaults, or their equivalents). Anything else is refused: the
# converted model would compute something other than what transformers computes.
IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),  # the tanh GELU of model/gpt.py
    "layer_norm_epsilon": (1e-5,),  # nn.LayerNorm's default, which model/gpt.py uses
    "scale_attn_weights": (True,),  # scores divided by sqrt(head size)
    "scale_attn_by_inverse_layer_idx": (False,),
    "reorder_and_upcast_attn": (False,),
    "add_cross_attention": (False,),
}


def _check_implemented(path: Path, hf: dict[str, Any], cfg: GPTConfig) -> None:
    """Refuse, naming the key, any config value this converter does not implement."""
    for key, values in IMPLEMENTED.items():
        if key in hf and not any(_same(hf[key], v) for v in values):
            allowed = " or ".join(json.dumps(v) for v in values)
            raise ModelDirError(
                f"{path}: {key} {json.dumps(hf[key])[:60]} is not implemented here "
                f"(only {allowed}); this model cannot be converted"
            )
    if hf.get("n_inner") is not None and not _same(hf["n_inner"], 4 * cfg.n_embd):
        raise ModelDirError(
            f"{path}: n_inner {json.dumps(hf['n_inner'])[:60]} is not implemented here (only "
            f"null or 4 * n_embd = {4 * cfg.n_embd}); this model cannot be converted"
        )
    if "n_ctx" in hf and "n_positions" in hf and not _same(hf["n_ctx"], hf["n_positions"]):
        raise ModelDirError(
            f"{path}: n_ctx {json.dumps(hf['n_ctx'])[:60]} contradicts n_positions "
            f"{hf['n_positions']}; this model cannot be converted"
        )


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: True is not 1, and 1e-5 is 1e-05."""
    return type(a) is type(b) and a == b if isinstance(b, bool) or isinstance(a, bool) else a == b


def load_hf(src: Path, hf: dict[str, Any]) -> GPT:
    """Build our GPT from a Hugging Face GPT-2 directory (`hf` is its config.json, read once)."""
    cfg = gpt_config(src, hf)
    weights = src / "model.safetensors"
    if not weights.is_file():
        raise ModelDirError(f"{src} has no model.safetensors")
    try:
        sd = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ModelDirError(f"cannot read {weights}: {e}") from None
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    expected = checkpoint.expected_shapes(cfg)  # no memory yet: shapes are checked first
    # Hugging Face also stores the attention masks as buffers; anything else unused (a layer
    # past n_layer, another architecture's tensor) means the config does not describe these
    # weights, and dropping it silently would make another model.
    # A bias-free model's `export hf` wrote zero biases: those are checked below, not unused.
    unused = sorted(
        k
        for k in sd
        if k not in expected
        and not _HF_BUFFER.fullmatch(k)
        and k != "lm_head.weight"
        and not (not cfg.bias and k.endswith(".bias"))
    )
    if unused:
        raise ModelDirError(
            f"{weights} holds tensors its config.json does not describe ({', '.join(unused[:3])}"
            f"{', ...' if len(unused) > 3 else ''}); check n_layer and the other sizes"
        )
    converted: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        if name not in sd:
            raise ModelDirError(f"{weights} lacks {name}")
        t = sd[name]
        if name.endswith(_TRANSPOSED) and t.ndim == 2:
            t = t.t()
        if t.shape != shape:
            raise ModelDirError(
                f"{weights}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}"
            )
        if not t.is_floating_point():
            raise ModelDirError(f"{weights}: {name} is {t.dtype}, not floating point")
        converted[name] = t.to(torch.float32).contiguous()
    if not cfg.bias:  # `export hf` of a bias-free model wrote zero biases, which are dropped
        for name in sd.keys() - expected.keys():
            if name.endswith(".bias") and bool(sd[name].any()):
                raise ModelDirError(f"{weights}: {name} is not zero, but the config says no bias")
    checkpoint.check_finite(converted, str(weights))
    model = GPT(cfg)
    model.load_state_dict(converted, strict=False)
    return model


def _tokenizer(src: Path, hf: dict[str, Any]) -> Tokenizer:
    """GPT-2's, unless the directory says (from `export hf`) which tokenizer it was made with."""
    spec = _our_section(src, hf).get("tokenizer")
    if spec is None:
        return GPT2Tokenizer()
    if not isinstance(spec, dict):
        raise ModelDirError(f"{src / 'config.json'}: the tokenizer spec is not a table")
    try:
        return from_spec(spec, base=src)  # a trained BPE's tokenizer.json is in src
    except TokenizerError as e:
        raise ModelDirError(f"{src / 'config.json'}: {e}") from None


def convert_hf(src: Path, out: Path, force: bool = False) -> Path:
    if not src.is_dir():
        raise ModelDirError(f"not a directory: {src}")
    modeldir.check_not_input(out, [src])
    hf = _read_hf_config(src)
    model = load_hf(src, hf)
    tokenizer = _tokenizer(src, hf)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ModelDirError(
            f"{src}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model.config.vocab_size}"
        )
    meta = modeldir.make_meta(
        model.config,
        tokenizer,
        name=out.name,
        summary={"params": model.num_params(), "converted_from": str(src.resolve())},
    )
    if out.exists() and not force:
        raise ModelDirError(f"{out} already exists; pass --force to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / modeldir.CONFIG_FILE).is_file():
        raise ModelDirError(f"{out} exists and is not a model directory; choose another --out")
    checkpoint.save(out, model, meta, replace=force, tokenizer=tokenizer)
    return out
