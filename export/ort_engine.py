"""The onnxruntime backend of the generation engine (see model/backend.py for the protocol).

Torch-free and onnx-free: numpy and onnxruntime only, so the base install can run it.

The graph export/onnx_export.py writes (one graph for prefill and decode):

    inputs   input_ids                      (B, T) int64, the new tokens
             past_key_{i}, past_value_{i}   (B, n_head, P, head_size) float32 per layer i
    outputs  logits                         (B, vocab) float32, the LAST position only
             present_key_{i}, present_value_{i}  (B, n_head, P+T, head_size), the grown cache

Prefill feeds an empty cache (P = 0); each decode step feeds back the cache the previous step
returned (numpy arrays onnxruntime allocated: no copies on our side), with T = 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.backend import EngineError, check_threads, default_threads
from model.config import GPTConfig
from model.errors import first_line
from model.modeldir import ModelInfo

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_IDS = "input_ids"
LOGITS = "logits"


def cache_names(n_layer: int, prefix: str) -> list[str]:
    """past_key_0, past_value_0, past_key_1, ... (prefix "past" or "present")."""
    return [f"{prefix}_{kind}_{i}" for i in range(n_layer) for kind in ("key", "value")]


def input_names(config: GPTConfig) -> list[str]:
    return [INPUT_IDS, *cache_names(config.n_layer, "past")]


def output_names(config: GPTConfig) -> list[str]:
    return [LOGITS, *cache_names(config.n_layer, "present")]


def make_session(model: str | os.PathLike[str] | bytes, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session with the options we measured to be fastest for decoding."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: warnings are noise here, and every error is raised and reported by us in
    # one line (at level 3 onnxruntime also printed its own C++ log line to the terminal).
    so.log_severity_level = 4
    if threads != 1:  # spinning workers starve everything else on a busy CPU (measured 2x)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def check_signature(session: ort.InferenceSession, config: GPTConfig, where: str) -> None:
    """Refuse, in one line, a graph whose inputs and outputs are not the ones we export."""
    hs = config.n_embd // config.n_head

    def describe(args: Sequence[Any]) -> str:
        return ", ".join(f"{a.name}{list(a.shape)}" for a in args[:4]) + (
            ", ..." if len(args) > 4 else ""
        )

    ins, outs = session.get_inputs(), session.get_outputs()
    if [a.name for a in ins] != input_names(config) or [a.name for a in outs] != output_names(
        config
    ):
        raise EngineError(
            f"{where} is not a minigpt-tui ONNX export for this model's config "
            f"({config.n_layer} layers): it has inputs {describe(ins)} and outputs "
            f"{describe(outs)}; re-export it with 'minigpt-tui export onnx --force'"
        )
    expected: dict[str, tuple[str, list[int | None]]] = {
        INPUT_IDS: ("tensor(int64)", [None, None]),
        LOGITS: ("tensor(float)", [None, config.vocab_size]),
    }
    for name in [*cache_names(config.n_layer, "past"), *cache_names(config.n_layer, "present")]:
        expected[name] = ("tensor(float)", [None, config.n_head, None, hs])
    for arg in [*ins, *outs]:
        dtype, dims = expected[arg.name]
        shape = list(arg.shape)
        fits = (
            arg.type == dtype
            and len(shape) == len(dims)
            and all(
                want is None or not isinstance(got, int) or got == want
                for got, want in zip(shape, dims, strict=True)
            )
        )
        if not fits:
            raise EngineError(
                f"{where}: {arg.name} is {arg.type}{shape} but this model's config needs "
                f"{dtype}{['?' if d is None else d for d in dims]}; re-export it with "
                "'minigpt-tui export onnx --force'"
            )


class OrtBackend:
    """Runs model.onnx with onnxruntime on the CPU, keeping the KV cache between steps."""

    name = "onnx"

    def __init__(self, info: ModelInfo, threads: int | None = None) -> None:
        self.info = info
        self.config = info.config
        path = info.onnx_path
        threads = check_threads(threads)[0]
        try:
            threads = default_threads(self.config.num_params()) if threads is None else threads
            self.session = make_session(path, threads)
        except Exception as e:  # onnxruntime's own error types: corrupt or unreadable file
            raise EngineError(f"cannot load {path}: {first_line(e)}") from None
        check_signature(self.session, self.config, str(path))
        self._past = cache_names(self.config.n_layer, "past")
        self._outputs = output_names(self.config)
        hs = self.config.n_embd // self.config.n_head
        empty = np.zeros((1, self.config.n_head, 0, hs), dtype=np.float32)
        self._empty_cache = [empty] * len(self._past)
        self._cache: list[np.ndarray] | None = None
        self._cache_len = 0
        self._token = np.zeros((1, 1), dtype=np.int64)  # reused input for decode steps
        self._check_block_size(str(path))

    def _check_block_size(self, where: str) -> None:
        """Run the context's last position once, so that a model.onnx exported for a shorter
        context than config.json's block_size is refused now, in one line, not mid-reply."""
        bs, hs = self.block_size, self.config.n_embd // self.config.n_head
        past = [np.zeros((1, self.config.n_head, bs - 1, hs), dtype=np.float32)] * len(self._past)
        try:
            logits, _ = self.run(self._token, past)
        except EngineError:
            logits = None
        if logits is None or logits.shape != (1, self.config.vocab_size):
            raise EngineError(
                f"{where} does not fit its config.json (block_size {bs}, vocab "
                f"{self.config.vocab_size}): it was exported for another shape; re-export it "
                "with 'minigpt-tui export onnx --force'"
            )

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def run(self, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass: ids (B, T) int64 after a cache of P positions -> logits (B, V), new cache."""
        feed = dict(zip(self._past, past, strict=True))
        feed[INPUT_IDS] = ids
        try:
            logits, *present = self.session.run(self._outputs, feed)
        except Exception as e:  # e.g. a token id outside the vocabulary
            raise EngineError(f"onnxruntime failed: {first_line(e)}") from None
        return logits, present

    def empty_cache(self, batch: int = 1) -> list[np.ndarray]:
        if batch == 1:
            return self._empty_cache
        return [np.repeat(c, batch, axis=0) for c in self._empty_cache]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not 0 < len(ids) <= self.block_size:
            raise EngineError(
                f"cannot prefill {len(ids)} tokens: the context holds 1 to {self.block_size}"
            )
        x = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        logits, self._cache = self.run(x, self._empty_cache)
        self._cache_len = len(ids)
        return logits[0]

    def decode(self, token: int) -> np.ndarray:
        if self._cache is None:
            raise EngineError("decode() before prefill()")
        if self._cache_len >= self.block_size:
            raise EngineError(f"the KV cache is full ({self.block_size} tokens); prefill again")
        self._token[0, 0] = token
        logits, self._cache = self.run(self._token, self._cache)
        self._cache_len += 1
        return logits[0]
