"""Reading a file the user names, bounded: the one reader every command uses for them.

    read_bytes(path, limit)        a regular file's bytes, at most `limit` of them
    read_text(path, limit)         the same, as UTF-8 text
    read_toml(path, limit)         a TOML document, its structure checked before it is parsed

A path that is not a regular file (a device such as /dev/zero, a FIFO, a socket, a directory)
is refused before a byte is read, and a FIFO is opened without waiting for a writer. The byte
limit is enforced by the read itself (limit + 1 bytes asked for), never by trusting `stat`,
which says 0 for devices and files that grow. TOML is scanned for nesting depth (brackets and
dotted keys) and the number of keys before tomllib sees it: a few kilobytes of dotted keys cost
tomllib gigabytes and minutes, deep brackets a RecursionError. Torch-free.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

TOML_MAX_BYTES = 1 << 20  # a settings or training config file is a few lines
TOML_MAX_DEPTH = 16  # brackets and dotted-key segments, together
TOML_MAX_KEYS = 4096  # assignments and table headers


class UserFileError(ValueError):
    """A user-named file that cannot be read as asked; the message is one line."""


class TooLarge(UserFileError):
    """A file that holds more than the reader's limit."""


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words, from its st_mode."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading if it is a regular file (links followed); UserFileError if it
    is anything else. FileNotFoundError (an OSError) is left to the caller to word."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserFileError(f"{path} is {kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most `limit` bytes of a regular file; UserFileError if it is not one or holds more."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is over {_size(limit)}")
    return data


def read_text(path: str | os.PathLike[str], limit: int) -> str:
    """A regular file of at most `limit` bytes as UTF-8 text (UserFileError otherwise)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserFileError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_toml(path: str | os.PathLike[str], limit: int) -> dict[str, Any]:
    """A TOML file read with read_text and checked with check_toml before it is parsed."""
    return parse_toml(read_text(path, limit), str(path))


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """tomllib.loads after check_toml; every failure is one UserFileError line."""
    import tomllib  # here: most commands read no TOML, and a cold start should not pay for it

    check_toml(text, where)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserFileError(f"{where} is not valid TOML ({e})") from None
    except RecursionError:  # check_toml's depth limit makes this unreachable; kept as a net
        raise UserFileError(f"{where} nests deeper than {TOML_MAX_DEPTH} levels") from None


# Strings and comments first (their brackets and dots do not count), then the marks that do.
_TOML_TOKEN = re.compile(
    r'"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\''
    r"|#[^\n]*|[\[\]{}.=,\n]|[^\s\"'#\[\]{}.=,]+|\s+|.",
    re.DOTALL,
)


def check_toml(text: str, where: str) -> None:
    """Refuse TOML whose nesting (brackets plus dotted-key segments) exceeds TOML_MAX_DEPTH or
    that has more than TOML_MAX_KEYS keys; one linear pass, before tomllib runs."""
    depth = chain = keys = 0
    for m in _TOML_TOKEN.finditer(text):
        token = m.group()
        if token == ".":
            chain += 1
        elif token[0] in " \t" or token[0] in "\"'" or token[0] not in "[]{}=,\n#":
            pass  # a key or value part, a string or blanks: a dotted chain goes on
        else:
            chain = 0
            if token in "[{":
                depth += 1
            elif token in "]}":
                depth = max(depth - 1, 0)
            if token == "=" or (token == "[" and depth == 1):
                keys += 1
        if depth + chain > TOML_MAX_DEPTH:
            raise UserFileError(f"{where} nests deeper than {TOML_MAX_DEPTH} levels")
        if keys > TOML_MAX_KEYS:
            raise UserFileError(f"{where} has more than {TOML_MAX_KEYS} keys")


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def is_inside(path: Path, other: Path) -> bool:
    """Whether `path` is `other` or lies inside it, after resolving links (both may not exist)."""
    return path.resolve().is_relative_to(other.resolve())
