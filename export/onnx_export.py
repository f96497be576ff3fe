"""Export a model directory to ONNX with a KV cache, for the onnxruntime engine.

    export_onnx(model_dir)                  adds model.onnx beside model.safetensors
    export_onnx(model_dir, out_dir)         writes a new model directory: config.json + model.onnx
    export_onnx(..., quantize="int8")       onnxruntime dynamic quantisation of the matmuls

Steps: torch.onnx.export (the torch.export-based exporter, dynamic batch/sequence/past
lengths, opset 23 so attention becomes one ONNX Attention node) of a thin wrapper around
GPT.forward_cached -> fold the per-head reshapes and the cache concatenation into each Attention
node (fewer, larger nodes: decoding is dominated by per-node overhead) -> optional int8
quantisation -> verification against PyTorch on random prompts (prefill and decode steps) ->
atomic write. Nothing is written when verification fails.

The graph's inputs and outputs are described in export/ort_engine.py. Needs torch, onnx and
onnxscript (`pip install minigpt-tui[train]`); the engine that runs the result needs neither.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper

from export import ort_engine
from export.options import MIN_OPSET, ExportError, check_opset, check_quantize
from model import checkpoint, modeldir
from model.config import GPTConfig
from model.errors import first_line
from model.gpt import GPT
from model.modeldir import ModelDirError

DEFAULT_OPSET = 23  # the first opset with an Attention operator
# fp32 verification: |onnx - torch| <= FP32_TOLERANCE * max(1, |largest torch logit|).
FP32_TOLERANCE = 1e-4
# int8 verification: mean KL(torch || int8) over the verified positions, in nats. Quantised
# logits are not close elementwise; what matters is the distribution they sample from.
INT8_MAX_KL = 0.05
MAX_ONNX_BYTES = 2_000_000_000  # protobuf's limit for one file, with some room for the graph


@dataclass
class ExportResult:
    out_dir: Path
    onnx_path: Path
    quantize: str
    opset: int
    size_bytes: int
    seconds: float
    fused_attention: int  # Attention nodes that took over their reshapes and cache concat
    verify: dict[str, Any] | None = field(default=None)


class _CachedLM(torch.nn.Module):
    """GPT.forward_cached with flat tensor inputs/outputs and last-position logits."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self, input_ids: torch.Tensor, past: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, present = self.gpt.forward_cached(input_ids, cache, last_only=True)
        return (logits[:, -1, :], *[t for kv in present for t in kv])


