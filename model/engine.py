"""The PyTorch backends of the generation engine (see model/backend.py for the protocol).

`TorchBackend` keeps a KV cache: prefill runs the prompt once, then each decode step runs one
token against the cache. `TorchRecomputeBackend` is the slow reference: every step runs the
whole current window through the plain training forward pass, with no cache. Tests check the
two agree, and benchmarks/decode_speed.py measures what the cache buys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model import checkpoint
from model.backend import check_threads, default_threads
from model.gpt import GPT, LayerCache
from model.modeldir import ModelInfo


class _TorchModel:
    """Loads a model directory onto a device for inference, or wraps a model already in memory
    (`model=`, e.g. the one being trained; it is used on its own device and threads)."""

    name = "torch"

    def __init__(
        self,
        info: ModelInfo,
        device: str = "cpu",
        threads: int | None = None,
        model: GPT | None = None,
    ) -> None:
        if model is not None:
            self.model, self.info = model, info
            self.device = str(next(model.parameters()).device)
            return
        from model.device import resolve_device

        device = resolve_device(device)  # an unknown or missing device is a one-line error
        threads = check_threads(threads)[0]
        if device == "cpu" or threads:
            torch.set_num_threads(threads or default_threads(info.config.num_params()))
        self.device = device
        self.model, self.info = checkpoint.load(info.path, device=device)
        self.model.eval()

    @property
    def block_size(self) -> int:
        return int(self.model.config.block_size)

    def _check_fits(self, n: int) -> None:
        if n > self.block_size:
            raise ValueError(f"{n} tokens do not fit the context of {self.block_size}")

    def _tensor(self, ids: Sequence[int]) -> torch.Tensor:
        if len(ids) == 0:
            raise ValueError("cannot run the model on an empty context")
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # (1, T)


class TorchBackend(_TorchModel):
    """The KV-cache backend: O(context) work per new token."""

    _cache: list[LayerCache] | None = None  # per layer (k, v); set by prefill
    _cache_len = 0

    @torch.inference_mode()
    def _run(self, ids: Sequence[int]) -> np.ndarray:
        self._check_fits(self._cache_len + len(ids))
        logits, self._cache = self.model.forward_cached(self._tensor(ids), self._cache)
        self._cache_len += len(ids)
        return logits[0, -1].float().cpu().numpy()  # (V,)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._cache, self._cache_len = None, 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("decode() before prefill()")
        return self._run([token])


class TorchRecomputeBackend(_TorchModel):
    """The no-cache reference: every step recomputes the whole current window."""

    name = "recompute"

    def __init__(self, info: ModelInfo, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(info, device, threads)
        self._ids: list[int] = []

    @torch.inference_mode()
    def _run(self) -> np.ndarray:
        self._check_fits(len(self._ids))
        logits, _ = self.model(self._tensor(self._ids))  # (1, T, V)
        return logits[0, -1].float().cpu().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._ids = list(ids)
        return self._run()

    def decode(self, token: int) -> np.ndarray:
        self._ids.append(token)
        return self._run()
