"""ONNX export (needs torch) and the onnxruntime engine (torch-free)."""
