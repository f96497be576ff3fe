"""The onnxruntime backend of the generation engine (see model/backend.py for the protocol).

Torch-free and onnx-free: numpy and onnxruntime only, so the base install can run it.

The graph export/onnx_export.py writes (export/onnx_graph.py builds it; one graph for prefill
and decode, batch B of independent streams, T new tokens each):

    inputs   input_ids              (B, T) int64, the new tokens
             position_ids           (B, T) int64, their positions
             seqlens_k              (B,) int32, each stream's length after this call, minus 1
             total_sequence_length  () int32, the longest of those lengths
             past_key_{i}, past_value_{i}   (B, n_head, block_size, head_size) float32, or
                                    int8 when exported with an int8 KV cache (the scales
                                    are constants of the graph)
    outputs  logits                 (B, vocab) float32, each stream's LAST position only
             present_key_{i}, present_value_{i}   the same buffers as past_*

Each layer's cache is one buffer allocated here once, bound (IO binding, OrtValues made once)
as both `past_*` and `present_*`: onnxruntime's GroupQueryAttention writes only the new
positions into it, so a decode step copies no cache and costs the same at position 1000 as at
position 10 apart from the attention itself. The logits are written into a preallocated array.

Two ways in:

    backend = OrtBackend(info)              # the engine's Backend: one stream
    logits = backend.prefill(ids); logits = backend.decode(token)

    streams = OrtModel.load(info).streams(4)     # several independent streams, one call per step
    streams.prefill(0, prompt_a)            # (V,) logits; each stream its own prompt,
    streams.prefill(1, prompt_b)            #   position and (the caller's) sampler
    logits = streams.decode_batch([tok_a, tok_b, tok_c, tok_d])   # (4, V)
    logits = streams.decode_batch([tok_a, None, tok_c, tok_d])     # stream 1 sits this one out

A batched step reads the weights once for all streams (decoding is bound by reading them), so
B streams cost far less than B single steps; the side-by-side compare view uses this.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.backend import (
    Backend,
    EngineError,
    Forkable,
    MultiStream,
    check_threads,
    default_threads,
    spinning_pays,
)
from model.config import GPTConfig
from model.errors import first_line
from model.modeldir import ModelInfo

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
SEQLENS = "seqlens_k"
TOTAL = "total_sequence_length"
LOGITS = "logits"
MAX_STREAMS = 64  # a batch beyond this is refused: each stream holds a whole-block cache
CACHE_TYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8}  # the KV caches we export


def cache_names(n_layer: int, prefix: str) -> list[str]:
    """past_key_0, past_value_0, past_key_1, ... (prefix "past" or "present")."""
    return [f"{prefix}_{kind}_{i}" for i in range(n_layer) for kind in ("key", "value")]


def input_names(config: GPTConfig) -> list[str]:
    return [INPUT_IDS, POSITION_IDS, SEQLENS, TOTAL, *cache_names(config.n_layer, "past")]


def output_names(config: GPTConfig) -> list[str]:
    return [LOGITS, *cache_names(config.n_layer, "present")]


def make_session(
    model: str | os.PathLike[str] | bytes, threads: int, spin: bool = False
) -> ort.InferenceSession:
    """An onnxruntime CPU session with the options we measured to be fastest for decoding.
    With `spin` a pool of several threads spins between operators when the machine is quiet
    (model/backend.spinning_pays): for a lone generation (`generate`), never beside a screen
    to draw or other decoding threads of the process."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Fatal only: warnings are noise here, and every error is raised and reported by us in
    # one line (at level 3 onnxruntime also printed its own C++ log line to the terminal).
    so.log_severity_level = 4
    spin = spin and spinning_pays(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def check_signature(session: ort.InferenceSession, config: GPTConfig, where: str) -> type:
    """Refuse, in one line, a graph whose inputs and outputs are not the ones we export;
    return its KV cache's numpy type (float32, or int8)."""
    hs = config.n_embd // config.n_head
    reexport = "re-export it with 'minigpt-tui export onnx --force'"

    def describe(args: Sequence[Any]) -> str:
        return ", ".join(f"{a.name}{list(a.shape)}" for a in args[:4]) + (
            ", ..." if len(args) > 4 else ""
        )

    ins, outs = session.get_inputs(), session.get_outputs()
    in_names, out_names = [a.name for a in ins], [a.name for a in outs]
    if in_names != input_names(config) or out_names != output_names(config):
        if in_names[:1] == [INPUT_IDS] and in_names[1:2] == ["past_key_0"]:
            raise EngineError(
                f"{where} was exported by an older minigpt-tui (a cache that grows each "
                f"step); {reexport}"
            )
        raise EngineError(
            f"{where} is not a minigpt-tui ONNX export for this model's config "
            f"({config.n_layer} layers): it has inputs {describe(ins)} and outputs "
            f"{describe(outs)}; {reexport}"
        )
    cache_type = next(a.type for a in ins if a.name == "past_key_0")
    if cache_type not in CACHE_TYPES:
        cache_type = "tensor(float)"  # and the loop below says what is wrong
    cache = (cache_type, [None, config.n_head, config.block_size, hs])
    expected: dict[str, tuple[str, list[int | None]]] = {
        INPUT_IDS: ("tensor(int64)", [None, None]),
        POSITION_IDS: ("tensor(int64)", [None, None]),
        SEQLENS: ("tensor(int32)", [None]),
        TOTAL: ("tensor(int32)", []),
        LOGITS: ("tensor(float)", [None, config.vocab_size]),
    }
    for name in [*cache_names(config.n_layer, "past"), *cache_names(config.n_layer, "present")]:
        expected[name] = cache
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
                f"{dtype}{['?' if d is None else d for d in dims]}; {reexport}"
            )
    return CACHE_TYPES[cache_type]


