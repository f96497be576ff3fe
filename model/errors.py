"""How every layer words its one-line errors, and the error of a training run that cannot go on
(torch-free; the lowest layer, so all can use it)."""

from __future__ import annotations

from collections.abc import Sequence


class TrainingError(RuntimeError):
    """A run that cannot start or continue (shown to the user as one line): raised by its
    start-up (model/startup.py), its trainer.pt (model/trainer_state.py) and its loop."""


def first_line(e: BaseException) -> str:
    """The first line of an error's message (libraries raise long reports), or its type name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def one_of(choices: Sequence[str]) -> str:
    """("auto", "torch", "onnx") -> "auto, torch or onnx", for help texts and errors."""
    if len(choices) < 2:
        return "".join(choices)
    return f"{', '.join(choices[:-1])} or {choices[-1]}"
