"""The training loop: single process, or several through torchrun (DistributedDataParallel).

`train(...)` runs a whole job in three parts:

- `prepare` decides what the run starts from: a fresh model, another model's weights
  (--init-from) or the run's latest checkpoint (--resume), and checks the configs and data;
- `Trainer` holds the model, optimizer, precision and data stream, and runs the loop: AdamW
  or Muon (model/muon.py) with warm-up and cosine or trapezoid decay (model/schedule.py;
  over iterations, or over a wall-clock budget), gradient
  accumulation, clipping and mixed precision, periodic evaluation and text samples;
- `Checkpointer` writes atomic checkpoints into the run directory (model/rundir.py) that
  `--resume` continues bit-exactly on CPU.

Devices and processes are set up by model/device.py; every event goes to metrics.jsonl and
to an optional callback (model/events.py), which the CLI renders with rich.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import checkpoint, modeldir, rundir, schedule
from model.config import ConfigError, GPTConfig, TrainConfig
from model.data import META_FILE, Dataset, load_dataset
from model.device import (
    Dist,
    any_rank,
    autocast,
    close_distributed,
    gather,
    init_distributed,
    peak_flops,
    prepare_for_training,
    resolve_device,
    resolve_dtype,
)
from model.errors import first_line
from model.evaluate import split_loss
from model.events import (
    METRICS_FILE,
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    Event,
    EventLog,
    FullEvalEvent,
    NoticeEvent,
    SampleEvent,
    StartEvent,
    TrainEvent,
)
from model.gpt import GPT, zero_init_projections
from model.muon import Muon, muon_groups
from model.tokenizer import Tokenizer


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


def train(
    model_cfg_in: dict[str, Any],
    train_cfg_in: dict[str, Any],
    opts: RunOptions,
) -> dict[str, Any]:
    """Run a training job; returns its iteration, stop reason, last and whole-split val loss.

    model_cfg_in / train_cfg_in: preset values already merged with the user's overrides
    (without vocab_size, which comes from the data). On --resume, the checkpoint's configs are
    used: train_cfg_in holds only the settings to change, and model_cfg_in may only repeat
    the checkpoint's model config.
    """
    device = resolve_device(opts.device)
    dist_info, device = init_distributed(device)
    try:
        # Rank 0 writes the run directory, so it holds it: a second run there is refused.
        with rundir.locked(opts.out) if dist_info.master else _no_lock() as claim:
            start = prepare(model_cfg_in, train_cfg_in, opts, dist_info)
            claim()
            return Trainer(start, opts, device, dist_info).run()
    except rundir.RunDirLocked as e:
        raise TrainingError(str(e)) from None
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        raise TrainingError(
            f"out of memory on {device}: lower --batch-size (or --block-size, or the model's size)"
        ) from None
    finally:
        close_distributed(dist_info)


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: numpy's, CUDA's, or the CPU allocator's RuntimeError."""
    cpu = isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    return cpu or isinstance(e, MemoryError | torch.cuda.OutOfMemoryError)


@contextlib.contextmanager
def _no_lock() -> Iterator[Callable[[], None]]:
    yield lambda: None  # ranks other than 0 write nothing in the run directory


# ---------------------------------------------------------------------------- the start


@dataclass
class Start:
    """What a job trains: its configs and data, and the weights and state it starts from."""

    model_cfg: GPTConfig
    train_cfg: TrainConfig
    dataset: Dataset
    model: GPT | None = None  # the weights of --init-from or --resume; None: a fresh model
    state: dict[str, Any] | None = None  # --resume: the checkpoint's trainer.pt


def prepare(
    model_cfg_in: dict[str, Any], train_cfg_in: dict[str, Any], opts: RunOptions, dist_info: Dist
) -> Start:
    """Check the configs, data and run directory, and load what the run starts from."""
    out = opts.out
    if opts.resume:
        return _resumed(model_cfg_in, train_cfg_in, opts, dist_info)
    for name, kind in ((modeldir.CONFIG_FILE, "a model"), (META_FILE, "a data")):
        if (out / name).exists():  # --force would leave the run mixed in with its files
            raise TrainingError(f"{out} is {kind} directory; train into a run directory")
    if rundir.holds_run(out) and not opts.force:
        raise TrainingError(
            f"{out} already holds a training run; pass --resume to continue it or --force "
            "to start over"
        )
    dataset = load_dataset(opts.data)
    model: GPT | None = None
    if opts.init_from:
        model, model_cfg = _init_from(opts.init_from, model_cfg_in, dataset)
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
        rundir.clear(out)
    return Start(model_cfg, train_cfg, dataset, model)


