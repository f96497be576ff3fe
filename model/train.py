"""The training loop: single process, or several through torchrun (DistributedDataParallel).

`train(...)` runs a whole job:

- model/startup.py's `prepare` decides what the run starts from: a fresh model, another
  model's weights (--init-from) or the run's latest checkpoint (--resume), and checks the
  configs and data;
- `Trainer` holds the model, optimizer, precision and data stream (model/batches.py), and runs
  the loop: AdamW or Muon (model/muon.py) with warm-up and cosine or trapezoid decay
  (model/schedule.py; over iterations, or over a wall-clock budget), gradient accumulation,
  clipping and mixed precision, periodic evaluation and text samples;
- `Checkpointer` writes atomic checkpoints into the run directory (model/rundir.py), with the
  trainer.pt (model/trainer_state.py) that `--resume` continues bit-exactly on CPU.

Devices and processes are set up by model/device.py; every event goes to metrics.jsonl and
to an optional callback (model/events.py), which the CLI renders with rich.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import checkpoint, modeldir, rundir, schedule, trainer_state
from model.batches import StopFlag, make_batches
from model.chat import chat_tokens
from model.chat_batches import ChatBatches
from model.config import GPTConfig, TrainConfig
from model.data import Dataset
from model.device import (
    Dist,
    any_rank,
    autocast,
    close_distributed,
    cpu_thread_share,
    gather,
    init_distributed,
    peak_flops,
    prepare_for_training,
    resolve_device,
    resolve_dtype,
    sum_ranks,
    wait_for_master,
)
from model.errors import TrainingError
from model.evaluate import (
    EvaluationStopped,
    chat_loss_sum,
    dataset_loss,
    loss_sum,
    predicted,
    windows,
)
from model.events import (
    METRICS_FILE,
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    EventLog,
    FullEvalEvent,
    NoticeEvent,
    SampleEvent,
    StartEvent,
    TrainEvent,
)
from model.gpt import GPT, zero_init_projections
from model.muon import Muon, muon_groups
from model.startup import RunOptions, Start, prepare
from model.tokenizer import Tokenizer


def _chat_notices(dataset: Dataset, batches: ChatBatches, block_size: int) -> list[str]:
    """What a run on conversations says at its start: what its losses are over, and how many
    conversations are cut to fit a row (model/chat_batches.py)."""
    trained = dataset.meta.get("trained_tokens", {}).get("train")
    share = f" ({trained:,} of the {len(dataset.train):,} training tokens)" if trained else ""
    notices = ["chat data: the train and val losses are over the assistant's tokens only" + share]
    cut, total = batches.truncated, len(batches.conversations)
    if cut:
        notices.append(
            f"{cut:,} of the {total:,} training conversations are longer than the context "
            f"({block_size + 1} tokens): only their first {block_size + 1} tokens are trained"
        )
    return notices


def train(
    model_cfg_in: dict[str, Any],
    train_cfg_in: dict[str, Any],
    opts: RunOptions,
) -> dict[str, Any]:
    """Run a training job; returns its iteration, stop reason, last and whole-split val loss.

    model_cfg_in / train_cfg_in: the settings model/startup.py's `prepare` turns into the
    run's configs (on --resume, only the changes to the checkpoint's).
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
        self.record_summary({"val_loss_full": val_loss_full})

    def record_summary(self, values: dict[str, Any]) -> None:
        """Add values to the latest checkpoint's summary (config.json)."""
        if not (self.out / modeldir.LATEST).exists():
            return
        info = modeldir.read(self.out)
        info.meta["summary"].update(values)
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
        self.notices = list(start.notices)
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
        self.threads = cpu_thread_share(device)  # a fair share of the CPUs (model/jobs.py)
        self.optimizer = build_optimizer(self.raw_model, cfg, device)
        self.batches = make_batches(
            start.dataset, "train", cfg.batch_size, model_cfg.block_size, device, cfg.seed
        )
        self.text_data = start.text_data
        self.text_loss: dict[str, float] = {}  # --text-data: "before" and "after" training
        if isinstance(self.batches, ChatBatches):
            self.notices += _chat_notices(start.dataset, self.batches, model_cfg.block_size)
        self.step, self.elapsed_before, self.best_val = 0, 0.0, float("inf")
        if start.state is not None:
            self._resume(start.state)
        self.resumed = start.state is not None
        self.model = self._wrap(self.raw_model)

        self.tokens_per_step = cfg.batch_size * model_cfg.block_size * cfg.grad_accum
        # Model FLOPs utilisation: achieved model FLOP/s over the peak of all the job's devices.
        self.peak = opts.peak_flops or peak_flops(device, self.dtype)
        self.flops_per_token = self.raw_model.flops_per_token()
        self.loss: float | None = None  # the last logged training loss
        self.train_loss: float | None = None  # the last evaluation's estimates
        self.val_loss: float | None = None
        self.evaluated_at: int | None = None
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

    def _resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's trainer.pt; a note when it has nothing left to train."""
        where = f"{modeldir.TRAINER_FILE} of {self.opts.out}"
        restored = trainer_state.restore(
            state, self.optimizer, self.scaler, self.batches.gen, self.dist, self.cfg.seed, where
        )
        self.step, self.elapsed_before = restored.step, restored.elapsed
        self.best_val = restored.best_val
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
        self.measure_text("before")
        self.t_start = self.t_log = time.perf_counter()
        reason = self.loop()
        final_val = self.final_eval() if reason == "done" else None
        self.measure_text("after")
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
        with StopFlag() as stop:
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
                if self.threads is not None:
                    self.threads.update()
                lr = learning_rate(cfg, self.step, None if budget is None else elapsed / budget)
                loss = self.optimize(lr)
                self.after_step(lr, loss)
            if self.step:
                self.require_finite()
            if self.step and self.evaluated_at != self.step:  # the same on every rank
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
        block = self.model_cfg.block_size
        batches = make_batches(self.dataset, split, cfg.batch_size, block, self.device, seed)
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
        """Estimate both splits' loss (rank 0; the others wait for it however long it takes);
        sample too unless sample_interval is set."""
        if self.dist.master:
            seed = self.cfg.seed + 7 * at
            self.train_loss = self.estimate("train", seed + 1)
            self.val_loss = self.estimate("val", seed + 2)
            self.best_val = min(self.best_val, self.val_loss)
            event = EvalEvent(
                event="eval", iter=at, train_loss=self.train_loss, val_loss=self.val_loss
            )
            self.log.emit(event)
        self.evaluated_at = at
        if not self.cfg.sample_interval:
            self.sample(at)
        wait_for_master(self.dist)

    def measure_text(self, when: str) -> None:
        """--text-data: the plain-text loss before the first step and after the last (rank 0),
        on the first eval_iters x batch_size windows of its val split, recorded in the latest
        checkpoint's summary, so that what fine-tuning forgot shows."""
        if self.text_data is None or not self.dist.master:
            return
        cfg, block = self.cfg, self.model_cfg.block_size
        loss = dataset_loss(
            self.raw_model,
            self.text_data,
            "val",
            block,
            cfg.batch_size,
            self.device,
            self.autocast,
            max_tokens=cfg.eval_iters * cfg.batch_size * block,
        )
        self.text_loss[when] = loss
        where = self.text_data.path
        if when == "before":
            text = f"plain-text loss on {where} before training: {loss:.4f}"
        else:
            before = self.text_loss["before"]
            text = (
                f"plain-text loss on {where}: {before:.4f} before training, {loss:.4f} after "
                f"({loss - before:+.4f})"
            )
            self.checkpointer.record_summary({"text_loss_before": before, "text_loss_after": loss})
        self.log.emit(NoticeEvent(event="notice", iter=self.step, text=text))

    def sample(self, at: int) -> None:
        if self.dist.master and self.opts.sample is not None:
            text = self.opts.sample(self.raw_model, self.tokenizer, at)
            self.log.emit(SampleEvent(event="sample", iter=at, text=text))
        wait_for_master(self.dist)

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
        state = trainer_state.capture(
            self.step,
            self.optimizer,
            self.scaler,
            rng_torch,
            self.batches.gen,
            self.elapsed(),
            self.best_val,
        )
        self.checkpointer.save(self.raw_model, self.step, state, summary, reason)

    def final_eval(self) -> float | None:
        """The validation loss over the whole split, or over evenly spaced windows of at most
        opts.final_eval_tokens tokens of it, recorded in the checkpoint. Every rank evaluates
        its share of the windows. Ctrl+C skips it (the checkpoint is already saved)."""
        if not self.opts.final_eval:
            return None
        run, total = self._final_eval_plan()
        done = [0]

        def progress(n: int) -> None:
            done[0] += n * self.dist.world_size  # every rank goes at about the same pace
            if self.opts.on_progress is not None and self.dist.master:
                self.opts.on_progress(min(done[0], total), total)

        with StopFlag() as stop:
            try:
                loss, count = run(progress, lambda: stop.requested)
                stopped = 0.0
            except EvaluationStopped:
                loss, count, stopped = 0.0, 0, 1.0
        loss, count_all, stopped = sum_ranks([loss, float(count), stopped], self.dist)
        if stopped:
            self._notice("final validation skipped (Ctrl+C); the checkpoint is kept")
            return None
        val = loss / max(count_all, 1.0)
        self.log.emit(FullEvalEvent(event="eval", iter=self.step, val_loss_full=val))
        if self.dist.master:
            self.checkpointer.record_final_loss(val)
        return val

    def _final_eval_plan(self) -> tuple[Callable[..., tuple[float, int]], int]:
        """This rank's share of the final validation, as a call (progress, stop) -> (summed
        loss, tokens), and about how many tokens all ranks score: plain text in evenly spaced
        windows of at most opts.final_eval_tokens; conversations over every assistant token."""
        val_tokens, mask = self.dataset.val, self.dataset.mask("val")
        block, batch, rank, world = (
            self.model_cfg.block_size, self.cfg.batch_size, self.dist.rank, self.dist.world_size
        )  # fmt: skip
        if mask is not None:
            bos = chat_tokens(self.dataset.tokenizer()).bos

            def run_chat(progress: Callable[[int], None], stop: Callable[[], bool]) -> Any:
                return chat_loss_sum(
                    self.raw_model, val_tokens, mask, bos, block, batch, self.device,
                    self.autocast, shard=(rank, world), progress=progress, stop=stop,
                )  # fmt: skip

            return run_chat, int(mask.sum())
        plan = windows(len(val_tokens), block, None, self.opts.final_eval_tokens)
        total = predicted(plan)
        if total < len(val_tokens) - 1:
            self._notice(
                f"the final validation covers {total:,} of the split's {len(val_tokens) - 1:,} "
                "tokens, in evenly spaced windows (--final-eval-tokens 0 evaluates all)"
            )
        mine = plan[rank::world]

        def run_plain(progress: Callable[[int], None], stop: Callable[[], bool]) -> Any:
            return loss_sum(
                self.raw_model, val_tokens, mine, batch, self.device, self.autocast, progress, stop
            )

        return run_plain, total

    def _notice(self, text: str) -> None:
        self.log.emit(NoticeEvent(event="notice", iter=self.step, text=text))
