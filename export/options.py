"""What `export_onnx` accepts and how it refuses, torch-free so the CLI checks options first."""

from __future__ import annotations

import functools

from model.errors import one_of

# Weight bits of each mode: none is fp32; int8 and int4 are weight-only (MatMulNBits), the
# embedding sharing the head's quantised matrix; int4-mlp is 4-bit MLP weights, 8-bit the rest.
QUANTIZE_BITS = {"none": 0, "int8": 8, "int4": 4, "int4-mlp": 4}
QUANTIZE_MODES = tuple(QUANTIZE_BITS)


# The KV cache's element type: float32, or int8 with per-channel scales measured at export
# (export/kv_scales.py). auto: int8 with quantised weights, float32 with float32 weights.
KV_CACHE_MODES = ("auto", "float32", "int8")


class ExportError(Exception):
    """An export that cannot be done or did not verify; nothing was written."""


def check_quantize(mode: str) -> str:
    """`mode` if it is one of QUANTIZE_MODES, else a one-line ExportError."""
    if mode not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be {one_of(QUANTIZE_MODES)}, got {mode!r}")
    return mode


def check_kv_cache(mode: str, quantize: str) -> str:
    """float32 or int8 for `mode` (auto resolved by `quantize`), else a one-line ExportError."""
    if mode not in KV_CACHE_MODES:
        raise ExportError(f"--kv-cache must be {one_of(KV_CACHE_MODES)}, got {mode!r}")
    if mode == "auto":
        return "float32" if quantize == "none" else "int8"
    return mode


MIN_OPSET = 18  # the oldest opset the graph builder writes (export/onnx_graph.py)


@functools.cache
def newest_opset() -> int:
    """The newest opset that both installed tools handle: onnx defines it, and onnxruntime
    loads a graph of the standard operators the export uses at it (a few milliseconds)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    while newest > MIN_OPSET and not _onnxruntime_loads(newest):
        newest -= 1
    return newest


def _onnxruntime_loads(opset: int) -> bool:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 2])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    table = numpy_helper.from_array(np.zeros((3, 4), np.float32), "table")
    shape = numpy_helper.from_array(np.array([2, 4], np.int64), "shape")
    nodes = [  # the standard operators of export/onnx_graph.py
        helper.make_node("Gather", ["table", "ids"], ["rows"]),
        helper.make_node("Reshape", ["rows", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "mm"], ["sum"]),
        helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
    ]
    w = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    graph = helper.make_graph(nodes, "probe", [x, ids], [out], [table, shape, w])
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
            f"onnx and onnxruntime both handle), got {opset}"
        )
    return opset