def export_onnx(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    quantize: str = "none",
    opset: int | None = None,
    verify: bool = True,
    force: bool = False,
) -> ExportResult:
    """Export a model directory; see the module docstring. Raises ExportError/ModelDirError."""
    t0 = time.perf_counter()
    check_quantize(quantize)
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
    graph = _export_graph(model, opset)
    fused = fuse_attention(graph, model.config.n_head)
    data = _quantize_int8(graph) if quantize == "int8" else graph.SerializeToString()
    if verify:
        report = verify_export(model, data, quantize)
    else:
        report = None
        load_session(data, model.config)  # at least onnxruntime must load what is written

    meta = dict(info.meta)
    meta["onnx"] = _onnx_meta(model, opset, quantize, fused, report)
    if in_place:
        modeldir.atomic_write_bytes(target / modeldir.ONNX_FILE, data)
        modeldir.write_json(target / modeldir.CONFIG_FILE, meta)
    else:
        # _plan_output allowed an existing target only if empty or with --force.
        with modeldir.staged_dir(target, replace=target.exists()) as tmp:
            (tmp / modeldir.ONNX_FILE).write_bytes(data)
            modeldir.write_json(tmp / modeldir.CONFIG_FILE, meta)
    return ExportResult(
        out_dir=target,
        onnx_path=target / modeldir.ONNX_FILE,
        quantize=quantize,
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
        writable = parent
        if target.exists() or target.is_symlink():
            if not target.is_dir():
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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress and warnings we do not want on the user's terminal."""
    import logging

    logging.disable(logging.WARNING)  # the exporter's and quantiser's progress notes
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _export_graph(model: GPT, opset: int) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) with dynamic batch, new-token and past lengths."""
    from torch.export import Dim

    cfg = model.config
    if cfg.block_size < 4:
        raise ExportError(f"block_size {cfg.block_size} is too small to export (needs >= 4)")
    hs = cfg.n_embd // cfg.n_head
    # Example sizes of 2, not 0 or 1: torch.export would specialise those to constants.
    ids = torch.zeros((2, 2), dtype=torch.long)
    past = tuple(torch.zeros((2, cfg.n_head, 2, hs)) for _ in range(2 * cfg.n_layer))
    batch = Dim("batch", min=1)
    seq = Dim("seq", min=1, max=cfg.block_size)
    past_len = Dim("past", min=0, max=cfg.block_size)
    try:
        with _quiet():
            program = torch.onnx.export(
                _CachedLM(model).eval(),
                (ids, past),
                dynamo=True,
                opset_version=opset,
                input_names=ort_engine.input_names(cfg),
                output_names=ort_engine.output_names(cfg),
                dynamic_shapes={
                    "input_ids": {0: batch, 1: seq},
                    "past": tuple({0: batch, 2: past_len} for _ in past),
                },
                external_data=False,
            )
    except Exception as e:  # the exporter's errors are long reports; keep the first line
        raise ExportError(f"torch.onnx.export failed: {first_line(e)}") from e
    assert program is not None
    proto: onnx.ModelProto = program.model_proto
    wrote = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if wrote != opset:  # the exporter falls back quietly when it cannot convert
        raise ExportError(
            f"torch {torch.__version__}'s exporter wrote opset {wrote} instead of {opset}; "
            f"choose an --opset between {MIN_OPSET} and {DEFAULT_OPSET}"
        )
    return proto


def fuse_attention(model: onnx.ModelProto, n_head: int) -> int:
    """Fold each layer's head reshapes, transposes and cache Concat into its Attention node.

    The exporter writes, per layer (q, k, v from one Split, each (B, T, C)):
        Reshape -> Transpose(0,2,1,3) -> [Concat(past, ., axis=2) for k and v] -> Attention
        -> Transpose(0,2,1,3) -> Reshape back to (B, T, C)
    ONNX Attention (opset 23) does all of that itself given 3D q/k/v, q_num_heads and the past
    cache, returning the present cache: ten nodes fewer per layer, measured ~12% faster
    decoding. Anything that does not match exactly is left alone. Returns how many fused.
    """
    g = model.graph
    producer = {out: n for n in g.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def made_by(name: str, op: str, **attrs: Any) -> onnx.NodeProto | None:
        n = producer.get(name)
        if n is None or n.op_type != op or n.domain not in ("", "ai.onnx"):
            return None
        got = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        return n if all(got.get(k) == v for k, v in attrs.items()) else None

    def only_user(name: str, op: str, **attrs: Any) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        if len(users) != 1:
            return None
        return made_by(users[0].output[0], op, **attrs)

    perm = [0, 2, 1, 3]
    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for att in g.node:
        if att.op_type != "Attention" or att.domain not in ("", "ai.onnx"):
            continue
        if len(att.input) != 4 or len(att.output) != 1:
            continue
        q_t = made_by(att.input[0], "Transpose", perm=perm)
        k_cat = made_by(att.input[1], "Concat", axis=2)
        v_cat = made_by(att.input[2], "Concat", axis=2)
        if q_t is None or k_cat is None or v_cat is None:
            continue
        k_t = made_by(k_cat.input[1], "Transpose", perm=perm)
        v_t = made_by(v_cat.input[1], "Transpose", perm=perm)
        if k_t is None or v_t is None:
            continue
        q_r, k_r, v_r = (made_by(t.input[0], "Reshape") for t in (q_t, k_t, v_t))
        y_t = only_user(att.output[0], "Transpose", perm=perm)
        y_r = only_user(y_t.output[0], "Reshape") if y_t is not None else None
        if q_r is None or k_r is None or v_r is None or y_t is None or y_r is None:
            continue
        inner = (q_t, k_t, v_t, y_t)  # values nobody else may read
        if any(len(consumers.get(n.output[0], [])) != 1 for n in inner):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in att.attribute}
        attrs.update(q_num_heads=n_head, kv_num_heads=n_head)
        fused = helper.make_node(
            "Attention",
            [
                q_r.input[0],
                k_r.input[0],
                v_r.input[0],
                att.input[3],
                k_cat.input[0],
                v_cat.input[0],
            ],
            [y_r.output[0], k_cat.output[0], v_cat.output[0]],
            name=f"{att.name}_with_cache",
            **attrs,
        )
        replaced[id(att)] = fused
        removed.update(id(n) for n in (q_r, k_r, v_r, q_t, k_t, v_t, k_cat, v_cat, y_t, y_r))
    nodes = [replaced.get(id(n), n) for n in g.node if id(n) not in removed]
    del g.node[:]
    g.node.extend(_live_nodes(nodes, {o.name for o in g.output}))
    used = {name for n in g.node for name in n.input}
    keep = [init for init in g.initializer if init.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return len(replaced)


def _live_nodes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes whose results reach no graph output (e.g. shapes only the reshapes used)."""
    needed = set(outputs)
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(n.input)
    return live[::-1]


