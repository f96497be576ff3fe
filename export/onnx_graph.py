"""Build the fast decoding graph straight from a model's weights (numpy in, ONNX proto out).

One node per job, onnxruntime's fused CPU ops where they exist (domain com.microsoft):

    Gather(wte, input_ids), Gather(wpe, position_ids)
    per layer:  SkipLayerNormalization (residual add + LayerNorm in one node)
                Linear qkv -> GroupQueryAttention (KV cache written in place) -> Linear out
                SkipLayerNormalization -> Linear fc -> FastGelu (bias + tanh GELU) -> Linear proj
    final:      SkipLayerNormalization -> last position -> head (the tied token embedding)

"Linear" is MatMul (+ Add for a bias) in fp32, or one MatMulNBits node (weight-only int8/int4
in blocks along the input axis, bias inside) when quantised. Quantised, the token
embedding is GatherBlockQuantized on the same quantised matrix as the tied head, so the
matrix is stored and read once.

Inputs and outputs are described in export/ort_backend.py (the "inplace" layout): each layer's
cache is a fixed (B, n_head, block_size, head_size) buffer that the engine binds as both
`past_*` and `present_*`, so a step writes only the new positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.options import QUANTIZE_BITS
from export.ort_backend import cache_names
from model.config import GPTConfig

MS = "com.microsoft"
# Quantisation blocks along the input (K) axis: the largest that divides n_embd. Each block
# has a float32 scale, so int8 in blocks of 128 costs 3% over the int8 weights (GPT-2 124M:
# 132 MB instead of 147 MB in blocks of 32); 4-bit weights need the finer blocks.
BLOCKS = {8: (128, 64, 32, 16), 4: (32, 16)}
ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations (the fastest CPU kernels)


def build_graph(
    cfg: GPTConfig, weights: dict[str, np.ndarray], quantize: str = "none", opset: int = 23
) -> onnx.ModelProto:
    """The inplace-cache graph for `weights` (GPT.state_dict() as float32 numpy arrays)."""
    c, nh, hs = cfg.n_embd, cfg.n_head, cfg.n_embd // cfg.n_head
    bits = QUANTIZE_BITS[quantize]

    def block_for(nbits: int) -> int:
        return next((b for b in BLOCKS[nbits] if c % b == 0), 16)  # 16: padded rows

    mlp_bits = bits
    if quantize == "int4-mlp":
        bits = 8
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    def w(key: str) -> np.ndarray:
        return np.asarray(weights[key], dtype=np.float32)

    def bias(key: str, size: int) -> np.ndarray:
        return w(key) if key in weights else np.zeros(size, np.float32)

    def node(op: str, ins: list[str], outs: list[str], domain: str = "", **attrs: Any) -> None:
        nodes.append(
            helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", domain=domain, **attrs)
        )

    def quantized(name: str, weight_nk: np.ndarray, nbits: int) -> tuple[str, str]:
        """weight (N out, K in) -> MatMulNBits' packed (N, K/block, blob) and scales."""
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            DefaultWeightOnlyQuantizer,
        )

        q = DefaultWeightOnlyQuantizer(
            DefaultWeightOnlyQuantConfig(block_size=block_for(nbits), is_symmetric=True, bits=nbits)
        )
        packed, scales, _ = q.qbits_block_quant(np.ascontiguousarray(weight_nk.T))
        return const(f"{name}.q{nbits}", packed), const(f"{name}.scales", scales.reshape(-1))

    def linear(
        x: str,
        out: str,
        key: str,
        nbits: int,
        with_bias: bool = True,
        packed: tuple[str, str] | None = None,
        n_k: tuple[int, int] | None = None,
    ) -> None:
        """out = x @ W.T (+ b); W is the (N, K) torch Linear weight at weights[key]."""
        bkey = key.removesuffix(".weight") + ".bias"
        if nbits == 0:
            y = out if not (with_bias and bkey in weights) else out + ".nobias"
            node("MatMul", [x, const(key + ".T", w(key).T)], [y])
            if y != out:
                node("Add", [y, const(bkey, w(bkey))], [out])
            return
        n, k = n_k if n_k is not None else w(key).shape
        qw, scales = packed if packed is not None else quantized(key, w(key), nbits)
        ins = [x, qw, scales]
        if with_bias and bkey in weights:
            ins += ["", "", const(bkey, w(bkey))]
        node(
            "MatMulNBits",
            ins,
            [out],
            MS,
            K=k,
            N=n,
            bits=nbits,
            block_size=block_for(nbits),
            accuracy_level=ACCURACY_LEVEL,
        )

    # Token embedding, shared with the head when tied and quantised.
    head_key = "wte.weight" if cfg.tie_weights else "lm_head.weight"
    head_packed: tuple[str, str] | None = None
    if bits:
        head_packed = quantized(head_key, w(head_key), bits)
    block = block_for(bits) if bits else 0
    if bits and cfg.tie_weights and c % block == 0:
        assert head_packed is not None
        # The same packed matrix, (V, C/block, block) rows; scales need that rank too.
        v_blocks = (cfg.vocab_size, c // block, 1)
        emb_scales = const("wte.gather_scales", _array(inits, head_packed[1]).reshape(v_blocks))
        node(
            "GatherBlockQuantized",
            [head_packed[0], "input_ids", emb_scales],
            ["tok_emb_blocks"],
            MS,
            gather_axis=0,
            quantize_axis=2,
            block_size=block,
            bits=bits,
        )
        node("Reshape", ["tok_emb_blocks", const("emb_shape", np.array([0, 0, c]))], ["tok_emb"])
    else:
        node("Gather", [const("wte.weight", w("wte.weight")), "input_ids"], ["tok_emb"])
    node("Gather", [const("wpe.weight", w("wpe.weight")), "position_ids"], ["pos_emb"])

    def skip_ln(a: str, b: str, ln: str, out: str, total: str, add_bias: str | None) -> None:
        ins = [
            a,
            b,
            const(ln + ".weight", w(ln + ".weight")),
            const(ln + ".bias", bias(ln + ".bias", c)),
        ]
        if add_bias is not None:
            ins.append(add_bias)
        node("SkipLayerNormalization", ins, [out, "", "", total], MS, epsilon=1e-5)

    branch, resid, pending_bias = "pos_emb", "tok_emb", None  # what the next LN adds up
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        skip_ln(branch, resid, p + "ln_1", f"l{i}.ln1", f"l{i}.x0", pending_bias)
        linear(f"l{i}.ln1", f"l{i}.qkv", p + "attn.c_attn.weight", bits)
        node(
            "GroupQueryAttention",
            [
                f"l{i}.qkv",
                "",
                "",
                f"past_key_{i}",
                f"past_value_{i}",
                "seqlens_k",
                "total_sequence_length",
            ],
            [f"l{i}.att", f"present_key_{i}", f"present_value_{i}"],
            MS,
            num_heads=nh,
            kv_num_heads=nh,
        )
        linear(f"l{i}.att", f"l{i}.proj", p + "attn.c_proj.weight", bits, with_bias=False)
        skip_ln(
            f"l{i}.proj",
            f"l{i}.x0",
            p + "ln_2",
            f"l{i}.ln2",
            f"l{i}.x1",
            const(p + "attn.c_proj.bias", bias(p + "attn.c_proj.bias", c)),
        )
        linear(f"l{i}.ln2", f"l{i}.fc", p + "mlp.c_fc.weight", mlp_bits, with_bias=False)
        node(
            "FastGelu",
            [f"l{i}.fc", const(p + "mlp.c_fc.bias", bias(p + "mlp.c_fc.bias", 4 * c))],
            [f"l{i}.gelu"],
            MS,
        )
        linear(f"l{i}.gelu", f"l{i}.mlp", p + "mlp.c_proj.weight", mlp_bits, with_bias=False)
        branch, resid = f"l{i}.mlp", f"l{i}.x1"
        pending_bias = const(p + "mlp.c_proj.bias", bias(p + "mlp.c_proj.bias", c))
    skip_ln(branch, resid, "ln_f", "final_ln", "final_x", pending_bias)
    node("Gather", ["final_ln", const("last", np.array(-1, np.int64))], ["last_ln"], axis=1)
    if bits:
        v = cfg.vocab_size
        linear("last_ln", "logits", head_key, bits, with_bias=False, packed=head_packed, n_k=(v, c))
    else:
        node("Gemm", ["last_ln", const(head_key, w(head_key))], ["logits"], transB=1)

    # Initializers may be named twice (wte when tied and fp32): keep the first.
    seen: set[str] = set()
    unique = [t for t in inits if not (t.name in seen or seen.add(t.name))]  # type: ignore[func-returns-value]
    cache_shape: list[str | int] = ["batch", nh, cfg.block_size, hs]
    graph = helper.make_graph(
        nodes,
        "minigpt-inplace",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
            *[
                helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape)
                for n in cache_names(cfg.n_layer, "past")
            ],
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.vocab_size]),
            *[
                helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape)
                for n in cache_names(cfg.n_layer, "present")
            ],
        ],
        unique,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)],
        producer_name="minigpt-tui",
    )


def _array(inits: list[onnx.TensorProto], name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in inits if t.name == name)