class OrtModel:
    """One onnxruntime session over our graph, which any number of stream sets share."""

    def __init__(
        self, session: ort.InferenceSession, config: GPTConfig, cache_type: type = np.float32
    ) -> None:
        self.session, self.config, self.cache_type = session, config, cache_type

    @classmethod
    def load(cls, info: ModelInfo, threads: int | None = None, spin: bool = False) -> OrtModel:
        """Load a model directory's model.onnx; one-line EngineErrors for what cannot run.
        `spin`: see make_session."""
        path = info.onnx_path
        threads = check_threads(threads)[0]  # at most the CPUs available
        try:
            threads = default_threads(info.config.num_params()) if threads is None else threads
            session = make_session(path, threads, spin)
        except Exception as e:  # onnxruntime's own error types: corrupt or unreadable file
            raise EngineError(f"cannot load {path}: {first_line(e)}") from None
        cache_type = check_signature(session, info.config, str(path))
        return cls(session, info.config, cache_type)

    def streams(self, n: int) -> OrtStreams:
        return OrtStreams(self, n)


class OrtStreams:
    """`n` independent streams over one model, each with its own cache row and position.

    `prefill(i, ids)` starts stream i afresh on a prompt; `decode_batch(tokens)` appends one
    token to every stream in one onnxruntime call and returns each stream's next-token logits
    (n, vocab). A stream not yet prefilled starts at position 0 (its token is its first).
    """

    def __init__(self, model: OrtModel, n: int) -> None:
        import onnxruntime as ort

        if not 1 <= n <= MAX_STREAMS:
            raise EngineError(f"streams must be 1 to {MAX_STREAMS}, got {n}")
        cfg = model.config
        self.model, self.n, self.block_size = model, n, cfg.block_size
        self._lengths = np.zeros(n, np.int32)  # tokens in each stream's cache
        hs = cfg.n_embd // cfg.n_head
        shape = (n, cfg.n_head, cfg.block_size, hs)
        try:
            self._caches: list[np.ndarray] = [
                np.zeros(shape, model.cache_type) for _ in range(2 * cfg.n_layer)
            ]
        except MemoryError:
            raise EngineError(f"not enough memory for {n} streams' caches") from None
        self._past = cache_names(cfg.n_layer, "past")
        self._present = cache_names(cfg.n_layer, "present")
        # The decode step's inputs: numpy arrays wrapped once; a step writes into them.
        self._ids = np.zeros((n, 1), np.int64)
        self._pos = np.zeros((n, 1), np.int64)
        self._seqlens = np.zeros(n, np.int32)
        self._total = np.zeros((), np.int32)
        self._logits = np.zeros((n, cfg.vocab_size), np.float32)
        self._io = self._binding(list(range(n)), self._logits)
        for name, arr in [
            (INPUT_IDS, self._ids),
            (POSITION_IDS, self._pos),
            (SEQLENS, self._seqlens),
            (TOTAL, self._total),
        ]:
            self._io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
        # Prefill runs one stream (B = 1) on its own rows of the same buffers.
        self._row_logits = np.zeros((1, cfg.vocab_size), np.float32)
        self._row_io: dict[int, Any] = {}

    def _binding(self, rows: list[int], logits: np.ndarray) -> Any:
        """An IO binding of these rows of every cache (as past and present) and the logits."""
        import onnxruntime as ort

        io = self.model.session.io_binding()
        lo, hi = rows[0], rows[-1] + 1
        for past, present, buf in zip(self._past, self._present, self._caches, strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(buf[lo:hi])  # a view: no copy
            io.bind_ortvalue_input(past, value)
            io.bind_ortvalue_output(present, value)
        io.bind_output(LOGITS, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        return io

    def _run(self, io: Any) -> None:
        try:
            self.model.session.run_with_iobinding(io)
        except Exception as e:  # e.g. a token id outside the vocabulary
            raise EngineError(f"onnxruntime failed: {first_line(e)}") from None

    def prefill(self, stream: int, ids: Sequence[int]) -> np.ndarray:
        """Start `stream` afresh holding `ids`; return the last position's logits (vocab,)."""
        if not 0 <= stream < self.n:
            raise EngineError(f"no stream {stream}: there are {self.n}")
        t = len(ids)
        if not 0 < t <= self.block_size:
            raise EngineError(
                f"cannot prefill {t} tokens: the context holds 1 to {self.block_size}"
            )
        io = self._row_io.get(stream)
        if io is None:
            io = self._row_io[stream] = self._binding([stream], self._row_logits)
        io.bind_cpu_input(INPUT_IDS, np.asarray(ids, dtype=np.int64).reshape(1, t))
        io.bind_cpu_input(POSITION_IDS, np.arange(t, dtype=np.int64).reshape(1, t))
        io.bind_cpu_input(SEQLENS, np.array([t - 1], np.int32))
        io.bind_cpu_input(TOTAL, np.array(t, np.int32))
        self._lengths[stream] = 0  # a failed run leaves the stream empty, not half-written
        self._run(io)
        self._lengths[stream] = t
        return self._row_logits[0].copy()

    @property
    def lengths(self) -> list[int]:
        """Tokens in each stream's cache."""
        return [int(n) for n in self._lengths]

    def decode_batch(self, tokens: Sequence[int | None]) -> np.ndarray:
        """Append tokens[i] to stream i, for every stream; return the logits (n, vocab).

        A None sits that stream out: its cache and length stay as they are and its row of the
        logits means nothing (the batch has a fixed shape, so its row is still computed, at the
        position after its end, where its next token will overwrite what it wrote; a full
        stream's last position is saved and put back). A finished stream or one that was just
        prefilled again sits out this way while the others go on.
        """
        if len(tokens) != self.n:
            raise EngineError(
                f"decode_batch needs one token per stream ({self.n}), got {len(tokens)}"
            )
        lengths, last = self._lengths, self.block_size - 1
        going = np.array([t is not None for t in tokens])
        if (lengths[going] > last).any():
            full = int(np.flatnonzero(going & (lengths > last))[0])
            raise EngineError(
                f"the KV cache of stream {full} is full ({self.block_size} tokens); "
                "prefill it again"
            )
        full_out = np.flatnonzero(~going & (lengths > last))  # sitting out with a full cache
        saved = [buf[full_out, :, last].copy() for buf in self._caches] if full_out.size else []
        self._ids[:, 0] = [0 if t is None else t for t in tokens]
        self._pos[:, 0] = np.minimum(lengths, last)
        self._seqlens[:] = self._pos[:, 0]  # the new length minus one
        self._total[...] = int(self._pos.max()) + 1
        try:
            self._run(self._io)
        finally:
            for buf, kept in zip(self._caches[: len(saved)], saved, strict=True):
                buf[full_out, :, last] = kept
        lengths += going
        return self._logits.copy()

    def decode_one(self, token: int) -> np.ndarray:
        """decode_batch for a single stream, with less per-call work: (vocab,) logits."""
        n = int(self._lengths[0])
        if self.n != 1 or n >= self.block_size:
            return self.decode_batch((token,))[0]  # its one-line errors
        self._ids[0, 0] = token
        self._pos[0, 0] = n
        self._seqlens[0] = n
        self._total[...] = n + 1
        self._run(self._io)
        self._lengths[0] = n + 1
        return self._logits[0].copy()


class OrtBackend(Backend, Forkable, MultiStream):
    """The engine's Backend over model.onnx: one stream, its KV cache kept between steps. It
    forks (views with their own cache over the same session) and decodes several streams
    together (OrtStreams)."""

    name = "onnx"

    def __init__(self, info: ModelInfo, threads: int | None = None, spin: bool = False) -> None:
        self.info = info
        self.config = info.config
        self.model = OrtModel.load(info, threads, spin)
        self._stream = self.model.streams(1)
        self._started = False

    def fork(self) -> OrtBackend:
        """Another backend over the same session (one copy of the weights), with its own cache:
        several generations can then run side by side, one per thread."""
        view = copy.copy(self)
        view._stream, view._started = self.model.streams(1), False
        return view

    def streams(self, n: int) -> OrtStreams:
        """n more streams over the same session, decoded together (OrtStreams)."""
        return self.model.streams(n)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def cache_len(self) -> int:
        return int(self._stream._lengths[0])

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._started = False
        logits = self._stream.prefill(0, ids)
        self._started = True
        return logits

    def decode(self, token: int) -> np.ndarray:
        if not self._started:
            raise EngineError("decode() before prefill()")
        if self.cache_len >= self.block_size:
            raise EngineError(f"the KV cache is full ({self.block_size} tokens); prefill again")
        return self._stream.decode_one(token)
