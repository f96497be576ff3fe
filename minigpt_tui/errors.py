"""Errors that mean 'the user asked for something that cannot be done', shown as one line."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: reported as a single line and a non-zero exit, never a traceback."""


def known_errors() -> tuple[type[BaseException], ...]:
    """Every error type the package raises for bad input (imported lazily, all torch-free)."""
    from export.options import ExportError
    from minigpt_tui.sampling import SamplingError
    from model.backend import EngineError
    from model.chat import ChatFormatError
    from model.config import ConfigError
    from model.data import DataError
    from model.errors import TrainingError
    from model.modeldir import ModelDirError
    from model.tokenizer import TokenizerError

    return (
        UserError,
        ConfigError,
        DataError,
        ModelDirError,
        TokenizerError,
        EngineError,
        SamplingError,
        ExportError,
        TrainingError,
        ChatFormatError,
    )
