"""Finding a model by path or by the name of a bundled one."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_MODEL = "shakespeare-char"


def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model(model: str | Path | None) -> Path:
    """A bundled model's name, or a path; None means the bundled default."""
    if model is None or str(model) == "":
        model = DEFAULT_MODEL
    p = Path(model).expanduser()
    if not p.exists() and (BUNDLED_DIR / str(model) / "config.json").is_file():
        return BUNDLED_DIR / str(model)
    return p