def _fold_transposed_weights(model: onnx.ModelProto) -> None:
    """Turn Transpose(initializer) into a transposed initializer (the tied output head).

    Dynamic quantisation only quantises a MatMul whose weight is an initializer.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "Transpose" and n.input[0] in inits and len(n.output) == 1:
            perm = [a for a in n.attribute if a.name == "perm"]
            arr = numpy_helper.to_array(inits[n.input[0]])
            axes = list(perm[0].ints) if perm else None
            g.initializer.append(numpy_helper.from_array(np.transpose(arr, axes), n.output[0]))
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)


def _quantize_int8(model: onnx.ModelProto) -> bytes:
    """onnxruntime dynamic quantisation: int8 weights, activations quantised per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _fold_transposed_weights(model)
    with tempfile.TemporaryDirectory(prefix="minigpt-onnx-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model.SerializeToString())
        with _quiet():
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=True,
                # Only weight matmuls: the ONNX Attention node is not the contrib op the
                # quantiser would otherwise rewrite it to.
                op_types_to_quantize=["MatMul"],
                extra_options={"MatMulConstBOnly": True},
            )
        return dst.read_bytes()


def load_session(data: bytes, cfg: GPTConfig) -> Any:
    """An onnxruntime session of the exported graph; one-line ExportError if it cannot load."""
    try:
        session = ort_engine.make_session(data, threads=1)
    except Exception as e:  # onnxruntime's own error types, e.g. an operator it lacks
        raise ExportError(
            f"onnxruntime cannot load the exported graph: {first_line(e)}; nothing was written"
        ) from None
    ort_engine.check_signature(session, cfg, "the exported graph")
    return session


def verify_export(model: GPT, data: bytes, quantize: str, seed: int = 0) -> dict[str, Any]:
    """Run onnxruntime and PyTorch side by side on random prompts; raise if they disagree.

    Each case is a batch size and the chunk lengths fed one after another: a prefill, then
    decode steps of one (torch's greedy) token. Cases: a 1-token prompt; a batch of two
    half-block prompts, continued by a 3-token chunk (a cache and several new tokens at once);
    and a prompt that decodes up to the last position of the block.
    """
    cfg = model.config
    session = load_session(data, cfg)
    outputs = ort_engine.output_names(cfg)
    past_names = ort_engine.cache_names(cfg.n_layer, "past")
    rng = np.random.default_rng(seed)
    bs = cfg.block_size
    half = min(bs // 2, 64)
    chunk = 3 if half + 3 <= bs else 1
    cases = [
        (1, [1] + [1] * min(8, bs - 1)),
        (2, [half, chunk] + [1] * min(6, bs - half - chunk)),
        (1, [bs - 3, 1, 1, 1]),
    ]
    diffs, kls, agree, scale = [], [], [], 1.0
    hs = cfg.n_embd // cfg.n_head
    for batch, chunks in cases:
        t_cache = None
        o_cache = [np.zeros((batch, cfg.n_head, 0, hs), np.float32)] * len(past_names)
        greedy = np.zeros((batch, 0), dtype=np.int64)
        for length in chunks:
            fill = rng.integers(0, cfg.vocab_size, size=(batch, length - greedy.shape[1]))
            ids = np.concatenate([greedy, fill], axis=1).astype(np.int64)
            with torch.inference_mode():
                t_logits, t_cache = model.forward_cached(
                    torch.from_numpy(ids), t_cache, last_only=True
                )
            want = t_logits[:, -1].float().numpy()
            got, *o_cache = session.run(
                outputs, {"input_ids": ids, **dict(zip(past_names, o_cache, strict=True))}
            )
            diffs.append(float(np.abs(got - want).max()))
            scale = max(scale, float(np.abs(want).max()))
            kls.append(float(_kl(want, got).mean()))
            agree.extend((got.argmax(-1) == want.argmax(-1)).tolist())
            greedy = want.argmax(-1).reshape(batch, 1).astype(np.int64)
    report: dict[str, Any] = {
        "positions": len(agree),
        "max_logit_diff": max(diffs),
        "mean_kl": float(np.mean(kls)),
        "greedy_agreement": float(np.mean(agree)),
    }
    if quantize == "none":
        tol = FP32_TOLERANCE * scale
        report["tolerance"] = tol
        if not report["max_logit_diff"] <= tol:  # NaN (a non-finite model) fails too
            raise ExportError(
                f"verification failed: onnxruntime logits differ from PyTorch by "
                f"{report['max_logit_diff']:.3g} (tolerance {tol:.3g}); nothing was written"
            )
    else:
        report["max_mean_kl"] = INT8_MAX_KL
        if not report["mean_kl"] <= INT8_MAX_KL:
            raise ExportError(
                f"verification failed: int8 model's next-token distribution is "
                f"{report['mean_kl']:.3g} nats from PyTorch's (KL; bound {INT8_MAX_KL}); "
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
    model: GPT, opset: int, quantize: str, fused: int, report: dict[str, Any] | None
) -> dict[str, Any]:
    import onnxruntime
    import onnxscript

    cfg = model.config
    return {
        "file": modeldir.ONNX_FILE,
        "opset": opset,
        "quantize": quantize,
        "inputs": ort_engine.input_names(cfg),
        "outputs": ort_engine.output_names(cfg),
        "cache_layout": "per layer (batch, n_head, past_len, head_size)",
        "logits": "last position",
        "fused_attention": fused,
        "verify": report,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "tools": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
