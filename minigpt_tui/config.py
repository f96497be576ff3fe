"""The user's settings file: TOML in the platform's config directory.

    model / backend / theme / system       the chat's defaults (a system text starts dialogues)
    [sampling] temperature top_k top_p max_tokens seed
    [speakers] user bot
    [keys]     binding id = "key[,key]"    Textual's keymap: remap the chat app's keys

Command-line flags win over the file. `MINIGPT_TUI_CONFIG` names another file (tests use it).
A file that cannot be used (bad TOML, an unknown key, a wrong type) is reported in ONE line
naming the key, and the defaults are used instead: a typo never stops the app from starting.
Reading is cheap (one small file, tomllib); nothing here imports Textual or torch.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "MINIGPT_TUI_CONFIG"
FILE_NAME = "config.toml"
MAX_BYTES = 1024 * 1024  # a settings file is a few lines; refuse anything huge

# Every key the file may hold: top level, then tables. The type is what TOML must give.
TOP: dict[str, type] = {"model": str, "backend": str, "theme": str, "system": str}
TABLES: dict[str, dict[str, type]] = {
    "sampling": {
        "temperature": float,
        "top_k": int,
        "top_p": float,
        "max_tokens": int,
        "seed": int,
    },
    "speakers": {"user": str, "bot": str},
}
TYPE_NAMES = {str: "a string", float: "a number", int: "a whole number"}

DEFAULT_FILE = """\
# minigpt-tui settings (TOML). Every line is optional; command-line flags win over this file.
# `minigpt-tui config show` prints what is in effect, `minigpt-tui config path` where this is.

# model = "shakespeare-char"   # a bundled model's name, a model directory or a run directory
# backend = "auto"             # auto (ONNX when exported), torch or onnx
# theme = "textual-dark"       # a Textual theme; F10 in chat picks one and writes it here
# system = "You are a helpful assistant."   # a text every dialogue starts with

[sampling]
# temperature = 0.8            # 0 means greedy
# top_k = 0                    # 0 is off
# top_p = 1.0                  # 1.0 is off
# max_tokens = 256
# seed = 42

[speakers]
# user = "ROMEO"
# bot = "JULIET"

[keys]
# Remap the chat app's keys: binding id = "key" (or "key1,key2"). The ids are listed by F1
# in the app and in the README, e.g.
# send = "ctrl+g"
# switch_model = "f6"
"""


class ConfigFileError(ValueError):
    """The settings file cannot be used; the message is one line naming the key."""


@dataclass
class Config:
    model: str | None = None
    backend: str | None = None
    theme: str | None = None
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # only the keys the file sets
    speakers: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> keys


def config_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("minigpt-tui")) / FILE_NAME


def read_text(path: Path) -> str | None:
    """The file's text, None when there is no file; ConfigFileError when it cannot be read."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigFileError(f"config file {path} is over {MAX_BYTES // 1024} KiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path} is not UTF-8 text") from None
    except OSError as e:
        raise ConfigFileError(f"cannot read config file {path}: {e.strerror or e}") from None


def parse(text: str, path: Path, binding_ids: set[str] | None = None) -> Config:
    """The settings in `text`; ConfigFileError (one line, naming the key) when unusable."""
    where = f"config file {path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{where} is not valid TOML ({e})") from None
    config = Config()
    for key, value in data.items():
        if key in TOP:
            setattr(config, key, _check(value, TOP[key], key, where))
        elif key in TABLES:
            if not isinstance(value, dict):
                raise ConfigFileError(f"{where}: [{key}] must be a table")
            target = config.sampling if key == "sampling" else config.speakers
            for sub, v in value.items():
                if sub not in TABLES[key]:
                    known = ", ".join(TABLES[key])
                    raise ConfigFileError(f"{where}: unknown key '{key}.{sub}' (known: {known})")
                target[sub] = _check(v, TABLES[key][sub], f"{key}.{sub}", where)
        elif key == "keys":
            if not isinstance(value, dict):
                raise ConfigFileError(f"{where}: [keys] must be a table")
            for action, keys in value.items():
                if binding_ids is not None and action not in binding_ids:
                    raise ConfigFileError(
                        f"{where}: unknown key 'keys.{action}' (not a binding id; "
                        "F1 in chat and the README list them)"
                    )
                keys = _check(keys, str, f"keys.{action}", where)
                if not keys.strip() or any(not k.strip() for k in keys.split(",")):
                    raise ConfigFileError(f"{where}: 'keys.{action}' names no key")
                config.keys[action] = keys.replace(" ", "")
        else:
            known = ", ".join([*TOP, *TABLES, "keys"])
            raise ConfigFileError(f"{where}: unknown key '{key}' (known: {known})")
    return config


def _check(value: Any, kind: type, key: str, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigFileError(
            f"{where}: '{key}' must be {TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"[
                :300
            ]
        )
    return value


def load(binding_ids: set[str] | None = None) -> tuple[Config, str | None]:
    """The settings in effect, and the one line saying why the file was not used (if so)."""
    path = config_path()
    try:
        text = read_text(path)
        return (parse(text, path, binding_ids) if text is not None else Config()), None
    except ConfigFileError as e:
        return Config(), str(e)


def create_default(path: Path) -> bool:
    """Write the commented default file if there is none; never touches an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(DEFAULT_FILE)
    except FileExistsError:
        return False
    return True


THEME_LINE = re.compile(r"^\s*#?\s*theme\s*=.*$", re.MULTILINE)
TABLE_LINE = re.compile(r"^\s*\[", re.MULTILINE)


def remember_theme(name: str) -> str | None:
    """Set `theme = "name"` in the file (made from the default if missing), keeping every other
    line as the user wrote it. Returns why it could not, if it could not (a broken file is left
    alone)."""
    path = config_path()
    try:
        text = read_text(path)
        if text is None:
            text = DEFAULT_FILE
        parse(text, path)  # never rewrite a file that does not parse
    except ConfigFileError as e:
        return f"theme not remembered: {e}"
    line = f'theme = "{name}"'
    head_end = m.start() if (m := TABLE_LINE.search(text)) else len(text)
    head, tail = text[:head_end], text[head_end:]
    live = [m for m in THEME_LINE.finditer(head) if not m.group().lstrip().startswith("#")]
    found = live[0] if live else None
    if found is None:  # the commented example, else a new line before the first table
        found = next(THEME_LINE.finditer(head), None)
    if found is not None:
        head = head[: found.start()] + line + head[found.end() :]
    else:
        head = head + ("" if head.endswith("\n") or not head else "\n") + line + "\n"
    from model.modeldir import atomic_write_bytes

    try:
        atomic_write_bytes(path, (head + tail).encode("utf-8"))
    except OSError as e:
        return f"theme not remembered: cannot write {path}: {e.strerror or e}"
    return None
