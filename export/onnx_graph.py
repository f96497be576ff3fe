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
    cfg: GPTConfig,
    weights: dict[str, np.ndarray],
    quantize: str = "none",
    opset: int = 23,
    kv_scales: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> onnx.ModelProto:
    """The inplace-cache graph for `weights` (GPT.state_dict() as float32 numpy arrays).

    With `kv_scales` (per layer, the key and value caches' per-channel scales, each
    (n_head, head_size); export/kv_scales.py measures them) the KV cache is int8:
    GroupQueryAttention stores round(x / scale), clipped to [-128, 127], and reads it back
    times the scale. A step then reads a quarter of the fp32 cache's bytes."""
    g = _Graph(cfg, weights, quantize, kv_scales)
    g.embeddings()
    for i in range(cfg.n_layer):
        g.layer(i)
    g.head()
    return g.model(opset)


class _Graph:
    """The nodes and initializers of one graph, added in order by `build_graph`'s steps.

    `branch` and `resid` name what the next SkipLayerNormalization adds up, and
    `pending_bias` the bias of the Linear before it (folded into that node)."""

    def __init__(
        self,
        cfg: GPTConfig,
        weights: dict[str, np.ndarray],
        quantize: str,
        kv_scales: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.cfg, self.weights, self.kv_scales = cfg, weights, kv_scales
        self.c = cfg.n_embd
        self.bits = QUANTIZE_BITS[quantize]
        self.mlp_bits = self.bits
        if quantize == "int4-mlp":
            self.bits = 8
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.head_key = "wte.weight" if cfg.tie_weights else "lm_head.weight"
        self.head_packed: tuple[str, str] | None = None
        self.branch, self.resid = "pos_emb", "tok_emb"
        self.pending_bias: str | None = None

    # -- pieces

    def block_for(self, nbits: int) -> int:
        return next((b for b in BLOCKS[nbits] if self.c % b == 0), 16)  # 16: padded rows

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    def w(self, key: str) -> np.ndarray:
        return np.asarray(self.weights[key], dtype=np.float32)

    def bias(self, key: str, size: int) -> np.ndarray:
        return self.w(key) if key in self.weights else np.zeros(size, np.float32)

    def node(
        self, op: str, ins: list[str], outs: list[str], domain: str = "", **attrs: Any
    ) -> None:
        name = f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain, **attrs))

    def quantized(self, name: str, weight_nk: np.ndarray, nbits: int) -> tuple[str, str]:
        """weight (N out, K in) -> MatMulNBits' packed (N, K/block, blob) and scales."""
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            DefaultWeightOnlyQuantizer,
        )

        block = self.block_for(nbits)
        q = DefaultWeightOnlyQuantizer(
            DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=nbits)
        )
        packed, scales, _ = q.qbits_block_quant(np.ascontiguousarray(weight_nk.T))
        return self.const(f"{name}.q{nbits}", packed), self.const(
            f"{name}.scales", scales.reshape(-1)
        )

    def linear(
        self,
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
        has_bias = with_bias and bkey in self.weights
        if nbits == 0:
            y = out + ".nobias" if has_bias else out
            self.node("MatMul", [x, self.const(key + ".T", self.w(key).T)], [y])
            if y != out:
                self.node("Add", [y, self.const(bkey, self.w(bkey))], [out])
            return
        n, k = n_k if n_k is not None else self.w(key).shape
        qw, scales = packed if packed is not None else self.quantized(key, self.w(key), nbits)
        ins = [x, qw, scales]
        if has_bias:
            ins += ["", "", self.const(bkey, self.w(bkey))]
        block = self.block_for(nbits)
        self.node(
            "MatMulNBits",
            ins,
            [out],
            MS,
            K=k,
            N=n,
            bits=nbits,
            block_size=block,
            accuracy_level=ACCURACY_LEVEL,
        )

    def skip_ln(self, ln: str, out: str, total: str) -> None:
        """out = LayerNorm(branch + resid + pending bias); total: the sum, the next resid."""
        ins = [
            self.branch,
            self.resid,
            self.const(ln + ".weight", self.w(ln + ".weight")),
            self.const(ln + ".bias", self.bias(ln + ".bias", self.c)),
        ]
        if self.pending_bias is not None:
            ins.append(self.pending_bias)
        self.node("SkipLayerNormalization", ins, [out, "", "", total], MS, epsilon=1e-5)

    # -- the steps

    def embeddings(self) -> None:
        """tok_emb and pos_emb; the token embedding shares the head's quantised matrix when
        tied and quantised."""
        cfg, c, bits = self.cfg, self.c, self.bits
        if bits:
            self.head_packed = self.quantized(self.head_key, self.w(self.head_key), bits)
        block = self.block_for(bits) if bits else 0
        if bits and cfg.tie_weights and c % block == 0:
            assert self.head_packed is not None
            # The same packed matrix, (V, C/block, block) rows; scales need that rank too.
            v_blocks = (cfg.vocab_size, c // block, 1)
            scales = _array(self.inits, self.head_packed[1]).reshape(v_blocks)
            self.node(
                "GatherBlockQuantized",
                [self.head_packed[0], "input_ids", self.const("wte.gather_scales", scales)],
                ["tok_emb_blocks"],
                MS,
                gather_axis=0,
                quantize_axis=2,
                block_size=block,
                bits=bits,
            )
            shape = self.const("emb_shape", np.array([0, 0, c]))
            self.node("Reshape", ["tok_emb_blocks", shape], ["tok_emb"])
        else:
            wte = self.const("wte.weight", self.w("wte.weight"))
            self.node("Gather", [wte, "input_ids"], ["tok_emb"])
        self.node(
            "Gather", [self.const("wpe.weight", self.w("wpe.weight")), "position_ids"], ["pos_emb"]
        )

    def layer(self, i: int) -> None:
        """Block i: attention over its in-place KV cache, then the MLP."""
        p, c, bits, mlp_bits = f"h.{i}.", self.c, self.bits, self.mlp_bits
        self.skip_ln(p + "ln_1", f"l{i}.ln1", f"l{i}.x0")
        self.linear(f"l{i}.ln1", f"l{i}.qkv", p + "attn.c_attn.weight", bits)
        ins = [f"l{i}.qkv", "", "", f"past_key_{i}", f"past_value_{i}", "seqlens_k"]
        ins.append("total_sequence_length")
        quant: dict[str, Any] = {}
        if self.kv_scales is not None:
            shape = (1, self.cfg.n_head, 1, c // self.cfg.n_head)  # broadcast over B and T
            k_scale, v_scale = (np.asarray(a, np.float32).reshape(shape) for a in self.kv_scales[i])
            # inputs 7-11 (rotary caches, position ids, bias, head sink) are unused
            ins += ["", "", "", "", "", self.const(f"l{i}.k_scale", k_scale)]
            ins.append(self.const(f"l{i}.v_scale", v_scale))
            quant = dict(k_quant_type="PER_CHANNEL", v_quant_type="PER_CHANNEL")
            quant["kv_cache_bit_width"] = 8
        self.node(
            "GroupQueryAttention",
            ins,
            [f"l{i}.att", f"present_key_{i}", f"present_value_{i}"],
            MS,
            num_heads=self.cfg.n_head,
            kv_num_heads=self.cfg.n_head,
            **quant,
        )
        self.linear(f"l{i}.att", f"l{i}.proj", p + "attn.c_proj.weight", bits, with_bias=False)
        self.branch, self.resid = f"l{i}.proj", f"l{i}.x0"
        proj_bias = p + "attn.c_proj.bias"
        self.pending_bias = self.const(proj_bias, self.bias(proj_bias, c))
        self.skip_ln(p + "ln_2", f"l{i}.ln2", f"l{i}.x1")
        self.linear(f"l{i}.ln2", f"l{i}.fc", p + "mlp.c_fc.weight", mlp_bits, with_bias=False)
        self.node(
            "FastGelu",
            [f"l{i}.fc", self.const(p + "mlp.c_fc.bias", self.bias(p + "mlp.c_fc.bias", 4 * c))],
            [f"l{i}.gelu"],
            MS,
        )
        self.linear(f"l{i}.gelu", f"l{i}.mlp", p + "mlp.c_proj.weight", mlp_bits, with_bias=False)
        self.branch, self.resid = f"l{i}.mlp", f"l{i}.x1"
        mlp_bias = p + "mlp.c_proj.bias"
        self.pending_bias = self.const(mlp_bias, self.bias(mlp_bias, c))

    def head(self) -> None:
        """The final LayerNorm on the last position, then the logits."""
        self.skip_ln("ln_f", "final_ln", "final_x")
        last = self.const("last", np.array(-1, np.int64))
        self.node("Gather", ["final_ln", last], ["last_ln"], axis=1)
        if self.bits:
            n_k = (self.cfg.vocab_size, self.c)
            self.linear(
                "last_ln",
                "logits",
                self.head_key,
                self.bits,
                with_bias=False,
                packed=self.head_packed,
                n_k=n_k,
            )
        else:
            head = self.const(self.head_key, self.w(self.head_key))
            self.node("Gemm", ["last_ln", head], ["logits"], transB=1)

    def model(self, opset: int) -> onnx.ModelProto:
        """The graph's inputs and outputs (described in export/ort_backend.py) around the nodes."""
        cfg = self.cfg
        # Initializers may be named twice (wte when tied and fp32): keep the first.
        seen: set[str] = set()
        unique = [t for t in self.inits if not (t.name in seen or seen.add(t.name))]  # type: ignore[func-returns-value]
        cache_type = TensorProto.FLOAT if self.kv_scales is None else TensorProto.INT8
        cache_shape: list[str | int] = [
            "batch",
            cfg.n_head,
            cfg.block_size,
            cfg.n_embd // cfg.n_head,
        ]
        graph = helper.make_graph(
            self.nodes,
            "minigpt-inplace",
            [
                helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
                helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
                *[
                    helper.make_tensor_value_info(n, cache_type, cache_shape)
                    for n in cache_names(cfg.n_layer, "past")
                ],
            ],
            [
                helper.make_tensor_value_info(
                    "logits", TensorProto.FLOAT, ["batch", cfg.vocab_size]
                ),
                *[
                    helper.make_tensor_value_info(n, cache_type, cache_shape)
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
