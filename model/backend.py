"""What every generation backend shares: the protocol, its error, its names and its threads.

A backend only runs the network: `prefill` a context into a fresh KV cache, then `decode` one
token at a time. The backends (model/torch_backend.py: PyTorch; export/ort_backend.py: onnxruntime)
import from here; the generation loop that drives them and `load_backend`, which picks one,
are in minigpt_tui/generation.py.

A backend may also have optional abilities, each a protocol of its own that callers test with
isinstance (minigpt_tui/streams.py): `Forkable` (views with their own cache over the same
weights) and `MultiStream` (several streams decoded together, as `Streams`). The ONNX backend
has both; the PyTorch backends neither.

Torch-free and light: the CLI imports it to check --backend before loading anything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from model import jobs
from model.errors import one_of

if TYPE_CHECKING:
    import numpy as np

    from model.modeldir import ModelInfo

BACKENDS = ("auto", "torch", "onnx")  # what --backend accepts; auto prefers ONNX when exported


class EngineError(RuntimeError):
    """A model that cannot be loaded or run by the requested backend."""


class Backend(Protocol):
    name: str  # "torch" or "onnx"
    info: ModelInfo

    @property
    def block_size(self) -> int: ...

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Start a fresh cache holding `ids`; return the last position's logits (vocab,)."""
        ...

    def decode(self, token: int) -> np.ndarray:
        """Append one token to the cache; return its logits (vocab,)."""
        ...


@runtime_checkable
class Forkable(Protocol):
    """A backend that gives views of itself, each with its own KV cache over the same weights
    (one copy of them), so that several generations run side by side, one per thread."""

    def fork(self) -> Backend: ...


class Streams(Protocol):
    """n streams of one model decoded together: one call per step for all of them, so the
    weights are read once per step, not once per stream (export/ort_backend.py's OrtStreams)."""

    def prefill(self, stream: int, ids: Sequence[int]) -> np.ndarray:
        """Start stream `stream` afresh on `ids`; return its last position's logits (vocab,)."""
        ...

    def decode_batch(self, tokens: Sequence[int | None]) -> np.ndarray:
        """Append tokens[i] to stream i (None: leave it be); return the logits (n, vocab)."""
        ...


@runtime_checkable
class WindowScorer(Protocol):
    """A backend that runs a context once and returns every position's logits, so that
    scoring a text costs one pass per window, not one per token (minigpt_tui/scoring.py)."""

    def logits_all(self, ids: Sequence[int]) -> np.ndarray:
        """The logits (len(ids), vocab) of every position of `ids`, without a cache."""
        ...


@runtime_checkable
class MultiStream(Protocol):
    """A backend that decodes several streams of its model together."""

    def streams(self, n: int) -> Streams: ...


def check_backend(name: str) -> str:
    """`name` if it is one of BACKENDS, else a one-line EngineError."""
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}: --backend must be {one_of(BACKENDS)}")
    return name


# Below this many parameters one thread decodes fastest: the per-token work is too small to
# split, and on a busy machine waiting for a second thread costs far more than it saves
# (benchmarks/RESULTS.md, "Decode speed": 2,600 vs 50 tokens/s for a tiny model on 2 busy cores).
SINGLE_THREAD_PARAMS = 20_000_000


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not every platform has affinity masks
        return max(1, os.cpu_count() or 1)


def default_threads(num_params: int) -> int:
    """CPU threads a backend uses when the user does not say: 1 for small models, where a
    token costs less than waking a second thread; else one per CPU, at most 4, since decoding
    one token is memory-bound (GPT-2 124M int8 on 2 idle cores: 151 tokens/s on 2 threads,
    84 on 1). While one of this user's trainings runs, 1: the training needs the CPUs, and a
    second thread would only wait on a core it holds (model/jobs.py)."""
    if num_params < SINGLE_THREAD_PARAMS or jobs.training_running():
        return 1
    return min(available_cpus(), 4)


# glibc's malloc serves a block over 128 KB with fresh pages from the kernel (mmap) and hands
# them back on free, so each of a decode step's large numpy arrays (logits and the sampler's
# temporaries: 200-400 KB at a 50k vocabulary) page-faults anew: the sampler measured 4x slower
# (temperature 0.8: 611 against 148 us a token, benchmarks/sampler_speed.py). Blocks up to
# MMAP_THRESHOLD are kept in the heap instead, and up to TRIM_THRESHOLD of free heap is kept.
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 32 << 20
_allocator_tuned = False


def is_glibc() -> bool:
    """Whether this process's C library is glibc (whose mallopt tune_allocator calls)."""
    try:
        return sys.platform == "linux" and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (ValueError, OSError):  # a C library that does not name itself
        return False


def tune_allocator() -> None:
    """Keep large freed blocks for reuse (see MMAP_THRESHOLD); once a process, and only where
    the C library is glibc (mallopt's M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3)."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    if not is_glibc():
        return
    import ctypes  # already loaded by numpy and onnxruntime

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, MMAP_THRESHOLD)
        mallopt(-1, TRIM_THRESHOLD)


def spinning_pays(threads: int) -> bool:
    """Whether a pool of `threads` may spin between operators instead of sleeping: only when
    the CPUs are otherwise idle (no training of this user's, 1-minute load average below the
    CPUs minus a half). Waking a sleeping worker costs every operator of a step its latency:
    GPT-2 124M int8 on 2 quiet cores decoded at 152-194 tokens/s spinning against 145-163
    sleeping; on a machine at load 7-28 spinning workers halved it (35 against 62), since they
    hold a core that another process's thread needs (benchmarks/RESULTS.md)."""
    if threads == 1 or jobs.training_running():
        return False
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average here: assume the worst
        return False
    return load < available_cpus() - 0.5


def check_threads(threads: int | None) -> tuple[int | None, str]:
    """The one rule for a requested thread count (None: the backend's default): at least 1,
    at most the CPUs available, since more only fight over them (--threads 100000 once made
    32,000 threads and 16 GB). Returns (threads to use, a note saying it was capped, or "")."""
    if threads is None:
        return None, ""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EngineError(f"--threads must be a positive integer, got {threads!r}")
    cpus = available_cpus()
    if threads > cpus:
        return cpus, f"--threads {threads} is more than the {cpus} CPUs available; using {cpus}"
    return threads, ""
