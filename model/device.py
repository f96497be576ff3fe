"""Where a job runs: the device, its training precision and peak speed, and the process group
of a torchrun job (DistributedDataParallel). Inference uses `resolve_device` alone."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from model import jobs
from model.backend import available_cpus
from model.config import ConfigError


def resolve_device(name: str) -> str:
    """`auto` picks CUDA, then MPS, then the CPU; a named device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available on this machine")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps requested but MPS is not available on this machine")
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return name


# ---------------------------------------------------------------------------- precision


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively: AMX tiles (Intel Xeon 4th gen and later),
    where bfloat16 autocast trains the cpu preset ~1.4x faster to the same loss, or AVX-512 BF16
    (AMD EPYC Zen 4 and later), where it runs the cpu-10min shape ~1.7x faster
    (benchmarks/RESULTS.md, issues 7 and 23). Elsewhere bfloat16 is emulated, slower."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The training dtype: `auto` is bfloat16 on GPUs that have it (else float16) and on CPUs
    that multiply it natively (AMX or AVX-512 BF16), float32 elsewhere."""
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu" and cpu_has_fast_bfloat16():
            return torch.bfloat16
        return torch.float32
    dtype: torch.dtype = getattr(torch, name)
    if dtype == torch.float16 and device == "cpu":
        raise ConfigError("float16 training is not supported on CPU; use bfloat16 or float32")
    return dtype


def autocast(device: str, dtype: torch.dtype) -> Any:
    """A context that runs the forward pass in `dtype` (nothing to do for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def prepare_for_training(device: str) -> None:
    """TF32 matmuls on CUDA; on the CPU, keep freed memory for the next step."""
    kind = device.split(":")[0]
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if kind == "cpu":
        keep_freed_memory()


def keep_freed_memory() -> None:
    """Keep memory that a CPU training step frees in the heap for the next step.

    Every step frees and reallocates the same activation buffers; by default glibc gives the
    top of the heap back to the OS and maps large blocks afresh, so their pages fault in
    again each step (~2,600 page faults per step of the cpu preset in bfloat16, ~10% of its
    time; benchmarks/RESULTS.md, issue 7). Harmless where glibc's mallopt is missing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest mmap threshold on 64-bit


def cpu_thread_share(device: str) -> jobs.ThreadShare | None:
    """For a CPU training process: its entry in the job registry (model/jobs.py) and its
    threads kept at a fair share of the CPUs (what it would use alone when it is alone).
    None on GPUs, whose threads only feed the device."""
    if device.split(":")[0] != "cpu":
        return None
    share = jobs.ThreadShare(
        jobs.join("train"), torch.get_num_threads(), available_cpus(), torch.set_num_threads
    )
    share.update()
    return share


# Peak dense tensor-core FLOP/s of common GPUs, from the vendors' datasheets (no sparsity):
# (name fragment, bfloat16/float16, float32 as TF32, which training enables on CUDA). Matched
# in order against torch.cuda.get_device_name(), so longer names come before their prefixes.
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989e12, 495e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12, 495e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12),
    ("A10", 125e12, 62.5e12),
    ("RTX 4090", 165e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12),
    ("V100", 125e12, 15.7e12),  # float16 only; no TF32
    ("T4", 65e12, 8.1e12),
)


def peak_flops(device: str, dtype: torch.dtype) -> float | None:
    """The device's peak FLOP/s for `dtype` from PEAK_FLOPS; None when unknown (and on CPU)."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, half, tf32 in PEAK_FLOPS:
        if fragment in name:
            return tf32 if dtype == torch.float32 else half
    return None


# ---------------------------------------------------------------------------- processes


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    patient: Any = None  # a gloo group that waits as long as rank 0's evaluation takes

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, str]:
    """Join the torchrun job this process belongs to, if any; returns its place and device
    (under torchrun on GPUs, `cuda:LOCAL_RANK`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no GPU: only {torch.cuda.device_count()} visible"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=int(os.environ.get("MINIGPT_DIST_TIMEOUT", "600")))
    dist.init_process_group(backend=backend, timeout=timeout)
    # Rank 0 alone evaluates and samples while the others wait; that may take longer than
    # the collective timeout (a large split, a slow sampler), so they wait in a group of
    # their own with a timeout of a day, not in the job's next all-reduce.
    patient = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1))
    return Dist(rank, local, world, patient), device


def close_distributed(dist_info: Dist) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def any_rank(flag: bool, dist_info: Dist, device: str = "cpu") -> bool:
    """Whether any rank's flag is set, on every rank (so that all stop together)."""
    if not dist_info.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wait_for_master(dist_info: Dist) -> None:
    """Every rank waits here until rank 0 has done its own work (evaluation, a sample)."""
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier(group=dist_info.patient)


def sum_ranks(values: list[float], dist_info: Dist) -> list[float]:
    """`values` summed over the ranks, on every rank, waiting as long as the slowest takes."""
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=dist_info.patient)
    return [float(v) for v in t]


def gather(value: Any, dist_info: Dist) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank ([value] when run alone)."""
    if not dist_info.enabled:
        return [value]
    import torch.distributed as dist

    found: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(found, value)
    return found
