"""The model directory: the one checkpoint format every command reads and writes.

    config.json        model config, tokenizer spec, training config and summary
    tokenizer.json     the trained BPE (tokenizer kind "bpe" only; `tokenizers`' own format)
    chat_template.jinja  the chat template, for a chat model (its tokenizer spec says
                       "chat": true; see model/chat.py), as transformers saves it
    model.safetensors  weights (PyTorch backend)
    model.onnx         ONNX export with KV cache (onnxruntime backend), optional
    trainer.pt         optimizer, step, RNG and data position, for --resume (optional)

A training run directory holds step-NNNNNN/ model directories and a `latest` link to the
newest complete one; every command accepts the run directory in place of `latest`.

Torch-free: the inference path reads config.json through this module. Every write goes to a
temporary name first, is fsynced, then renamed into place, so a crash never leaves a
half-written file or checkpoint behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model import userfile
from model.config import ConfigError, GPTConfig
from model.tokenizer import (
    GPT2_EOT,
    TEMPLATE_FILE,
    TURN_TEXTS,
    Tokenizer,
    TokenizerError,
    WithTokenizer,
    spec_is_chat,
)

FORMAT = "minigpt-tui/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
TRAINER_FILE = "trainer.pt"
LATEST = "latest"
MAX_CONFIG_BYTES = 64 * 1024 * 1024
# The section of a Hugging Face config.json (export hf) that keeps what its own keys cannot
# say (tokenizer spec, bias), so that `convert hf` restores the model exactly.
HF_SECTION = "minigpt_tui"


class ModelDirError(ValueError):
    """A path that is not a usable model directory."""


@dataclass
class ModelInfo(WithTokenizer):
    path: Path
    config: GPTConfig
    meta: dict[str, Any]  # the whole config.json

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    @property
    def has_onnx(self) -> bool:
        return self.onnx_path.is_file()

    @property
    def is_chat(self) -> bool:
        """A chat model: its tokenizer has the chat format's special tokens (model/chat.py)."""
        return spec_is_chat(self.tokenizer_spec)

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored with a chat model (chat_template.jinja); None for a
        model that does not chat."""
        if not self.is_chat:
            return None
        try:
            return (self.path / TEMPLATE_FILE).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelDirError(f"cannot read {self.path / TEMPLATE_FILE}: {e}") from None


def resolve(path: str | os.PathLike[str]) -> Path:
    """A model directory, a run directory (its latest checkpoint), or a file inside one."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in (".onnx", ".safetensors", ".json"):
        p = p.parent
    if not p.exists():
        raise ModelDirError(f"model not found: {path}")
    if (p / CONFIG_FILE).is_file():
        return p
    if (p / LATEST / CONFIG_FILE).is_file():
        return latest_target(p)
    if (p / CONFIG_FILE).exists():  # a FIFO or a device would block or stream forever
        raise ModelDirError(f"{p / CONFIG_FILE} is {_kind(p / CONFIG_FILE)}, not a regular file")
    raise ModelDirError(f"{path} is not a model directory (no {CONFIG_FILE})")


def latest_target(run: Path) -> Path:
    """Where run/latest leads, resolved. ModelDirError unless it names an entry of the run
    directory itself (what training writes: `latest -> step-NNNNNN`): a link to another
    model or run would be loaded, and labelled, as this run's checkpoint."""
    link = run / LATEST
    if link.is_symlink():
        name = os.path.normpath(os.readlink(link))
        if os.path.isabs(name) or os.sep in name or name in (os.curdir, os.pardir):
            raise ModelDirError(
                f"{link} points at {name}, outside the run directory; a run's latest must "
                "name one of its own checkpoints"
            )
    return link.resolve()


