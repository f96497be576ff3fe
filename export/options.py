"""What `export_onnx` accepts and how it refuses, torch-free so the CLI checks options first."""

from __future__ import annotations

from model.errors import one_of

# Weight bits of each mode: none is fp32; int8 and int4 are weight-only (MatMulNBits), the
# embedding sharing the head's quantised matrix; int4-mlp is 4-bit MLP weights, 8-bit the rest.
QUANTIZE_BITS = {"none": 0, "int8": 8, "int4": 4, "int4-mlp": 4}
QUANTIZE_MODES = tuple(QUANTIZE_BITS)


class ExportError(Exception):
    """An export that cannot be done or did not verify; nothing was written."""


def check_quantize(mode: str) -> str:
    """`mode` if it is one of QUANTIZE_MODES, else a one-line ExportError."""
    if mode not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be {one_of(QUANTIZE_MODES)}, got {mode!r}")
    return mode
