"""Saving and loading model directories with PyTorch (see model/modeldir.py for the format)."""

from __future__ import annotations

import errno
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model import modeldir
from model.errors import first_line
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
    trainer_state: dict[str, Any] | None = None,
    replace: bool = False,
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write a complete model directory at `target`, atomically. A tokenizer whose spec names
    files (a trained BPE) must be given, so that its files are stored with the model."""
    needed = modeldir.tokenizer_files(meta["tokenizer"])
    if needed and (tokenizer is None or tokenizer.spec() != meta["tokenizer"]):
        raise ModelDirError(f"saving {target}: the tokenizer's files ({needed[0]}) are not given")
    with modeldir.staged_dir(target, replace=replace) as tmp:
        if tokenizer is not None:
            modeldir.write_tokenizer_files(tmp, tokenizer)
        write_weights(state_for_saving(model), tmp / modeldir.WEIGHTS_FILE)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / modeldir.TRAINER_FILE)
        modeldir.write_json(tmp / modeldir.CONFIG_FILE, meta)


def write_weights(sd: dict[str, torch.Tensor], path: Path) -> None:
    """save_file, with a failed write (a full disk) reported as the OSError it is."""
    try:
        save_file(sd, str(path), metadata={"format": modeldir.FORMAT})
    except SafetensorError as e:  # the Rust writer wraps I/O errors: "... (os error 28)"
        found = re.search(r"os error (\d+)", str(e))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None


def load_weights(info: ModelInfo, model: GPT) -> None:
    path = info.weights_path
    if not path.is_file():
        raise ModelDirError(f"{info.path} has no weights ({modeldir.WEIGHTS_FILE})")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"cannot read {path}: {e}") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        expected.pop("lm_head.weight", None)
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
    model.load_state_dict(sd, strict=False)


def load(path: str | os.PathLike[str], device: str = "cpu") -> tuple[GPT, ModelInfo]:
    """Build the model a directory describes and load its weights."""
    info = modeldir.read(path)
    model = GPT(info.config)
    load_weights(info, model)
    return model.to(device), info


def load_trainer_state(info: ModelInfo) -> dict[str, Any]:
    path = info.path / modeldir.TRAINER_FILE
    if not path.is_file():
        raise ModelDirError(f"{info.path} has no {modeldir.TRAINER_FILE}; cannot resume from it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ModelDirError(f"cannot load {path}: {first_line(e)}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ModelDirError(f"{path} is not a minigpt-tui trainer state")
    return state