def _resumed(
    model_cfg_in: dict[str, Any], train_cfg_in: dict[str, Any], opts: RunOptions, dist_info: Dist
) -> Start:
    out = opts.out
    if dist_info.master and out.is_dir():
        rundir.tidy(out)  # what a killed run left: staging dirs, a torn metrics line
    if not rundir.can_resume(out):
        if rundir.holds_run(out):  # a run that stopped before its first checkpoint
            raise TrainingError(
                f"--resume: the run in {out} stopped before saving a checkpoint; "
                "start it over with --force"
            )
        raise TrainingError(f"--resume: no checkpoint in {out}")
    info = modeldir.read(out)
    saved = info.config.to_dict()
    changed = sorted(k for k, v in model_cfg_in.items() if k not in saved or saved[k] != v)
    if changed:
        raise ConfigError(
            f"--resume keeps the checkpoint's model config; it differs in {', '.join(changed)}"
        )
    state = checkpoint.load_trainer_state(info)
    training = info.meta.get("training")
    saved_train = training.get("config") if isinstance(training, dict) else None
    if not isinstance(saved_train, dict):
        raise TrainingError(f"--resume: {info.path}'s config.json lacks its training config")
    saved_optimizer = saved_train.get("optimizer", "adamw")  # runs from before the option
    if train_cfg_in.get("optimizer", saved_optimizer) != saved_optimizer:
        raise TrainingError(
            f"--resume keeps the checkpoint's optimizer ({saved_optimizer}); "
            f"drop --optimizer {train_cfg_in['optimizer']}"
        )
    train_cfg = TrainConfig.from_dict({**saved_train, **train_cfg_in})
    train_cfg.validate()
    dataset = load_dataset(opts.data, info.config.block_size)
    if dataset.tokenizer_spec != info.tokenizer_spec:
        raise TrainingError("--resume: the data's tokenizer differs from the checkpoint's")
    model, _ = checkpoint.load(info.path)
    return Start(info.config, train_cfg, dataset, model, state)


def _init_from(
    source: str, model_cfg_in: dict[str, Any], dataset: Dataset
) -> tuple[GPT, GPTConfig]:
    """Another model's weights and shape; only the block size (shorter) and dropout may change."""
    model, info = checkpoint.load(source)
    if info.tokenizer_spec != dataset.tokenizer_spec:
        raise TrainingError(f"--init-from: {info.path}'s tokenizer does not match the data's")
    base = info.config.to_dict()
    changed = sorted(
        k
        for k, v in model_cfg_in.items()
        if k not in ("block_size", "dropout") and (k not in base or base[k] != v)
    )
    if changed:
        raise ConfigError(
            f"--init-from keeps {info.path}'s model shape; it differs in {', '.join(changed)}"
        )
    block = int(model_cfg_in.get("block_size", base["block_size"]))
    if block > base["block_size"]:
        raise ConfigError(
            f"block_size {block} is over what {info.path} supports ({base['block_size']})"
        )
    base.update(block_size=block, dropout=model_cfg_in.get("dropout", base["dropout"]))
    if block < info.config.block_size:
        model.crop_block_size(block)
    return model, GPTConfig.from_dict(base)


def _fit_grad_accum(cfg: TrainConfig, dist_info: Dist) -> list[str]:
    """Make grad_accum a whole number of micro-batches per process; returns what it changed."""
    notices = []
    if cfg.grad_accum < dist_info.world_size:
        notices.append(
            f"grad_accum {cfg.grad_accum} is less than the {dist_info.world_size} "
            f"processes: raised to {dist_info.world_size} (one micro-batch each), so the "
            f"global batch is {dist_info.world_size * cfg.batch_size} sequences"
        )
        cfg.grad_accum = dist_info.world_size
    if cfg.grad_accum % dist_info.world_size:
        raise ConfigError(
            f"grad_accum ({cfg.grad_accum}) must be divisible by the number of processes "
            f"({dist_info.world_size}): each process runs grad_accum / world_size micro-batches"
        )
    return notices


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


