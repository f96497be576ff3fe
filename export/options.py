"""What `export_onnx` accepts and how it refuses, torch-free so the CLI checks options first."""

from __future__ import annotations

from model.errors import one_of

QUANTIZE_MODES = ("none", "int8")  # none: fp32; int8: onnxruntime dynamic quantisation


class ExportError(Exception):
    """An export that cannot be done or did not verify; nothing was written."""


def check_quantize(mode: str) -> str:
    """`mode` if it is one of QUANTIZE_MODES, else a one-line ExportError."""
    if mode not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be {one_of(QUANTIZE_MODES)}, got {mode!r}")
    return mode
