"""Export a model directory to GGUF, llama.cpp's format, as llama.cpp's GPT-2 architecture.

    export_gguf(model_dir, out)                  one .gguf file: weights + tokenizer + config
    export_gguf(model_dir, out, type="q8_0")     8-bit blocks (gguf's own quantiser)

The tensor names and metadata keys come from the `gguf` package (the ggml project's own
writer), so they are the ones llama.cpp's gpt2 loader asks for. This model is GPT-2's
equations, so nothing is converted but names: PyTorch's (out, in) Linear weights are
already the layout ggml wants, and a model without biases gets zero biases. The tokenizer is
written as llama.cpp's byte-level BPE (export/vocab.py), with the tokenizer's own vocabulary
(rows a model was padded with beyond it are dropped).

A chat model (model/chat.py) also carries its template as `tokenizer.chat_template` (the Jinja
source of chat_template.jinja) and `<|end|>` as `tokenizer.ggml.eot_token_id`, its special
tokens typed CONTROL: llama.cpp's chat completion (llama-server / llama-cli `--jinja`,
llama-cpp-python's Jinja2ChatFormatter) renders the template, tokenizes the special tokens out
of it, and ends the reply at `<|end|>`. `<|endoftext|>` stays the bos/eos token, as for GPT-2.

Types: f32 is exact; f16 stores the matrices in half precision; q8_0 stores them in blocks of
32 int8 values with one scale. Norms, biases and the position table stay f32 in every type,
as llama.cpp's own converter keeps them, and a matrix whose rows are not a multiple of 32 is
stored f16 under q8_0. Torch-free: numpy, safetensors and gguf.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from export import weights
from export.options import ExportError
from export.vocab import BPEVocab, bpe_vocab
from model import modeldir
from model.config import GPTConfig

ARCH = gguf.MODEL_ARCH.GPT2
TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which model/gpt.py uses


@dataclass
class GGUFResult:
    path: Path
    type: str
    size_bytes: int
    n_tensors: int
    tokenizer: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def export_gguf(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    type: str = "f32",
    force: bool = False,
) -> GGUFResult:
    """Write MODEL as one GGUF file (default ./NAME-TYPE.gguf); see the module docstring."""
    t0 = time.perf_counter()
    if type not in TYPES:
        raise ExportError(f"--type must be one of {', '.join(TYPES)}, got {type!r}")
    info = modeldir.read(model_path)
    if out is None:
        target = Path(f"{re.sub(r'[^A-Za-z0-9._-]+', '-', info.name)}-{type}.gguf")
    else:
        target = Path(out).expanduser()
    modeldir.check_output(target, force=force, inputs=[info.path])
    sd = weights.load(info)
    tokenizer = info.tokenizer()
    cfg, sd = weights.vocab_rows(info.config, sd, tokenizer.vocab_size)
    vocab = bpe_vocab(tokenizer)
    template = info.chat_template
    if template is not None:
        vocab.notes.append(
            "a chat model: the file carries its chat template and ends a reply at <|end|>; "
            "chat through llama.cpp's chat completion (llama-server --jinja, or "
            "llama-cpp-python's create_chat_completion)"
        )
    with modeldir.atomic_file(target) as tmp:
        n = write_gguf(tmp, cfg, sd, vocab, type, name=info.name, chat_template=template)
    return GGUFResult(
        path=target,
        type=type,
        size_bytes=target.stat().st_size,
        n_tensors=n,
        tokenizer=tokenizer.kind,
        seconds=time.perf_counter() - t0,
        notes=vocab.notes,
    )


def tensor_name(kind: gguf.MODEL_TENSOR, suffix: str, layer: int | None = None) -> str:
    """llama.cpp's name for one tensor of the GPT-2 architecture, from gguf's own tables."""
    if kind not in gguf.MODEL_TENSORS[ARCH]:
        raise AssertionError(f"{kind} is not a tensor of {gguf.MODEL_ARCH_NAMES[ARCH]}")
    base = gguf.TENSOR_NAMES[kind]
    return (base.format(bid=layer) if layer is not None else base) + "." + suffix


def gguf_tensors(cfg: GPTConfig, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This project's weights (export/weights.py names) under llama.cpp's GPT-2 names."""
    T = gguf.MODEL_TENSOR
    out = {
        tensor_name(T.TOKEN_EMBD, "weight"): sd["wte.weight"],
        tensor_name(T.POS_EMBD, "weight"): sd["wpe.weight"],
        tensor_name(T.OUTPUT_NORM, "weight"): sd["ln_f.weight"],
        tensor_name(T.OUTPUT_NORM, "bias"): sd["ln_f.bias"],
    }
    if not cfg.tie_weights:  # llama.cpp uses token_embd as the head when output is absent
        out[tensor_name(T.OUTPUT, "weight")] = sd["lm_head.weight"]
    per_layer = {
        "ln_1": T.ATTN_NORM,
        "attn.c_attn": T.ATTN_QKV,
        "attn.c_proj": T.ATTN_OUT,
        "ln_2": T.FFN_NORM,
        "mlp.c_fc": T.FFN_UP,
        "mlp.c_proj": T.FFN_DOWN,
    }
    for i in range(cfg.n_layer):
        for ours, kind in per_layer.items():
            for suffix in ("weight", "bias"):
                out[tensor_name(kind, suffix, i)] = sd[f"h.{i}.{ours}.{suffix}"]
    return out


def storage_type(name: str, array: np.ndarray, type: str) -> gguf.GGMLQuantizationType:
    """What one tensor is stored as under --type (llama.cpp's converter's rules)."""
    pos_embd = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]
    if type == "f32" or array.ndim < 2 or name.startswith(pos_embd):
        return gguf.GGMLQuantizationType.F32
    qtype = TYPES[type][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def write_gguf(
    path: Path,
    cfg: GPTConfig,
    sd: dict[str, np.ndarray],
    vocab: BPEVocab,
    type: str,
    name: str,
    chat_template: str | None = None,
) -> int:
    """Write the GGUF file at `path` (not atomically: callers pass a temporary name)."""
    if len(vocab.tokens) != cfg.vocab_size:
        raise ExportError(f"{len(vocab.tokens)} tokens for a model of {cfg.vocab_size} rows")
    tensors = gguf_tensors(cfg, sd)
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[ARCH])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(LAYER_NORM_EPS)
    w.add_file_type(TYPES[type][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    if vocab.eot is not None:
        w.add_bos_token_id(vocab.eot)
        w.add_eos_token_id(vocab.eot)
    w.add_add_bos_token(False)  # GPT-2 starts from the text itself; a chat template writes it
    if vocab.end is not None:
        w.add_eot_token_id(vocab.end)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    for tname, array in tensors.items():
        qtype = storage_type(tname, array, type)
        data = gguf.quants.quantize(array, qtype)
        if qtype == gguf.GGMLQuantizationType.F16 and not np.isfinite(data).all():
            raise ExportError(f"{tname} has values beyond float16's range; use --type f32")
        w.add_tensor(tname, data, raw_dtype=qtype)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return len(tensors)