# ---------------------------------------------------------------------------- one step


def learning_rate(cfg: TrainConfig, step: int, progress: float | None = None) -> float:
    """The lr at `step`: warm-up, then cfg.schedule's decay to final_lr (model/schedule.py),
    or constant without decay_lr. `progress` in [0, 1] replaces step/lr_decay_iters when the
    schedule runs over a time budget.
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


def build_optimizer(model: GPT, cfg: TrainConfig, device: str) -> torch.optim.Optimizer:
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
        fused=device.split(":")[0] in ("cuda", "cpu"),
    )


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


# ---------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Writes the run's checkpoints: step-NNNNNN/ holds the weights, config.json (model config,
    tokenizer, how the run was made and its summary so far) and trainer.pt (optimizer, RNG and
    data position, for --resume); `latest` then points at it and the oldest are pruned."""

    def __init__(
        self,
        out: Path,
        model_cfg: GPTConfig,
        tokenizer: Tokenizer,
        training: dict[str, Any],
        extra_meta: dict[str, Any],
        keep: int,
        log: EventLog,
    ) -> None:
        self.out = out
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.training = training
        self.extra_meta = extra_meta
        self.keep = keep
        self.log = log

    def save(
        self,
        model: GPT,
        step: int,
        state: dict[str, Any],
        summary: dict[str, Any],
        reason: str,
    ) -> None:
        meta = modeldir.make_meta(
            self.model_cfg,
            self.tokenizer,
            name=self.out.resolve().name,
            training=self.training,
            summary=summary,
            **self.extra_meta,
        )
        target = rundir.step_dir(self.out, step)
        try:
            checkpoint.save(target, model, meta, state, replace=True, tokenizer=self.tokenizer)
            modeldir.point_latest(self.out, target)
        except OSError as e:
            prev = (self.out / modeldir.LATEST).resolve()
            raise TrainingError(
                f"could not save checkpoint at iteration {step} ({e.strerror or e}); "
                f"the previous checkpoint {prev.name} is intact"
            ) from None
        rundir.prune(self.out, self.keep)
        self.log.emit(
            CheckpointEvent(event="checkpoint", iter=step, path=str(target), reason=reason)
        )

    def record_final_loss(self, val_loss_full: float) -> None:
        """Add the whole-split validation loss to the latest checkpoint's summary."""
        info = modeldir.read(self.out)
        info.meta["summary"]["val_loss_full"] = val_loss_full
        modeldir.write_json(info.path / modeldir.CONFIG_FILE, info.meta)


# ---------------------------------------------------------------------------- the loop


