"""What `export_onnx` accepts and how it refuses, torch-free so the CLI checks options first."""

from __future__ import annotations

import functools

from model.errors import one_of

QUANTIZE_MODES = ("none", "int8")  # none: fp32; int8: onnxruntime dynamic quantisation


class ExportError(Exception):
    """An export that cannot be done or did not verify; nothing was written."""


def check_quantize(mode: str) -> str:
    """`mode` if it is one of QUANTIZE_MODES, else a one-line ExportError."""
    if mode not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be {one_of(QUANTIZE_MODES)}, got {mode!r}")
    return mode


MIN_OPSET = 18  # the oldest the torch.export-based exporter writes
ATTENTION_OPSET = 23  # the first opset with the Attention operator the export uses


@functools.cache
def newest_opset() -> int:
    """The newest opset that every installed tool handles: onnx defines it, the exporter's
    version converter (onnxscript) converts to it, and onnxruntime runs an Attention node at
    it (checked by loading a one-node graph, a few milliseconds)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    try:  # the exporter converts its graph to the requested opset with this converter
        from onnxscript.version_converter import _version_converter as converter

        newest = min(newest, int(getattr(converter, "SUPPORTED_MAX_ONNX_OPSET", newest)))
    except ImportError:
        pass
    while newest > ATTENTION_OPSET and not _runs_attention(newest):
        newest -= 1
    return newest


def _runs_attention(opset: int) -> bool:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    qkv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4]) for n in "qkv"]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=1, kv_num_heads=1)
    graph = helper.make_graph([node], "probe", qkv, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own error types: this opset is not one it runs
        return False
    return True


def check_opset(opset: int) -> int:
    """`opset` if the installed onnx, exporter and onnxruntime all handle it; else one line."""
    newest = newest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(
            f"--opset must be between {MIN_OPSET} and {newest} (the newest that the installed "
            f"onnx, exporter and onnxruntime all handle), got {opset}"
        )
    return opset
