"""The PyTorch core: model, data and training.

Importing this package does not import torch; `model.config`, `model.tokenizer` and
`model.modeldir` are torch-free and used by the inference path.
"""
