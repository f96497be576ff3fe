"""Saving and loading model directories with PyTorch (see model/modeldir.py for the format;
model/trainer_state.py for the trainer.pt a training checkpoint adds)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model import modeldir, trainer_state
from model.config import GPTConfig
from model.gpt import GPT
from model.modeldir import ModelDirError, ModelInfo
from model.tokenizer import Tokenizer


def state_for_saving(model: GPT) -> dict[str, torch.Tensor]:
    """The weights to store: tied weights once (the head is rebuilt from the embedding)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        sd.pop("lm_head.weight", None)
    return sd


def save(
    target: Path,
    model: GPT,
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
    replace: bool = False,
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write a complete model directory at `target`, atomically, with a training run's `state`
    as its trainer.pt (model/trainer_state.py) when given. A tokenizer whose spec names files
    (a trained BPE) must be given, so that its files are stored with the model."""
    needed = modeldir.tokenizer_files(meta["tokenizer"])
    if needed and (tokenizer is None or tokenizer.spec() != meta["tokenizer"]):
        raise ModelDirError(f"saving {target}: the tokenizer's files ({needed[0]}) are not given")
    with modeldir.staged_dir(target, replace=replace) as tmp:
        if tokenizer is not None:
            modeldir.write_tokenizer_files(tmp, tokenizer)
        write_weights(state_for_saving(model), tmp / modeldir.WEIGHTS_FILE)
        if state is not None:
            trainer_state.write(tmp, state)
        modeldir.write_json(tmp / modeldir.CONFIG_FILE, meta)


def write_weights(sd: dict[str, torch.Tensor], path: Path) -> None:
    """save_file, with a failed write (a full disk) reported as the OSError it is."""
    try:
        save_file(sd, str(path), metadata={"format": modeldir.FORMAT})
    except SafetensorError as e:  # the Rust writer wraps I/O errors: "... (os error 28)"
        found = re.search(r"os error (\d+)", str(e))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)  # the writer makes it private; keep the usual mode


def expected_shapes(config: GPTConfig) -> dict[str, torch.Size]:
    """The shape of every stored tensor a config implies, without allocating the model
    (built on the meta device: a config.json claiming a huge block_size costs nothing)."""
    with torch.device("meta"):
        model = GPT(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.tie_weights:
        expected.pop("lm_head.weight", None)
    return expected


def read_weights(info: ModelInfo) -> dict[str, torch.Tensor]:
    """The weights of a model directory, checked against its config (names, shapes, finite)
    before any model is built: memory used is the file's own size, never what config.json
    claims."""
    path = info.weights_path
    if not path.is_file():
        raise ModelDirError(f"{info.path} has no weights ({modeldir.WEIGHTS_FILE})")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"cannot read {path}: {e}") from None
    expected = expected_shapes(info.config)
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise ModelDirError(
            f"{path} does not match its config: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for k, shape in expected.items():
        if sd[k].shape != shape:
            raise ModelDirError(
                f"{path}: {k} has shape {tuple(sd[k].shape)}, config says {tuple(shape)}"
            )
    check_finite(sd, str(path))
    return sd


def check_finite(sd: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged run): they only ever produce NaN."""
    for k, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelDirError(
                f"{where}: {k} holds non-finite values (NaN or infinity); the model is broken, "
                "e.g. saved by a training run that diverged"
            )


def load(path: str | os.PathLike[str], device: str = "cpu") -> tuple[GPT, ModelInfo]:
    """Build the model a directory describes and load its weights."""
    info = modeldir.read(path)
    sd = read_weights(info)
    model = GPT(info.config)
    model.load_state_dict(sd, strict=False)
    return model.to(device), info
