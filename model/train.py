"""The training loop: single process, or several through torchrun (DistributedDataParallel).

`train(...)` runs a whole job: it prepares the run directory, builds or restores the model and
optimizer, runs AdamW with warm-up and cosine decay (over iterations, or over a wall-clock budget),
gradient accumulation, clipping and mixed precision, evaluates periodically, writes
metrics.jsonl, and saves atomic checkpoints that `--resume` continues bit-exactly on CPU.
Events go to metrics.jsonl and to an optional callback, which the CLI renders with rich.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import checkpoint, modeldir, schedule
from model.config import ConfigError, GPTConfig, TrainConfig
from model.data import load_dataset
from model.evaluate import split_loss
from model.gpt import GPT, zero_init_projections
from model.muon import Muon, muon_groups

METRICS_FILE = "metrics.jsonl"
STEP_DIR = re.compile(r"^step-(\d{6,})$")

Event = dict[str, Any]


class TrainingError(RuntimeError):
    """A run that cannot start or continue (shown to the user as one line)."""


@dataclass
class RunOptions:
    data: Path
    out: Path
    device: str = "auto"
    resume: bool = False
    force: bool = False
    init_from: str | None = None
    preset: str | None = None
    bpe_dir: str | None = None
    final_eval: bool = True
    command: str = ""  # the command line, recorded in config.json
    on_event: Callable[[Event], None] | None = None
    sample: Callable[[GPT, Any, int], str] | None = None  # (model, tokenizer, iter) -> text
    extra_meta: dict[str, Any] = field(default_factory=dict)
    peak_flops: float | None = None  # the device's peak FLOP/s for MFU (default: PEAK_FLOPS)


# ---------------------------------------------------------------------------- devices


def resolve_device(name: str) -> str:
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


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon 4th gen and later), where bfloat16 matmuls
    run ~6x faster than float32 and bfloat16 autocast trains the cpu preset ~1.4x faster
    to the same loss (benchmarks/RESULTS.md, issue 7). Elsewhere bfloat16 is emulated, slower."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check and check())
    except RuntimeError:
        return False


def resolve_dtype(name: str, device: str) -> torch.dtype:
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


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import datetime

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
    return Dist(rank, local, world), device


# ---------------------------------------------------------------------------- batches


class Batches:
    """Random (x, y) windows from a memmapped split, reproducible from one torch.Generator.

    Every process draws the offsets of the whole global step (all processes' micro-batches)
    from the same seed and keeps its own share, so a run on N processes sees exactly the
    batches of a single-process run with the same global batch, and one generator state
    resumes them all.
    """

    def __init__(
        self, tokens: np.ndarray, batch_size: int, block_size: int, device: str, seed: int
    ) -> None:
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(block_size + 1)

    def draw(self, n: int) -> torch.Tensor:
        """Start offsets of n micro-batches: (n, batch_size)."""
        high = len(self.tokens) - self.block_size
        return torch.randint(high, (n, self.batch_size), generator=self.gen)

    def gather(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.tokens[ix.numpy()[:, None] + self._offsets]  # (B, T+1), one gather
        buf = torch.from_numpy(rows.astype(np.int64))
        if self.device.startswith("cuda"):
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        elif self.device != "cpu":
            buf = buf.to(self.device)
        return buf[:, :-1], buf[:, 1:]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather(self.draw(1)[0])

    def step(
        self, grad_accum: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process' micro-batches of one optimizer step (grad_accum across all)."""
        ix = self.draw(grad_accum)
        share = grad_accum // world_size
        return (self.gather(i) for i in ix[rank * share : (rank + 1) * share])


# ---------------------------------------------------------------------------- schedule


def learning_rate(cfg: TrainConfig, step: int, progress: float | None = None) -> float:
    """The lr at `step`: warm-up, then cfg.schedule's decay to final_lr (or constant without
    decay_lr). `progress` in [0, 1] replaces step/lr_decay_iters over a time budget.
    """
    if progress is None:
        decay_iters = cfg.lr_decay_iters or cfg.max_iters
        span = max(1, decay_iters - cfg.warmup_iters)
        progress = (step - cfg.warmup_iters) / span
    if not cfg.decay_lr:
        return cfg.learning_rate * schedule.warmup_factor(step, cfg.warmup_iters)
    if cfg.schedule == "trapezoid":
        return schedule.trapezoid(
            cfg.learning_rate, cfg.final_lr, step, cfg.warmup_iters, progress, cfg.cooldown
        )
    return schedule.cosine(cfg.learning_rate, cfg.final_lr, step, cfg.warmup_iters, progress)


def build_optimizer(model: GPT, cfg: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    """AdamW on every parameter, or Muon on the blocks' matrices and AdamW on the rest."""
    if cfg.optimizer == "muon":
        return Muon(
            muon_groups(model, cfg.weight_decay),
            lr=cfg.learning_rate,
            betas=(cfg.beta1, cfg.beta2),
            momentum=cfg.muon_momentum,
        )
    return torch.optim.AdamW(
        model.optimizer_groups(cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
    )


# ---------------------------------------------------------------------------- run directory


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoint directories in a run directory, oldest first."""
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if STEP_DIR.match(p.name) and (p / "config.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def holds_run(out: Path) -> bool:
    return out.is_dir() and (
        bool(checkpoints(out)) or (out / METRICS_FILE).exists() or (out / modeldir.LATEST).exists()
    )


def _prune(out: Path, keep: int) -> None:
    for old in checkpoints(out)[:-keep]:
        if (out / modeldir.LATEST).resolve() != old.resolve():
            shutil.rmtree(old, ignore_errors=True)


STALE = re.compile(r"^\.(step-\d{6,}|latest)\.")  # temp names staged_dir/point_latest use


def tidy_run_dir(out: Path) -> list[Path]:
    """Clear what a killed run left behind; returns the stale paths it removed.

    A process killed mid-checkpoint leaves its staging directory (.step-NNNNNN.*.tmp), maybe
    .step-NNNNNN.old from a replace (put back if the replacement never arrived) and maybe a
    torn last line in metrics.jsonl. Complete checkpoints and `latest` are never touched.
    """
    removed = []
    for p in sorted(out.iterdir()):
        if not STALE.match(p.name):
            continue
        final = out / p.name[1:].removesuffix(".old")
        if p.name.endswith(".old") and p.is_dir() and not final.exists():
            os.rename(p, final)  # killed between the two renames of a replace
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    with contextlib.suppress(OSError), open(out / METRICS_FILE, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")  # end the torn line: the next event starts on its own line
    return removed


class _StopFlag:
    """First Ctrl+C asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # not in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------- the job


def train(
    model_cfg_in: dict[str, Any],
    train_cfg_in: dict[str, Any],
    opts: RunOptions,
) -> dict[str, Any]:
    """Run a training job; returns the summary stored in the final checkpoint's config.json.

    model_cfg_in / train_cfg_in: preset values already merged with the user's overrides
    (without vocab_size, which comes from the data). On --resume, the checkpoint's configs are
    used and only the explicitly given train overrides in train_cfg_in apply.
    """
    device = resolve_device(opts.device)
    dist_info, device = init_distributed(device)
    try:
        return _train(model_cfg_in, train_cfg_in, opts, device, dist_info)
    finally:
        if dist_info.enabled:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _train(
    model_cfg_in: dict[str, Any],
    train_cfg_in: dict[str, Any],
    opts: RunOptions,
    device: str,
    dist_info: Dist,
) -> dict[str, Any]:
    out = opts.out
    resume_state: dict[str, Any] | None = None
    init_model: GPT | None = None
    if opts.resume:
        if dist_info.master and out.is_dir():
            tidy_run_dir(out)  # what a killed run left: staging dirs, a torn metrics line
        if not checkpoints(out) and not (out / modeldir.LATEST).exists():
            raise TrainingError(f"--resume: no checkpoint in {out}")
        info = modeldir.read(out)
        resume_state = checkpoint.load_trainer_state(info)
        saved_train = dict(info.meta.get("training", {}).get("config", {}))
        train_cfg = TrainConfig.from_dict({**saved_train, **train_cfg_in})
        train_cfg.validate()
        model_cfg = info.config
        dataset = load_dataset(opts.data, model_cfg.block_size)
        if dataset.tokenizer_spec != info.tokenizer_spec:
            raise TrainingError("--resume: the data's tokenizer differs from the checkpoint's")
        init_model, _ = checkpoint.load(info.path)
    else:
        if holds_run(out) and not opts.force:
            raise TrainingError(
                f"{out} already holds a training run; pass --resume to continue it or --force "
                "to start over"
            )
        dataset = load_dataset(opts.data)
        if opts.init_from:
            init_model, info = checkpoint.load(opts.init_from)
            if info.tokenizer_spec != dataset.tokenizer_spec:
                raise TrainingError(
                    f"--init-from: {info.path}'s tokenizer does not match the data's"
                )
            base = info.config.to_dict()
            # Only these may differ from the initial model's shape.
            block = int(model_cfg_in.get("block_size", base["block_size"]))
            if block > base["block_size"]:
                raise ConfigError(
                    f"block_size {block} is over what {info.path} supports ({base['block_size']})"
                )
            base.update(block_size=block, dropout=model_cfg_in.get("dropout", base["dropout"]))
            model_cfg = GPTConfig.from_dict(base)
            if block < info.config.block_size:  # crop the position embedding
                init_model.wpe.weight.data = init_model.wpe.weight.data[:block].clone()
                init_model.wpe.num_embeddings = block
                init_model.config = model_cfg
        else:
            model_cfg = GPTConfig.from_dict({"vocab_size": dataset.vocab_size, **model_cfg_in})
        if dataset.vocab_size > model_cfg.vocab_size:
            raise ConfigError(
                f"the data has {dataset.vocab_size} tokens, the model only {model_cfg.vocab_size}"
            )
        train_cfg = TrainConfig.from_dict(train_cfg_in)
        train_cfg.validate()
        dataset.require_windows(model_cfg.block_size)
        if opts.force and dist_info.master and out.is_dir():
            for old in checkpoints(out):
                shutil.rmtree(old)
            for name in (modeldir.LATEST, METRICS_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()

    notices = []
    if train_cfg.grad_accum < dist_info.world_size:
        notices.append(
            f"grad_accum {train_cfg.grad_accum} is less than the {dist_info.world_size} "
            f"processes: raised to {dist_info.world_size} (one micro-batch each), so the "
            f"global batch is {dist_info.world_size * train_cfg.batch_size} sequences"
        )
        train_cfg.grad_accum = dist_info.world_size
    if train_cfg.grad_accum % dist_info.world_size:
        raise ConfigError(
            f"grad_accum ({train_cfg.grad_accum}) must be divisible by the number of processes "
            f"({dist_info.world_size}): each process runs grad_accum / world_size micro-batches"
        )
    accum = train_cfg.grad_accum // dist_info.world_size
    tokenizer = dataset.tokenizer(opts.bpe_dir)

    # -- model, optimizer, precision
    torch.manual_seed(train_cfg.seed + dist_info.rank)
    raw_model = init_model if init_model is not None else GPT(model_cfg)
    if init_model is None and train_cfg.zero_init:
        zero_init_projections(raw_model)
    raw_model.to(device)
    dtype = resolve_dtype(train_cfg.dtype, device)
    device_type = device.split(":")[0]
    autocast = (
        torch.autocast(device_type=device_type, dtype=dtype)
        if dtype != torch.float32
        else contextlib.nullcontext()
    )
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == torch.float16))
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device_type == "cpu":
        keep_freed_memory()
    fused = device_type in ("cuda", "cpu")
    optimizer = build_optimizer(raw_model, train_cfg, fused)
    batches = Batches(
        dataset.train, train_cfg.batch_size, model_cfg.block_size, device, train_cfg.seed
    )
    step, elapsed_before, best_val = 0, 0.0, float("inf")
    if resume_state is not None:
        step = int(resume_state["step"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        torch_states = resume_state["rng_torch"]  # one per process (dropout masks)
        if len(torch_states) == dist_info.world_size:
            torch.set_rng_state(torch_states[dist_info.rank])
        else:  # resumed on a different number of processes: a fresh stream per process
            torch.manual_seed(train_cfg.seed + step + 7919 * dist_info.rank)
        batches.gen.set_state(resume_state["rng_data"])
        elapsed_before = float(resume_state.get("elapsed", 0.0))
        best_val = float(resume_state.get("best_val_loss", float("inf")))

    model: nn.Module = raw_model
    if train_cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dist_info.local_rank] if device_type == "cuda" else None)

    tokens_per_step = train_cfg.batch_size * model_cfg.block_size * accum * dist_info.world_size
    # Model FLOPs utilisation: achieved model FLOP/s over the peak of all the job's devices.
    peak = opts.peak_flops or peak_flops(device, dtype)
    flops_per_token = raw_model.flops_per_token()
    metrics_path = out / METRICS_FILE
    if dist_info.master:
        out.mkdir(parents=True, exist_ok=True)
    training_meta = {
        "config": train_cfg.to_dict(),
        "preset": opts.preset,
        "data": str(opts.data),
        "data_sha256": dataset.meta.get("sha256"),
        "data_source": dataset.meta.get("source"),
        "command": opts.command,
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "world_size": dist_info.world_size,
        "tokens_per_step": tokens_per_step,
        "init_from": opts.init_from,
    }

    def emit(event: Event) -> None:
        if not dist_info.master:
            return
        event = {"event": event.pop("event"), "time": time.time(), **event}
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        if opts.on_event:
            opts.on_event(event)

    emit(
        {
            "event": "start",
            "iter": step,
            "max_iters": train_cfg.max_iters,
            "time_budget": train_cfg.time_budget,
            "resumed": resume_state is not None,
            "params": raw_model.num_params(),
            "tokens_per_step": tokens_per_step,
            "config": {"model": model_cfg.to_dict(), "train": train_cfg.to_dict()},
            "device": device,
            "dtype": training_meta["dtype"],
            "world_size": dist_info.world_size,
        }
    )
    for notice in notices:
        emit({"event": "notice", "iter": step, "text": notice})

    def estimate(split: str, seed: int) -> float:
        """Mean loss over eval_iters random batches, with its own generator (no effect on
        the training RNG, so evaluation never changes what the run learns)."""
        ev = Batches(dataset.split(split), train_cfg.batch_size, model_cfg.block_size, device, seed)
        raw_model.eval()
        total = 0.0
        with torch.no_grad():
            for _ in range(train_cfg.eval_iters):
                x, y = ev.next()
                with autocast:
                    _, loss = raw_model(x, y)
                assert loss is not None
                total += float(loss)
        raw_model.train()
        return total / train_cfg.eval_iters

    last: dict[str, Any] = {"loss": None, "val_loss": None, "train_loss": None}

    def save(reason: str) -> None:
        torch_states: list[Any] = [torch.get_rng_state()]
        if dist_info.enabled:
            import torch.distributed as dist

            torch_states = [None] * dist_info.world_size
            dist.all_gather_object(torch_states, torch.get_rng_state())
        if not dist_info.master:
            return
        summary = {
            "iter": step,
            "tokens_seen": step * tokens_per_step,
            "train_loss": last["train_loss"],
            "val_loss": last["val_loss"],
            "last_loss": last["loss"],
            "elapsed_seconds": round(elapsed_before + (time.perf_counter() - t_start), 2),
            "params": raw_model.num_params(),
        }
        meta = modeldir.make_meta(
            model_cfg,
            tokenizer,
            name=out.resolve().name,
            training=training_meta,
            summary=summary,
            **opts.extra_meta,
        )
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng_torch": torch_states,
            "rng_data": batches.gen.get_state(),
            "elapsed": elapsed_before + (time.perf_counter() - t_start),
            "best_val_loss": best_val,
        }
        target = out / f"step-{step:06d}"
        try:
            checkpoint.save(target, raw_model, meta, state, replace=True)
            modeldir.point_latest(out, target)
        except OSError as e:
            prev = (out / modeldir.LATEST).resolve()
            raise TrainingError(
                f"could not save checkpoint at iteration {step} ({e.strerror or e}); "
                f"the previous checkpoint {prev.name} is intact"
            ) from None
        _prune(out, train_cfg.keep_checkpoints)
        emit({"event": "checkpoint", "iter": step, "path": str(target), "reason": reason})

    def evaluate(at: int) -> None:
        nonlocal best_val
        if not dist_info.master:  # only rank 0 evaluates; the others wait at the next step
            return
        last["train_loss"] = estimate("train", train_cfg.seed + 7 * at + 1)
        last["val_loss"] = estimate("val", train_cfg.seed + 7 * at + 2)
        best_val = min(best_val, last["val_loss"])
        emit(
            {
                "event": "eval",
                "iter": at,
                "train_loss": last["train_loss"],
                "val_loss": last["val_loss"],
            }
        )
        if opts.sample is not None:
            emit({"event": "sample", "iter": at, "text": opts.sample(raw_model, tokenizer, at)})

    ckpt_interval = train_cfg.ckpt_interval or train_cfg.eval_interval
    budget = train_cfg.time_budget
    t_start = time.perf_counter()
    t_log, tokens_since_log = t_start, 0
    reason = "done"
    raw_model.train()
    with _StopFlag() as stop:
        while True:
            elapsed = elapsed_before + (time.perf_counter() - t_start)
            if step >= train_cfg.max_iters or (budget is not None and elapsed >= budget):
                break
            if _agree(stop.requested, dist_info, device):
                reason = "interrupted"
                break
            lr = learning_rate(train_cfg, step, None if budget is None else elapsed / budget)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = accumulate_gradients(
                model,
                batches.step(train_cfg.grad_accum, dist_info.rank, dist_info.world_size),
                accum,
                autocast,
                scaler,
                dist_info.enabled,
            )
            if train_cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(raw_model.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_since_log += tokens_per_step

            if step % train_cfg.log_interval == 0 or step == 1:
                loss_value = float(loss.detach()) * accum  # one sync per log line, not per step
                last["loss"] = loss_value
                now = time.perf_counter()
                tokens_per_sec = tokens_since_log / max(now - t_log, 1e-9)
                event: Event = {
                    "event": "train",
                    "iter": step,
                    "loss": loss_value,
                    "lr": lr,
                    "tokens_per_sec": tokens_per_sec,
                    "elapsed": elapsed_before + (now - t_start),
                }
                if peak:
                    event["mfu"] = tokens_per_sec * flops_per_token / (peak * dist_info.world_size)
                emit(event)
                t_log, tokens_since_log = now, 0
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"loss became {loss_value} at iteration {step}; lower --learning-rate"
                    )
            if step % train_cfg.eval_interval == 0:
                evaluate(step)
            if step % ckpt_interval == 0 and step < train_cfg.max_iters:
                save("interval")

        if step and (last["val_loss"] is None or step % train_cfg.eval_interval):
            evaluate(step)
        if step:
            save(reason)

    final_val = None
    if opts.final_eval and dist_info.master and reason == "done":
        final_val = split_loss(
            raw_model, dataset.val, model_cfg.block_size, train_cfg.batch_size, device, autocast
        )
        emit({"event": "eval", "iter": step, "val_loss_full": final_val})
        info = modeldir.read(out)
        info.meta["summary"]["val_loss_full"] = final_val
        modeldir.write_json(info.path / modeldir.CONFIG_FILE, info.meta)
    emit(
        {
            "event": "end",
            "iter": step,
            "reason": reason,
            "val_loss_full": final_val,
            "elapsed": elapsed_before + (time.perf_counter() - t_start),
        }
    )
    return {
        "iter": step,
        "reason": reason,
        "val_loss": last["val_loss"],
        "val_loss_full": final_val,
        "out": str(out),
    }


def accumulate_gradients(
    model: nn.Module,
    micro_batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    accum: int,
    autocast: Any,
    scaler: torch.amp.GradScaler,
    ddp: bool = False,
) -> torch.Tensor:
    """Backward over `accum` micro-batches; the gradients equal one batch `accum` times larger.

    Under DDP the all-reduce runs only on the last micro-batch. Returns the last micro-batch's
    (scaled-down) loss.
    """
    loss = torch.zeros(())
    for micro, (x, y) in enumerate(micro_batches):
        sync = not ddp or micro == accum - 1
        with contextlib.nullcontext() if sync else model.no_sync(), autocast:  # type: ignore[operator]
            _, loss = model(x, y)
            loss = loss / accum
        scaler.scale(loss).backward()
    return loss


def _agree(flag: bool, dist_info: Dist, device: str = "cpu") -> bool:
    """Every rank stops together: true if any rank was asked to stop."""
    if not dist_info.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
