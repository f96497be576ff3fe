"""The PyTorch backend of the generation engine (see minigpt_tui/engine.py for the protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model import checkpoint
from model.gpt import LayerCache
from model.modeldir import ModelInfo


class TorchBackend:
    name = "torch"

    def __init__(self, info: ModelInfo, device: str = "cpu", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.model, self.info = checkpoint.load(info.path, device=device)
        self.model.eval()
        self._cache: list[LayerCache] | None = None

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    @torch.inference_mode()
    def _run(self, ids: Sequence[int]) -> np.ndarray:
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        logits, self._cache = self.model.forward_cached(x, self._cache)
        return logits[0, -1].float().cpu().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._cache = None
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._run([token])
