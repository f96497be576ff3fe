"""Exports for other runtimes: ONNX (needs torch) and its onnxruntime engine (torch-free),
GGUF for llama.cpp and the Hugging Face layout for transformers (both torch-free)."""
