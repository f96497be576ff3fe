"""Export a model directory to ONNX with an in-place KV cache, for the onnxruntime engine.

    export_onnx(model_dir)                  adds model.onnx beside model.safetensors
    export_onnx(model_dir, out_dir)         writes a new model directory: config.json + model.onnx
    export_onnx(..., quantize="int8")       weight-only int8 (MatMulNBits), embedding included,
                                            and (kv_cache="auto") an int8 KV cache

Steps: build the graph straight from the weights (export/onnx_graph.py: fused onnxruntime
ops, GroupQueryAttention over a cache written in place, optional weight-only quantisation) ->
verification against PyTorch on random prompts (prefill, single and batched decode steps, up
to the last position of the block) -> atomic write. Nothing is written when verification
fails.

Quantisation (--quantize), measured on the bundled model's whole validation split
(benchmarks/onnx_quality.py; benchmarks/RESULTS.md, "Decoding at the bandwidth limit"):
    none      fp32
    int8      8-bit weights in blocks of up to 128, the tied embedding/head stored once
    int4      4-bit weights everywhere
    int4-mlp  4-bit MLP weights, 8-bit attention and embedding/head

KV cache (--kv-cache): float32, or int8 with per-channel scales that export/kv_scales.py
measures on the model; auto is int8 with quantised weights and float32 without, so that an
unquantised export stays exact (verified to 1e-4) unless asked otherwise.

The graph's inputs and outputs are described in export/ort_backend.py. Needs torch (to read
the checkpoint and verify; `pip install minigpt-tui[train]`); the engine that runs the result
needs only numpy and onnxruntime.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export import onnx_graph, ort_backend
from export.kv_scales import kv_scales
from export.options import ExportError, check_kv_cache, check_opset, check_quantize
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.errors import first_line
from model.gpt import GPT
from model.modeldir import ModelDirError

DEFAULT_OPSET = 23
# fp32 verification: |onnx - torch| <= FP32_TOLERANCE * max(1, |largest torch logit|).
FP32_TOLERANCE = 1e-4
# Quantised verification: mean KL(torch || onnx) over the verified positions, in nats.
# Quantised logits are not close elementwise; what matters is the distribution they sample
# from. 4-bit weights move it more; their cost in loss is measured, and said in --help.
MAX_KL = {"int8": 0.05, "int4": 0.25, "int4-mlp": 0.25}
MAX_ONNX_BYTES = 2_000_000_000  # protobuf's limit for one file, with some room for the graph


@dataclass
class ExportResult:
    out_dir: Path
    onnx_path: Path
    quantize: str
    kv_cache: str  # float32 or int8
    opset: int
    size_bytes: int
    seconds: float
    fused_attention: int  # GroupQueryAttention nodes (one per layer)
    verify: dict[str, Any] | None = field(default=None)


def export_onnx(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    quantize: str = "none",
    opset: int | None = None,
    verify: bool = True,
    force: bool = False,
    kv_cache: str = "auto",
) -> ExportResult:
    """Export a model directory; see the module docstring. Raises ExportError/ModelDirError."""
    t0 = time.perf_counter()
    check_quantize(quantize)
    kv_cache = check_kv_cache(kv_cache, quantize)
    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    info = modeldir.read(model_path)
    if not info.has_weights:
        raise ModelDirError(f"{info.path} has no weights ({modeldir.WEIGHTS_FILE}) to export")
    if info.config.num_params() * 4 > MAX_ONNX_BYTES:
        raise ExportError(
            f"{info.config.num_params():,} parameters do not fit one 2 GB ONNX file; models "
            "that need external weight files are not supported"
        )
    target, in_place = _plan_output(info, out_dir, force)

    model, _ = checkpoint.load(info.path)
    model.eval()
    graph = build_graph(model, quantize, opset, kv_cache)
    fused = sum(n.op_type == "GroupQueryAttention" for n in graph.graph.node)
    data = graph.SerializeToString()
    if verify:
        report = verify_export(model, data, quantize)
    else:
        report = None
        load_session(data, model.config)  # at least onnxruntime must load what is written

    meta = dict(info.meta)
    meta["onnx"] = _onnx_meta(model, opset, quantize, kv_cache, fused, report)
    if in_place:
        modeldir.atomic_write_bytes(target / modeldir.ONNX_FILE, data)
        modeldir.write_json(target / modeldir.CONFIG_FILE, meta)
    else:
        # _plan_output allowed an existing target only if empty or with --force.
        with modeldir.staged_dir(target, replace=target.exists()) as tmp:
            (tmp / modeldir.ONNX_FILE).write_bytes(data)
            modeldir.copy_tokenizer_files(info, tmp)
            modeldir.write_json(tmp / modeldir.CONFIG_FILE, meta)
    return ExportResult(
        out_dir=target,
        onnx_path=target / modeldir.ONNX_FILE,
        quantize=quantize,
        kv_cache=kv_cache,
        opset=opset,
        size_bytes=len(data),
        seconds=time.perf_counter() - t0,
        fused_attention=fused,
        verify=report,
    )


def _plan_output(
    info: modeldir.ModelInfo, out_dir: str | os.PathLike[str] | None, force: bool
) -> tuple[Path, bool]:
    """Where the export goes, and whether it is the model directory itself; refuse early."""
    if out_dir is None or _same_path(Path(out_dir), info.path):
        target, in_place = info.path, True
        if info.has_onnx and not force:
            raise ExportError(f"{info.onnx_path} already exists; pass --force to replace it")
        writable = target
    else:
        target, in_place = Path(out_dir).expanduser(), False
        parent = target.parent
        if not parent.is_dir():
            raise ExportError(f"cannot write {target}: directory {parent} does not exist")
        modeldir.check_not_input(target, [info.path])
        writable = parent
        if target.exists() or target.is_symlink():
            if target.is_symlink() or not target.is_dir():
                raise ExportError(f"{target} exists and is not a directory")
            contents = {p.name for p in target.iterdir()}
            if contents and modeldir.CONFIG_FILE not in contents:
                raise ExportError(
                    f"{target} exists and is not a model directory; choose another --out"
                )
            if contents & {modeldir.WEIGHTS_FILE, modeldir.TRAINER_FILE}:
                raise ExportError(
                    f"{target} holds another model's weights; export into it in place "
                    "(no --out) or choose another --out"
                )
            if contents and not force:
                raise ExportError(f"{target} already exists; pass --force to replace it")
    if not os.access(writable, os.W_OK):
        raise ExportError(f"cannot write to {writable}: permission denied")
    return target, in_place


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.resolve()
    except OSError:
        return False


def build_graph(
    model: GPT, quantize: str = "none", opset: int = DEFAULT_OPSET, kv_cache: str = "float32"
) -> onnx.ModelProto:
    """The ONNX graph of a loaded model (see export/onnx_graph.py)."""
    weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    scales = kv_scales(model) if kv_cache == "int8" else None
    return onnx_graph.build_graph(model.config, weights, quantize, opset, scales)


def load_session(data: bytes, cfg: GPTConfig) -> ort_backend.OrtModel:
    """The exported graph in onnxruntime; one-line ExportError if it cannot load."""
    try:
        session = ort_backend.make_session(data, threads=1)
    except Exception as e:  # onnxruntime's own error types, e.g. an operator it lacks
        raise ExportError(
            f"onnxruntime cannot load the exported graph: {first_line(e)}; nothing was written"
        ) from None
    cache_type = ort_backend.check_signature(session, cfg, "the exported graph")
    return ort_backend.OrtModel(session, cfg, cache_type)


def verify_export(model: GPT, data: bytes, quantize: str, seed: int = 0) -> dict[str, Any]:
    """Run onnxruntime and PyTorch side by side on random prompts; raise if they disagree.

    Each case is a set of streams with their prompt lengths, then decode steps of one
    (torch's greedy) token per stream in one batched call: a 1-token prompt; two streams of
    different lengths (each its own positions); and a prompt that decodes up to the last
    position of the block.
    """
    cfg = model.config
    onnx_model = load_session(data, cfg)
    rng = np.random.default_rng(seed)
    bs = cfg.block_size
    half = min(bs // 2, 64)
    cases = [
        ([1], min(8, bs - 1)),
        ([half, max(1, half - 5)], min(6, bs - half)),
        ([bs - 3], 3),
    ]
    diffs, kls, agree, scale = [], [], [], 1.0

    def compare(want: np.ndarray, got: np.ndarray) -> None:
        nonlocal scale
        diffs.append(float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
        kls.append(float(_kl(want, got).mean()))
        agree.extend((got.argmax(-1) == want.argmax(-1)).tolist())

    for lengths, steps in cases:
        streams = onnx_model.streams(len(lengths))
        t_caches: list[Any] = []
        t_logits, o_logits = [], []
        for i, n in enumerate(lengths):
            ids = rng.integers(0, cfg.vocab_size, size=(1, n))
            with torch.inference_mode():
                logits, cache = model.forward_cached(torch.from_numpy(ids), None, last_only=True)
            t_caches.append(cache)
            t_logits.append(logits[0, -1].float().numpy())
            o_logits.append(streams.prefill(i, ids[0].tolist()))
        for _ in range(steps):
            want, got = np.stack(t_logits), np.stack(o_logits)
            compare(want, got)
            tokens = want.argmax(-1).tolist()
            o_logits = list(streams.decode_batch(tokens))
            for i, tok in enumerate(tokens):
                with torch.inference_mode():
                    logits, t_caches[i] = model.forward_cached(
                        torch.tensor([[tok]]), t_caches[i], last_only=True
                    )
                t_logits[i] = logits[0, -1].float().numpy()
        compare(np.stack(t_logits), np.stack(o_logits))
    report: dict[str, Any] = {
        "positions": len(agree),
        "max_logit_diff": max(diffs),
        "mean_kl": float(np.mean(kls)),
        "greedy_agreement": float(np.mean(agree)),
    }
    if quantize == "none" and onnx_model.cache_type is np.float32:
        tol = FP32_TOLERANCE * scale
        report["tolerance"] = tol
        if not report["max_logit_diff"] <= tol:  # NaN (a non-finite model) fails too
            raise ExportError(
                f"verification failed: onnxruntime logits differ from PyTorch by "
                f"{report['max_logit_diff']:.3g} (tolerance {tol:.3g}); nothing was written"
            )
    else:
        bound = MAX_KL.get(quantize, MAX_KL["int8"])  # none: an int8 KV cache alone
        report["max_mean_kl"] = bound
        if not report["mean_kl"] <= bound:  # NaN fails too
            what = quantize if quantize != "none" else "int8 KV cache"
            raise ExportError(
                f"verification failed: {what} model's next-token distribution is "
                f"{report['mean_kl']:.3g} nats from PyTorch's (KL; bound {bound}); "
                "nothing was written"
            )
    return report


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, from logits, in nats."""

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return np.asarray((np.exp(lp) * (lp - lq)).sum(-1))


def _onnx_meta(
    model: GPT,
    opset: int,
    quantize: str,
    kv_cache: str,
    fused: int,
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    import onnxruntime

    cfg = model.config
    return {
        "file": modeldir.ONNX_FILE,
        "opset": opset,
        "quantize": quantize,
        "inputs": ort_backend.input_names(cfg),
        "outputs": ort_backend.output_names(cfg),
        "cache_layout": "per layer (batch, n_head, block_size, head_size), written in place",
        "kv_cache": kv_cache,
        "logits": "last position",
        "fused_attention": fused,
        "verify": report,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "tools": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
