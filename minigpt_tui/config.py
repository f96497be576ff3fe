"""The user's settings file: TOML in the platform's config directory.

    model / backend / theme / system       the chat's defaults (a system text starts dialogues)
    [sampling] temperature top_k top_p max_tokens seed
    [speakers] user bot
    [keys]     binding id = "key[,key]"    Textual's keymap: remap the chat app's keys

Command-line flags win over the file. `MINIGPT_TUI_CONFIG` names another file (tests use it).
A file that cannot be used (bad TOML, an unknown key, a wrong type) is reported in ONE line
naming the key, and the defaults are used instead: a typo never stops the app from starting.
Reading is bounded (model/userfile.py: a regular file, MAX_BYTES, TOML structure limits) and
cheap; Textual is imported only to check a theme or a [keys] table, torch never.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import userfile

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
    """The file's text, None when there is no file; ConfigFileError when it cannot be read (not
    a regular file: /dev/zero, a FIFO; over MAX_BYTES; not UTF-8)."""
    try:
        return userfile.read_text(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except userfile.UserFileError as e:
        raise ConfigFileError(f"config file {e}") from None
    except OSError as e:
        raise ConfigFileError(f"cannot read config file {path}: {e.strerror or e}") from None


def parse(text: str, path: Path, bindings: Iterable[Any] | None = None) -> Config:
    """The settings in `text`; ConfigFileError (one line, naming the key) when unusable.

    `bindings` are the chat app's (Textual Binding objects, or just their ids): with them the
    [keys] table is checked the way the app will apply it (check_keys). Every value is checked
    as `chat` uses it (check_values), so `config show` refuses exactly what `chat` would.
    """
    where = f"config file {path}"
    binding_list = list(bindings) if bindings is not None else None
    binding_ids = (
        {b if isinstance(b, str) else b.id for b in binding_list} if binding_list else None
    )
    try:
        data = userfile.parse_toml(text, where)
    except userfile.UserFileError as e:
        raise ConfigFileError(str(e)) from None
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
    check_values(config, where)
    if binding_list and not all(isinstance(b, str) for b in binding_list):
        check_keys(config.keys, binding_list, where)
    return config


def check_values(config: Config, where: str) -> None:
    """Values of the right type that `chat` still cannot use: ConfigFileError naming the key."""
    from minigpt_tui.dialogue import SPEAKER_NAME_RULE, valid_speaker_name
    from minigpt_tui.sampling import SamplingError, SamplingSettings
    from model.backend import BACKENDS
    from model.errors import one_of

    if config.backend is not None and config.backend not in BACKENDS:
        raise ConfigFileError(
            f"{where}: 'backend' must be {one_of(BACKENDS)}, got {config.backend!r}"[:300]
        )
    for key, name in config.speakers.items():
        if not valid_speaker_name(name):
            raise ConfigFileError(f"{where}: 'speakers.{key}' must be {SPEAKER_NAME_RULE}")
    try:
        SamplingSettings(**sampling_fields(config.sampling)).validate()
    except SamplingError as e:
        raise ConfigFileError(f"{where}: [sampling] {e}") from None
    if config.theme is not None:
        from textual.theme import BUILTIN_THEMES

        if config.theme not in BUILTIN_THEMES:
            raise ConfigFileError(
                f"{where}: 'theme' {config.theme!r} is not a Textual theme "
                "(F10 in chat lists them)"[:300]
            )


def sampling_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The file's [sampling] table as SamplingSettings fields (max_tokens -> max_new_tokens)."""
    out = dict(values)
    if "max_tokens" in out:
        out["max_new_tokens"] = out.pop("max_tokens")
    return out


# Keys must be ones a keyboard can send, and the app must keep a way to quit and to send.
MODIFIERS = ("ctrl", "alt", "shift", "meta", "super", "hyper")
PLAIN_MODIFIERS = {"ctrl", "alt", "shift"}  # every terminal can send these
KEPT_ACTIONS = ("quit", "send")


def key_name_problem(key: str) -> str | None:
    """Why `key` (Textual's "ctrl+shift+a" form) is no key a keyboard has, or None."""
    from textual.keys import Keys

    *mods, base = key.split("+")
    if not base:
        return f"{key!r} names no key"
    bad = [m for m in mods if m not in MODIFIERS]
    if bad or len(set(mods)) != len(mods):
        what = repr(bad[0]) if bad else "a repeated"
        return f"{key!r}: {what} modifier is not one of {', '.join(MODIFIERS)}"
    if len(base) == 1 and base.isprintable():
        return None
    if base in {k.value for k in Keys} or _unicode_key(base):
        return None
    return f"{key!r}: {base!r} is not a key name (e.g. a, f9, enter, escape, ctrl+g)"


def _unicode_key(name: str) -> bool:
    """Textual names a printable character's key by its Unicode name (left_square_bracket)."""
    import unicodedata

    try:
        return len(unicodedata.lookup(name.replace("_", " "))) == 1
    except KeyError:
        return False


def check_keys(keymap: dict[str, str], bindings: list[Any], where: str) -> None:
    """Refuse a [keys] table whose key names no keyboard has, or that leaves `quit` or `send`
    with no key a plain terminal sends once the app applies it (Textual's own keymap rules:
    a key given to one binding is taken from the others)."""
    from textual.binding import BindingsMap

    given: dict[str, str] = {}
    for action, keys in keymap.items():
        for key in keys.split(","):
            if problem := key_name_problem(key):
                raise ConfigFileError(f"{where}: 'keys.{action}' {problem}")
            if given.setdefault(key, action) != action:
                raise ConfigFileError(
                    f"{where}: 'keys.{action}' and 'keys.{given[key]}' both take {key}"
                )
    applied = BindingsMap(bindings)
    applied.apply_keymap(keymap)
    for action in KEPT_ACTIONS:
        kept = [
            key
            for key, bound in applied.key_to_bindings.items()
            for b in bound
            if b.id == action and set(key.split("+")[:-1]) <= PLAIN_MODIFIERS
        ]
        if not kept:
            culprit = next(
                (a for a, k in keymap.items() if a != action and _takes(k, bindings, action)),
                action,
            )
            raise ConfigFileError(
                f"{where}: 'keys.{culprit}' leaves no key that a terminal sends for "
                f"'{action}' (keys.{action} must keep one, e.g. ctrl+q for quit)"
            )


def _takes(keys: str, bindings: list[Any], action: str) -> bool:
    """Whether `keys` include a default key of `action`'s binding."""
    defaults = {k for b in bindings if b.id == action for k in b.key.split(",")}
    return bool(defaults & set(keys.split(",")))


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


def load(bindings: Iterable[Any] | None = None) -> tuple[Config, str | None]:
    """The settings in effect, and the one line saying why the file was not used (if so)."""
    path = config_path()
    try:
        text = read_text(path)
        return (parse(text, path, bindings) if text is not None else Config()), None
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
