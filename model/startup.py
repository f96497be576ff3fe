"""What a training job starts from, decided before anything trains.

`prepare` checks the run directory, the configs and the data, and loads what the run starts
from: a fresh model, another model's weights and shape (--init-from), or the run's latest
checkpoint with its trainer.pt (--resume: model/trainer_state.py); and fits grad_accum to the
number of processes. Every refusal is one line (TrainingError or ConfigError), raised before
--force clears the run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import checkpoint, modeldir, rundir, trainer_state
from model.config import ConfigError, GPTConfig, TrainConfig
from model.data import META_FILE, Dataset, load_dataset
from model.device import Dist
from model.errors import TrainingError
from model.events import Event
from model.gpt import GPT
from model.tokenizer import reads


@dataclass
class RunOptions:
    """What the user asked of a training job, besides its model and train settings."""

    data: Path
    out: Path
    device: str = "auto"
    resume: bool = False
    force: bool = False
    init_from: str | None = None
    preset: str | None = None
    bpe_dir: str | None = None
    final_eval: bool = True
    # The final validation predicts at most this many tokens (evenly spaced windows; a split
    # that fits is evaluated whole); None: the whole split, however long.
    final_eval_tokens: int | None = 1_000_000
    command: str = ""  # the command line, recorded in config.json
    on_event: Callable[[Event], None] | None = None
    on_progress: Callable[[int, int], None] | None = None  # the final validation's (done, total)
    sample: Callable[[GPT, Any, int], str] | None = None  # (model, tokenizer, iter) -> text
    text_data: Path | None = None  # plain-text data evaluated before and after (forgetting)
    extra_meta: dict[str, Any] = field(default_factory=dict)
    peak_flops: float | None = None  # the device's peak FLOP/s for MFU (default: PEAK_FLOPS)


@dataclass
class Start:
    """What a job trains: its configs and data, and the weights and state it starts from."""

    model_cfg: GPTConfig
    train_cfg: TrainConfig
    dataset: Dataset
    model: GPT | None = None  # the weights of --init-from or --resume; None: a fresh model
    state: dict[str, Any] | None = None  # --resume: the checkpoint's trainer.pt
    notices: list[str] = field(default_factory=list)  # settings start-up changed, and why
    text_data: Dataset | None = None  # --text-data: plain text the model is evaluated on


def prepare(
    model_cfg_in: dict[str, Any], train_cfg_in: dict[str, Any], opts: RunOptions, dist_info: Dist
) -> Start:
    """Check the configs, data and run directory, and load what the run starts from.

    model_cfg_in / train_cfg_in: preset values already merged with the user's overrides
    (without vocab_size, which comes from the data). On --resume, the checkpoint's configs are
    used: train_cfg_in holds only the settings to change, and model_cfg_in may only repeat
    the checkpoint's model config.
    """
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
    notices: list[str] = []
    if opts.init_from:
        model, model_cfg, notices = _init_from(opts.init_from, model_cfg_in, dataset)
    else:
        model_cfg = GPTConfig.from_dict({"vocab_size": dataset.vocab_size, **model_cfg_in})
    if dataset.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"the data has {dataset.vocab_size} tokens, the model only {model_cfg.vocab_size}"
        )
    train_cfg = TrainConfig.from_dict(train_cfg_in)
    train_cfg.validate()
    notices += fit_grad_accum(train_cfg, dist_info)
    dataset.require_windows(model_cfg.block_size)
    text_data = _text_data(opts.text_data, dataset, model_cfg.block_size)
    if opts.force and dist_info.master and out.is_dir():
        rundir.clear(out)
    return Start(model_cfg, train_cfg, dataset, model, notices=notices, text_data=text_data)


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
    state = trainer_state.load(info)
    train_cfg = _resumed_train_config(info, train_cfg_in)
    notices = fit_grad_accum(train_cfg, dist_info)
    dataset = load_dataset(opts.data, info.config.block_size)
    if dataset.tokenizer_spec != info.tokenizer_spec:
        hint = ""
        if dataset.is_chat and not info.is_chat:
            hint = f" (it has no chat tokens: fine-tune it on chat data with --init-from {out})"
        raise TrainingError(f"--resume: the data's tokenizer differs from the checkpoint's{hint}")
    text_data = _text_data(opts.text_data, dataset, info.config.block_size)
    model, _ = checkpoint.load(info.path)
    return Start(info.config, train_cfg, dataset, model, state, notices, text_data)


def _resumed_train_config(info: modeldir.ModelInfo, train_cfg_in: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training config with the settings the user changes; the optimizer
    stays the checkpoint's (its trainer.pt holds that optimizer's state)."""
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
    return train_cfg


def _init_from(
    source: str, model_cfg_in: dict[str, Any], dataset: Dataset
) -> tuple[GPT, GPTConfig, list[str]]:
    """Another model's weights and shape; only the block size (shorter) and dropout may change.
    A plain model fine-tuned on chat data grows its vocabulary for the chat tokens."""
    model, info = checkpoint.load(source)
    notices = _fit_tokenizer(model, info, dataset)
    base = model.config.to_dict()
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
    return model, GPTConfig.from_dict(base), notices


def _fit_tokenizer(model: GPT, info: modeldir.ModelInfo, dataset: Dataset) -> list[str]:
    """--init-from needs the data in the model's tokenizer, or (chat data) in its chat version
    (model/tokenizer.py chat_version: every id kept, the chat tokens after them), for which the
    model's embedding and head grow (GPT.grow_vocab). Returns what it did, as notices."""
    if info.tokenizer_spec == dataset.tokenizer_spec:
        return []
    plain, data = info.tokenizer(), dataset.tokenizer()
    where = f"--init-from: {info.path}"
    if data.chat is None or plain.chat is not None:
        raise TrainingError(f"{where}'s tokenizer does not match the data's")
    if plain.kind != data.kind:
        raise TrainingError(
            f"{where} has a {plain.kind} tokenizer, the chat data {data.kind}: a chat model is "
            f"fine-tuned from a model of its own tokenizer (data prepare --tokenizer-from MODEL)"
        )
    if not reads(data, plain):
        raise TrainingError(
            f"{where}'s tokenizer is not the one the chat data was made with; prepare the data "
            "with data prepare --tokenizer-from MODEL"
        )
    new = range(plain.vocab_size, data.vocab_size)
    before = model.config.vocab_size
    model.grow_vocab(new)
    grown = (
        f"grows from {before:,} to {model.config.vocab_size:,} tokens"
        if model.config.vocab_size > before
        else f"keeps its padded {before:,} rows"
    )
    return [
        f"the model's vocabulary {grown} for the chat tokens (ids {new.start:,} to "
        f"{new.stop - 1:,}), which start at the mean of the other tokens' embeddings"
    ]


def _text_data(path: Path | None, dataset: Dataset, block_size: int) -> Dataset | None:
    """--text-data: plain text in the tokenizer of the data (or the one it grew from), whose
    loss is measured before and after training, so that forgetting shows."""
    if path is None:
        return None
    text = load_dataset(path, block_size)
    if text.is_chat:
        raise TrainingError(f"--text-data: {path} holds conversations; give plain-text data")
    if not reads(dataset.tokenizer(), text.tokenizer()):
        raise TrainingError(f"--text-data: {path} was tokenized differently from the training data")
    return text


def fit_grad_accum(cfg: TrainConfig, dist_info: Dist) -> list[str]:
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