def _kind(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    return userfile.kind(path.stat().st_mode)


def read(path: str | os.PathLike[str]) -> ModelInfo:
    p = resolve(path)
    cfg_path = p / CONFIG_FILE
    try:
        meta = json.loads(userfile.read_text(cfg_path, MAX_CONFIG_BYTES))
    except userfile.UserFileError as e:
        raise ModelDirError(f"{e}; it cannot be a model config") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, UTF-8, numbers
        raise ModelDirError(f"cannot read {cfg_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelDirError(f"{cfg_path} is not a minigpt-tui model config")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("tokenizer"), dict):
        raise ModelDirError(f"{cfg_path} lacks the 'model' or 'tokenizer' section")
    try:
        config = GPTConfig.from_dict(meta["model"])
        tok_vocab = _spec_vocab_size(meta["tokenizer"])
    except (ConfigError, TokenizerError, TypeError) as e:
        raise ModelDirError(f"{cfg_path}: {e}") from None
    for name in tokenizer_files(meta["tokenizer"]):
        if not (p / name).is_file():
            raise ModelDirError(f"{p} lacks {name}, the tokenizer its config names")
    if tok_vocab is not None and tok_vocab > config.vocab_size:
        raise ModelDirError(
            f"{cfg_path}: tokenizer has {tok_vocab} tokens but the model only {config.vocab_size}"
        )
    return ModelInfo(path=p, config=config, meta=meta)


def _spec_vocab_size(spec: dict[str, Any]) -> int | None:
    turns = len(TURN_TEXTS) if spec_is_chat(spec) else 0
    if spec.get("kind") == "char":
        chars = spec.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError("char tokenizer spec has no 'chars' string")
        return len(chars) + (1 + turns if turns else 0)  # <|endoftext|> and the turns
    if spec.get("kind") == "gpt2":
        return GPT2_EOT + 1 + turns
    if spec.get("kind") == "bpe":
        n = spec.get("vocab_size")
        if not isinstance(n, int) or isinstance(n, bool):
            raise TokenizerError("bpe tokenizer spec has no 'vocab_size'")
        return n
    raise TokenizerError(f"unknown tokenizer kind {spec.get('kind')!r}")


def tokenizer_files(spec: dict[str, Any]) -> list[str]:
    """The files a tokenizer spec names, kept next to config.json (and meta.json): a trained
    BPE's tokenizer.json, and a chat tokenizer's chat_template.jinja."""
    template = [TEMPLATE_FILE] if spec_is_chat(spec) else []
    name = spec.get("file")
    if not isinstance(name, str):
        return template
    reserved = (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, TRAINER_FILE, TEMPLATE_FILE)
    if Path(name).name != name or name in reserved:
        raise TokenizerError(f"bad tokenizer file name {name!r}")
    return [name, *template]


def write_tokenizer_files(directory: Path, tokenizer: Tokenizer) -> None:
    """Store the files a tokenizer needs (a trained BPE's tokenizer.json) in a directory
    being staged (see staged_dir, which fsyncs them)."""
    for name, content in tokenizer.files().items():
        (directory / name).write_bytes(content)


def copy_tokenizer_files(info: ModelInfo, directory: Path) -> None:
    """Copy a model's tokenizer files into another model directory being staged."""
    for name in tokenizer_files(info.tokenizer_spec):
        shutil.copyfile(info.path / name, directory / name)


def make_meta(
    config: GPTConfig,
    tokenizer: Tokenizer,
    *,
    name: str | None = None,
    training: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "model": config.to_dict(),
        "tokenizer": tokenizer.spec(),
        "training": training or {},
        "summary": summary or {},
    }
    meta.update(extra)
    return meta


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block succeeds.

    The file is fsynced before the rename, so readers see the old content or the new, never a
    mix; if the block fails the temporary file is removed. The parent directory must exist.
    Only a regular file is ever replaced: a device, FIFO, socket or directory at `path` is
    refused (ModelDirError), and a link to a regular file is written through (the link stays).
    """
    path = replaceable(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; keep the usual mode
        replaceable(path)  # checked again: the path may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def replaceable(path: Path) -> Path:
    """The file to write for `path`: itself, or the regular file a link at it points to.
    ModelDirError when what is there is not a regular file (nothing else is ever replaced)."""
    if path.is_symlink():
        path = path.resolve()
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise ModelDirError(f"{path} is {userfile.kind(mode)}; only a regular file is replaced")
    return path


def check_output(
    path: Path, *, force: bool, directory: bool = False, inputs: Sequence[Path] = ()
) -> None:
    """Refuse, before any work, an output whose parent directory is missing, that is or lies
    inside one of the command's `inputs` (or holds one), or that exists and would be replaced
    without `force`. A file output may only replace a regular file; a directory output only an
    empty directory or a model directory (one with config.json), never arbitrary files."""
    parent = path.parent
    if not parent.is_dir():
        raise ModelDirError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ModelDirError(f"cannot write to {parent}: permission denied")
    check_not_input(path, inputs)
    if not (path.exists() or path.is_symlink()):
        return
    if directory:
        if path.is_symlink() or not path.is_dir():
            raise ModelDirError(f"{path} exists and is not a directory")
        contents = {p.name for p in path.iterdir()}
        if not contents:
            return
        if CONFIG_FILE not in contents:
            raise ModelDirError(f"{path} exists and is not a model directory; choose another --out")
    elif path.is_dir():
        raise ModelDirError(f"{path} is a directory; --out takes a file name")
    else:
        replaceable(path)
    if not force:
        raise ModelDirError(f"{path} already exists; pass --force to replace it")


def check_not_input(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output that is one of the inputs, lies inside one, or holds one: writing it
    would replace what the command is reading."""
    for source in inputs:
        if userfile.is_inside(out, source) or userfile.is_inside(source, out):
            raise ModelDirError(
                f"--out {out} would replace or go inside {source}, which this command reads; "
                "choose an --out elsewhere"
            )


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at `final` only when complete.

    Files written inside are fsynced before the rename. With replace=True an existing
    `final` is swapped out only after the new one is complete.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise ModelDirError(f"{final} already exists")
    if (final.exists() or final.is_symlink()) and (final.is_symlink() or not final.is_dir()):
        raise ModelDirError(f"{final} exists and is not a directory; only a directory is replaced")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is a normal dir
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())  # the same mode for every file, whoever wrote it
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def point_latest(run_dir: Path, target: Path) -> None:
    """Atomically make run_dir/latest point at the checkpoint directory `target`."""
    link = run_dir / LATEST
    tmp = run_dir / f".{LATEST}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)
    fsync_dir(run_dir)