class Trainer:
    """One job's model, optimizer, precision and data stream, and the loop that trains them.

    Every process of a job runs one; only rank 0 writes events and checkpoints, evaluates and
    samples (the others wait for it at the next step).
    """

    def __init__(self, start: Start, opts: RunOptions, device: str, dist_info: Dist) -> None:
        cfg, model_cfg = start.train_cfg, start.model_cfg
        self.cfg, self.model_cfg, self.opts = cfg, model_cfg, opts
        self.device, self.dist, self.dataset = device, dist_info, start.dataset
        self.notices = _fit_grad_accum(cfg, dist_info)
        self.accum = cfg.grad_accum // dist_info.world_size  # micro-batches of this process
        self.tokenizer = start.dataset.tokenizer(opts.bpe_dir)

        torch.manual_seed(cfg.seed + dist_info.rank)
        self.raw_model = start.model if start.model is not None else GPT(model_cfg)
        if start.model is None and cfg.zero_init:
            zero_init_projections(self.raw_model)
        self.raw_model.to(device)
        self.dtype = resolve_dtype(cfg.dtype, device)
        self.autocast = autocast(device, self.dtype)
        self.scaler = torch.amp.GradScaler(
            device.split(":")[0], enabled=(self.dtype == torch.float16)
        )
        prepare_for_training(device)
        self.optimizer = build_optimizer(self.raw_model, cfg, device)
        self.batches = Batches(
            start.dataset.train, cfg.batch_size, model_cfg.block_size, device, cfg.seed
        )
        self.step, self.elapsed_before, self.best_val = 0, 0.0, float("inf")
        if start.state is not None:
            self._restore(start.state)
        self.resumed = start.state is not None
        self.model = self._wrap(self.raw_model)

        self.tokens_per_step = cfg.batch_size * model_cfg.block_size * cfg.grad_accum
        # Model FLOPs utilisation: achieved model FLOP/s over the peak of all the job's devices.
        self.peak = opts.peak_flops or peak_flops(device, self.dtype)
        self.flops_per_token = self.raw_model.flops_per_token()
        self.loss: float | None = None  # the last logged training loss
        self.train_loss: float | None = None  # the last evaluation's estimates
        self.val_loss: float | None = None
        self.t_start = self.t_log = time.perf_counter()
        self.tokens_since_log = 0

        self.log = EventLog(opts.out / METRICS_FILE, opts.on_event, enabled=dist_info.master)
        self.checkpointer = Checkpointer(
            opts.out,
            model_cfg,
            self.tokenizer,
            self._training_record(),
            opts.extra_meta,
            cfg.keep_checkpoints,
            self.log,
        )

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's trainer state (the counterpart of `state_dict`)."""
        self._check_state(state)
        self.step = int(state["step"])
        try:  # what the check cannot see (an RNG state of the wrong length) fails in Python
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            torch_states = state["rng_torch"]  # one per process (dropout masks)
            if len(torch_states) == self.dist.world_size:
                torch.set_rng_state(torch_states[self.dist.rank])
            else:  # resumed on a different number of processes: a fresh stream per process
                torch.manual_seed(self.cfg.seed + self.step + 7919 * self.dist.rank)
            self.batches.gen.set_state(state["rng_data"])
            self.elapsed_before = float(state.get("elapsed", 0.0))
            self.best_val = float(state.get("best_val_loss", float("inf")))
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise TrainingError(
                f"cannot resume from {modeldir.TRAINER_FILE} of {self.opts.out}: {first_line(e)}"
            ) from None
        budget = self.cfg.time_budget
        if self.step >= self.cfg.max_iters:
            self.notices.append(
                f"the run is already at iteration {self.step} (--max-iters "
                f"{self.cfg.max_iters}): nothing to train; a larger --max-iters trains on"
            )
        elif budget is not None and self.elapsed_before >= budget:
            self.notices.append(
                f"the run has already spent its --time-budget of {budget:g} s: nothing to "
                "train; a larger --time-budget trains on"
            )

    def _check_state(self, state: dict[str, Any]) -> None:
        """Refuse, in one line, a trainer.pt that does not belong to this model, before any of
        it reaches torch (one copied from a run of another width made fused AdamW abort in
        C++): its parameter groups, and every optimizer moment's shape, must be this
        optimizer's, and its RNG states must be byte tensors."""
        where = f"{modeldir.TRAINER_FILE} of {self.opts.out}"
        ours = [p.shape for group in self.optimizer.param_groups for p in group["params"]]
        try:
            groups = state["optimizer"]["param_groups"]
            moments = state["optimizer"]["state"]
            ids = [i for group in groups for i in group["params"]]
            shapes = {
                i: t.shape
                for i, m in moments.items()
                for name, t in m.items()
                if name in ("exp_avg", "exp_avg_sq") and isinstance(t, torch.Tensor)
            }
            rng = [state["rng_data"], *state["rng_torch"]]
            step = state["step"]
        except (KeyError, TypeError, AttributeError) as e:
            raise TrainingError(f"{where} is not a complete trainer state ({e!s})") from None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TrainingError(f"{where} has no valid step ({step!r})")
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng):
            raise TrainingError(f"{where} holds no valid random-number states")
        fits = len(groups) == len(self.optimizer.param_groups) and len(ids) == len(ours)
        fits = fits and all(
            shapes.get(i, shape) == shape for i, shape in zip(ids, ours, strict=False)
        )
        if not fits:
            raise TrainingError(
                f"{where} belongs to a model of another shape (its optimizer holds "
                f"{len(ids)} tensors of other sizes); it cannot resume this checkpoint"
            )

    def state_dict(self, rng_torch: list[Any]) -> dict[str, Any]:
        """What --resume needs to continue bit-exactly; rng_torch: every process' RNG state."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng_torch": rng_torch,
            "rng_data": self.batches.gen.get_state(),
            "elapsed": self.elapsed(),
            "best_val_loss": self.best_val,
        }

    def _wrap(self, model: GPT) -> nn.Module:
        """The module the step runs: compiled, and under DDP wrapped to all-reduce gradients."""
        wrapped: nn.Module = model
        if self.cfg.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            cuda = self.device.startswith("cuda")
            wrapped = DDP(wrapped, device_ids=[self.dist.local_rank] if cuda else None)
        return wrapped

    def _training_record(self) -> dict[str, Any]:
        """How the run was made, stored in every checkpoint's config.json."""
        opts, meta = self.opts, self.dataset.meta
        return {
            "config": self.cfg.to_dict(),
            "preset": opts.preset,
            "data": str(opts.data),
            "data_sha256": meta.get("sha256"),
            "data_source": meta.get("source"),
            "command": opts.command,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "world_size": self.dist.world_size,
            "tokens_per_step": self.tokens_per_step,
            "init_from": opts.init_from,
        }

    def elapsed(self) -> float:
        """Seconds of training, over all resumes."""
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    # -- the job

    def run(self) -> dict[str, Any]:
        if self.dist.master:
            self.opts.out.mkdir(parents=True, exist_ok=True)
        self._announce()
        self.t_start = self.t_log = time.perf_counter()
        reason = self.loop()
        final_val = self.final_eval() if reason == "done" else None
        end = EndEvent(
            event="end",
            iter=self.step,
            reason=reason,
            val_loss_full=final_val,
            elapsed=self.elapsed(),
        )
        self.log.emit(end)
        return {
            "iter": self.step,
            "reason": reason,
            "val_loss": self.val_loss,
            "val_loss_full": final_val,
            "out": str(self.opts.out),
        }

    def _announce(self) -> None:
        self.log.emit(
            StartEvent(
                event="start",
                iter=self.step,
                max_iters=self.cfg.max_iters,
                time_budget=self.cfg.time_budget,
                resumed=self.resumed,
                params=self.raw_model.num_params(),
                tokens_per_step=self.tokens_per_step,
                config={"model": self.model_cfg.to_dict(), "train": self.cfg.to_dict()},
                device=self.device,
                dtype=str(self.dtype).replace("torch.", ""),
                world_size=self.dist.world_size,
            )
        )
        for notice in self.notices:
            self.log.emit(NoticeEvent(event="notice", iter=self.step, text=notice))

    def loop(self) -> str:
        """Train until max_iters, the time budget or Ctrl+C; returns why it stopped."""
        cfg, budget = self.cfg, self.cfg.time_budget
        reason = "done"
        self.raw_model.train()
        with _StopFlag() as stop:
            while True:
                elapsed = self.elapsed()
                # A fresh run takes at least one step, whatever its budget, so that it always
                # ends with a checkpoint that --resume continues (a 1e-9 s budget once ended
                # with no checkpoint, which --resume refused and only --force cleared).
                spent = budget is not None and elapsed >= budget and self.step > 0
                if self.step >= cfg.max_iters or spent:
                    break
                if any_rank(stop.requested, self.dist, self.device):
                    reason = "interrupted"
                    break
                lr = learning_rate(cfg, self.step, None if budget is None else elapsed / budget)
                loss = self.optimize(lr)
                self.after_step(lr, loss)
            if self.step:
                self.require_finite()
            if self.step and (self.val_loss is None or self.step % cfg.eval_interval):
                self.evaluate(self.step)
            if self.step:
                self.save(reason)
        return reason

    def optimize(self, lr: float) -> torch.Tensor:
        """One optimizer step at learning rate `lr`; returns the last micro-batch's loss."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = accumulate_gradients(
            self.model,
            self.batches.step(cfg.grad_accum, self.dist.rank, self.dist.world_size),
            self.accum,
            self.autocast,
            self.scaler,
            self.dist.enabled,
        )
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_since_log += self.tokens_per_step
        return loss

    def after_step(self, lr: float, loss: torch.Tensor) -> None:
        """Log, evaluate, sample and checkpoint at their intervals."""
        cfg, step = self.cfg, self.step
        if step % cfg.log_interval == 0 or step == 1:
            self.log_progress(lr, loss)
        evaluate = step % cfg.eval_interval == 0
        sample = bool(cfg.sample_interval) and step % cfg.sample_interval == 0
        save = step % (cfg.ckpt_interval or cfg.eval_interval) == 0 and step < cfg.max_iters
        if evaluate or sample or save:
            self.require_finite()
        if evaluate:
            self.evaluate(step)
        if sample:
            self.sample(step)
        if save:
            self.save("interval")

    def require_finite(self) -> None:
        """Stop a run whose weights are no longer finite (it diverged) before they are
        evaluated or saved: a NaN checkpoint must never replace the last good one as
        `latest`. Checked at every step that could save (and at the end), on every rank."""
        bad = next(
            (n for n, p in self.raw_model.named_parameters() if not bool(p.isfinite().all())),
            None,
        )
        if bad is None:
            return
        latest = self.opts.out / modeldir.LATEST
        kept = (
            f"the last good checkpoint {latest.resolve().name} is still latest"
            if latest.exists()
            else "no checkpoint was saved"
        )
        raise TrainingError(
            f"training diverged: {bad} is no longer finite at iteration {self.step} (loss "
            f"{self.loss}); nothing was saved, {kept}; lower --learning-rate"
        )

    def log_progress(self, lr: float, loss: torch.Tensor) -> None:
        loss_value = float(loss.detach()) * self.accum  # one sync per log line, not per step
        self.loss = loss_value
        now = time.perf_counter()
        tokens_per_sec = self.tokens_since_log / max(now - self.t_log, 1e-9)
        event = TrainEvent(
            event="train",
            iter=self.step,
            loss=loss_value,
            lr=lr,
            tokens_per_sec=tokens_per_sec,
            elapsed=self.elapsed_before + (now - self.t_start),
        )
        if self.peak:
            flops = tokens_per_sec * self.flops_per_token
            event["mfu"] = flops / (self.peak * self.dist.world_size)
        self.log.emit(event)
        self.t_log, self.tokens_since_log = now, 0
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at iteration {self.step}; lower --learning-rate"
            )

    def estimate(self, split: str, seed: int) -> float:
        """Mean loss over eval_iters random batches, with its own generator (no effect on
        the training RNG, so evaluation never changes what the run learns)."""
        cfg = self.cfg
        batches = Batches(
            self.dataset.split(split), cfg.batch_size, self.model_cfg.block_size, self.device, seed
        )
        self.raw_model.eval()
        total = 0.0
        with torch.no_grad():
            for _ in range(cfg.eval_iters):
                x, y = batches.next()
                with self.autocast:
                    _, loss = self.raw_model(x, y)
                assert loss is not None
                total += float(loss)
        self.raw_model.train()
        return total / cfg.eval_iters

    def evaluate(self, at: int) -> None:
        """Estimate both splits' loss (rank 0 only); sample too unless sample_interval is set."""
        if not self.dist.master:
            return
        seed = self.cfg.seed + 7 * at
        self.train_loss = self.estimate("train", seed + 1)
        self.val_loss = self.estimate("val", seed + 2)
        self.best_val = min(self.best_val, self.val_loss)
        self.log.emit(
            EvalEvent(event="eval", iter=at, train_loss=self.train_loss, val_loss=self.val_loss)
        )
        if not self.cfg.sample_interval:
            self.sample(at)

    def sample(self, at: int) -> None:
        if self.dist.master and self.opts.sample is not None:
            text = self.opts.sample(self.raw_model, self.tokenizer, at)
            self.log.emit(SampleEvent(event="sample", iter=at, text=text))

    def save(self, reason: str) -> None:
        """Checkpoint now. Every process calls it: each one's RNG state is saved."""
        rng_torch = gather(torch.get_rng_state(), self.dist)
        if not self.dist.master:
            return
        summary = {
            "iter": self.step,
            "tokens_seen": self.step * self.tokens_per_step,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "last_loss": self.loss,
            "elapsed_seconds": round(self.elapsed(), 2),
            "params": self.raw_model.num_params(),
        }
        state = self.state_dict(rng_torch)
        self.checkpointer.save(self.raw_model, self.step, state, summary, reason)

    def final_eval(self) -> float | None:
        """The validation loss over the whole split (rank 0), recorded in the checkpoint."""
        if not (self.opts.final_eval and self.dist.master):
            return None
        cfg = self.cfg
        val = split_loss(
            self.raw_model,
            self.dataset.val,
            self.model_cfg.block_size,
            cfg.batch_size,
            self.device,
            self.autocast,
        )
        self.log.emit(FullEvalEvent(event="eval", iter=self.step, val_loss_full=val))
        self.checkpointer.record_final_loss(val)
        return val
