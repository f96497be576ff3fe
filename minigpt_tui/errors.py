"""Errors that mean 'the user asked for something that cannot be done', shown as one line."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input: reported as a single line and a non-zero exit, never a traceback."""


def known_errors() -> tuple[type[BaseException], ...]:
    """Every error type the package raises for bad input (imported lazily, all torch-free)."""
    from export import ExportError
    from minigpt_tui.engine import EngineError
    from minigpt_tui.sampling import SamplingError
    from model.config import ConfigError
    from model.data import DataError
    from model.modeldir import ModelDirError
    from model.tokenizer import TokenizerError

    found: tuple[type[BaseException], ...] = (
        UserError,
        ConfigError,
        DataError,
        ModelDirError,
        TokenizerError,
        EngineError,
        SamplingError,
        ExportError,
    )
    # Errors of torch-side modules: only raised when their module ran, so importing them
    # here only when already loaded keeps this function torch-free.
    train = sys.modules.get("model.train")
    if train is not None:
        found += (train.TrainingError,)
    return found
