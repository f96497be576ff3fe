"""The PyTorch backends of the generation engine (see model/backend.py for the protocol).

`TorchBackend` keeps a KV cache: prefill runs the prompt once, then each decode step runs one
token against the cache. On CUDA the cache is static (fixed-size buffers) and a decode step is
replayed as one CUDA graph. `TorchRecomputeBackend` is the slow reference: every step runs the
whole current window through the plain training forward pass, with no cache. Tests check the
two agree, and benchmarks/decode_speed.py measures what the cache buys. Both are plain
`Backend`s, without the optional abilities (one cache each: no forks, no batched streams).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model import checkpoint
from model.backend import Backend, check_threads, default_threads
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

    @torch.inference_mode()
    def logits_all(self, ids: Sequence[int]) -> np.ndarray:
        """Every position's logits (T, V) of `ids` in one pass, without a cache (WindowScorer:
        scoring a text)."""
        self._check_fits(len(ids))
        logits, _ = self.model(self._tensor(ids))  # (1, T, V)
        return logits[0].float().cpu().numpy()


class TorchBackend(_TorchModel, Backend):
    """The KV-cache backend: O(context) work per new token.

    With `static_cache` (the default on CUDA for a model it loads itself) the cache is
    `GPT.static_cache`'s fixed-size buffers, so a decode step has the same shapes at every
    context length; with `cuda_graph` as well (the default there) that step is captured once
    as a CUDA graph and replayed for each token: one launch instead of ~275 kernel launches
    from Python, which bound GPU decoding at batch 1 (benchmarks/RESULTS.md, "GPU").
    """

    def __init__(
        self,
        info: ModelInfo,
        device: str = "cpu",
        threads: int | None = None,
        model: GPT | None = None,
        static_cache: bool | None = None,
        cuda_graph: bool | None = None,
    ) -> None:
        super().__init__(info, device, threads, model)
        own_cuda_model = model is None and self.device.startswith("cuda")
        self.static_cache = own_cuda_model if static_cache is None else static_cache
        self.cuda_graph = self.static_cache and (
            own_cuda_model if cuda_graph is None else cuda_graph
        )
        self._cache: list[LayerCache] | None = None  # per layer (k, v); set by prefill
        self._cache_len = 0
        self._step: _DecodeStep | None = None

    @torch.inference_mode()
    def _run(self, ids: Sequence[int]) -> np.ndarray:
        self._check_fits(self._cache_len + len(ids))
        logits, self._cache = self.model.forward_cached(self._tensor(ids), self._cache)
        self._cache_len += len(ids)
        return logits[0, -1].float().cpu().numpy()  # (V,)

    @torch.inference_mode()
    def _prefill_static(self, ids: Sequence[int]) -> np.ndarray:
        self._check_fits(len(ids))
        if self._cache is None:
            self._cache = self.model.static_cache()
        start = torch.zeros(1, dtype=torch.long, device=self.device)
        logits, _ = self.model.forward_cached(
            self._tensor(ids), self._cache, last_only=True, cache_pos=start
        )
        self._cache_len = len(ids)
        return logits[0, -1].float().cpu().numpy()

    @torch.inference_mode()
    def _decode_static(self, token: int) -> np.ndarray:
        self._check_fits(self._cache_len + 1)
        if self._step is None:
            assert self._cache is not None
            self._step = _DecodeStep(self.model, self._cache, self.cuda_graph)
        logits = self._step(token, self._cache_len)
        self._cache_len += 1
        return logits.float().cpu().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if self.static_cache:
            return self._prefill_static(ids)  # reuses the buffers: stale positions are masked
        self._cache, self._cache_len = None, 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("decode() before prefill()")
        if self.static_cache:
            return self._decode_static(token)
        return self._run([token])


class _DecodeStep:
    """One decode step over a static cache at fixed shapes: the token (1, 1) and its position
    (1,) go in through tensors that never move, so the step can be captured as a CUDA graph at
    its first call and replayed after (`graph=False`: run eagerly, as on the CPU)."""

    def __init__(self, model: GPT, cache: list[LayerCache], graph: bool) -> None:
        device = cache[0][0].device
        self.model, self.cache = model, cache
        self.idx = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.use_graph = graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def _forward(self) -> torch.Tensor:
        logits, _ = self.model.forward_cached(self.idx, self.cache, cache_pos=self.pos)
        return logits[0, -1]  # (V,)

    def _capture(self) -> None:
        # One eager run on a side stream first (cuBLAS handles and workspaces are made outside
        # the graph); it writes this step's keys and values, which the replay writes again.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = self._forward()

    def __call__(self, token: int, position: int) -> torch.Tensor:
        self.idx.fill_(token)
        self.pos.fill_(position)
        if not self.use_graph:
            return self._forward()
        if self.graph is None:
            self._capture()
        assert self.graph is not None and self.out is not None
        self.graph.replay()
        return self.out


class TorchRecomputeBackend(_TorchModel, Backend):
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
