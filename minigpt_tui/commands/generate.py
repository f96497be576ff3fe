"""`minigpt-tui generate`: stream a model's continuation of a prompt to stdout, or (`--chat`,
`--messages`) a chat model's next assistant reply to a conversation."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from minigpt_tui.errors import UserError
from model.backend import BACKENDS, check_backend, check_threads
from model.errors import one_of

if TYPE_CHECKING:
    from minigpt_tui.generation import Generation
    from minigpt_tui.sampling import SamplingSettings
    from model.backend import Backend
    from model.chat import Message
    from model.tokenizer import Tokenizer

MAX_MESSAGES_BYTES = 16 << 20
STOP_WORDS = {  # GenerationStats.stop_reason, for --stats
    "length": "length",
    "stop": "stop",
    "cancelled": "cancelled",
    "eot": "eot",
    "end": "end of turn",
}  # a --messages file: a conversation, not a corpus

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """Turn the escapes \\n, \\t, \\r and \\\\ into the characters they name (for --stop)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_prompt(prompt: str | None) -> str:
    """PROMPT itself; stdin when PROMPT is '-', or when it is omitted and stdin is piped."""
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(
                f"the prompt on stdin is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
    return prompt or ""


CHAT_OPTION = typer.Option(
    None,
    "--chat",
    help="A chat model's next reply to this message (printed alone, ends at end of turn).",
    show_default=False,
)
SYSTEM_OPTION = typer.Option(
    None, "--system", help="The system turn for --chat / --messages.", show_default=False
)
MESSAGES_OPTION = typer.Option(
    None,
    "--messages",
    help='A JSON file with the conversation so far ({"messages": [{"role", "content"}]} or '
    "the list): print the next assistant reply (after --chat's message, if given).",
    show_default=False,
)


def generate(
    prompt: str | None = typer.Argument(
        None,
        help="Text to continue. '-' reads it from stdin, as does leaving it out when stdin is "
        "piped. Empty: start from end-of-text (or a newline).",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A model directory, a run directory (its latest checkpoint), a model.onnx inside a "
        "model directory, or the name of a bundled model. Default: the bundled model.",
        show_default=False,
    ),
    max_tokens: int = typer.Option(256, "--max-tokens", "-n", help="Most new tokens to write."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 means greedy."),
    top_k: int = typer.Option(0, "--top-k", help="Sample from the k likeliest tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", help="> 1 discourages tokens already in the context."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for a reproducible run."),
    backend: str = typer.Option(
        "auto", "--backend", help=f"{one_of(BACKENDS)}; auto uses ONNX when exported."
    ),
    stop: list[str] = typer.Option(
        [],
        "--stop",
        help="Stop before this text (repeatable; \\n means a newline).",
        show_default=False,
    ),
    stats: bool = typer.Option(
        False, "--stats", help="Print time to first token and tokens/s to stderr."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for the model.", show_default=False
    ),
    echo: bool = typer.Option(False, "--echo", help="Print the prompt before the continuation."),
    unknown_chars: str = typer.Option(
        "error",
        "--unknown-chars",
        help="Prompt characters a character-level model does not know: error or drop.",
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device (cpu, cuda, mps)."),
    chat: str | None = CHAT_OPTION,
    system: str | None = SYSTEM_OPTION,
    messages: Path | None = MESSAGES_OPTION,
) -> None:
    """Continue PROMPT with a model, streaming tokens to stdout as they are made.

    Only the generated continuation is printed (add --echo to print the prompt first).
    --chat or --messages: a chat model's next reply instead, printed alone."""
    from minigpt_tui.generation import Generation

    talk = _conversation(prompt, chat, system, messages, echo)
    settings = _checked_flags(
        backend,
        unknown_chars,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_tokens,
        seed=seed,
        stop=[unescape(s) for s in stop],
    )
    text = read_prompt(prompt) if talk is None else ""
    engine, load_seconds = _load(model, backend, device, threads)
    tokenizer = engine.info.tokenizer()
    if talk is None:
        ids, dropped = _encode(tokenizer, text, unknown_chars)
    else:
        ids, dropped = _chat_ids(tokenizer, talk, unknown_chars, engine.block_size, settings)
    if dropped:
        text = tokenizer.decode(ids)  # what the model was given: --echo shows no dropped chars
    gen = Generation(engine, tokenizer, ids, settings, alternatives=0)  # text only
    _write(gen, text, echo)
    if stats:
        _print_stats(gen, engine.name, engine.block_size, load_seconds, dropped)


def _checked_flags(backend: str, unknown_chars: str, **sampling: Any) -> SamplingSettings:
    """Every flag checked before the (slow) model load; returns the sampling settings."""
    from minigpt_tui.sampling import SamplingSettings

    check_backend(backend)
    if unknown_chars not in ("error", "drop"):
        raise UserError(f"--unknown-chars must be error or drop, got {unknown_chars!r}")
    settings = SamplingSettings(**sampling)
    settings.validate()
    return settings


def _conversation(
    prompt: str | None, chat: str | None, system: str | None, path: Path | None, echo: bool
) -> list[Message] | None:
    """The conversation to answer (--system, the --messages file, then --chat's message), or
    None to continue PROMPT; one error line for flags that do not go together, a file that
    cannot be read or a conversation that is not one (model.chat.check)."""
    from model.chat import ChatFormatError, Message, check

    if chat is None and path is None:
        if system is not None:
            raise UserError("--system is the system turn of --chat or --messages; give one")
        return None
    if prompt is not None:
        raise UserError("give a PROMPT to continue, or --chat/--messages to answer, not both")
    if echo:
        raise UserError("--echo prints a prompt to continue; --chat and --messages print the reply")
    found = read_messages(path) if path is not None else []
    if system is not None:
        if found and found[0].role == "system":
            raise UserError(f"{path} has its own system turn: leave out --system")
        found.insert(0, Message("system", system))
    if chat is not None:
        found.append(Message("user", chat))
    where = f"the conversation in {path}" if path is not None else "the conversation"
    try:
        check(found, prompt=True)
    except ChatFormatError as e:
        raise UserError(f"{where} cannot be answered: {e}") from None
    return found


def read_messages(path: Path) -> list[Message]:
    """The messages of a --messages file: a JSON object with a "messages" list, or the list
    itself, of {"role", "content"} objects (at most MAX_MESSAGES_BYTES, a regular file)."""
    import json

    from model.chat import ChatFormatError, messages_from
    from model.userfile import UserFileError, read_text

    try:
        text = read_text(path, MAX_MESSAGES_BYTES)
    except FileNotFoundError:
        raise UserError(f"--messages {path}: no such file") from None
    except UserFileError as e:
        raise UserError(f"--messages {e}") from None
    except OSError as e:
        raise UserError(f"--messages {path}: {e.strerror or e}") from None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"--messages {path} is not JSON ({str(e)[:100]})") from None
    items = record.get("messages") if isinstance(record, dict) else record
    if not isinstance(items, list):
        raise UserError(f'--messages {path}: expected {{"messages": [...]}} or a list of messages')
    try:
        return messages_from(items)
    except ChatFormatError as e:
        raise UserError(f"--messages {path}: {e}") from None


def _chat_ids(
    tokenizer: Tokenizer,
    messages: list[Message],
    unknown_chars: str,
    block_size: int,
    settings: SamplingSettings,
) -> tuple[list[int], list[str]]:
    """The prompt ids of a conversation (model.chat.fit: the oldest exchanges dropped to fit
    the context with room for the reply, as the chat app leaves it, never the system turn),
    and the characters --unknown-chars drop left out."""
    from model.chat import ChatFormatError, Message, fit
    from model.tokenizer import TokenizerError

    if tokenizer.chat is None:
        raise UserError(
            "this model has no chat template (its tokenizer has no chat tokens): --chat and "
            "--messages need a chat model; leave them out to continue a text"
        )
    dropped: list[str] = []
    if unknown_chars == "drop":
        kept = []
        for m in messages:
            ids, unknown = _encode(tokenizer, m.content, "drop")
            dropped += [c for c in unknown if c not in dropped]
            kept.append(Message(m.role, tokenizer.decode(ids)) if unknown else m)
        messages = kept
    budget = max(1, block_size - min(settings.max_new_tokens, block_size // 4))
    try:
        return fit(tokenizer, messages, budget).ids, dropped
    except TokenizerError as e:
        raise UserError(f"{e}; pass --unknown-chars drop to leave such characters out") from None
    except ChatFormatError as e:  # a message with no character the model knows
        raise UserError(f"the conversation cannot be answered: {e}") from None


def _load(
    model: str | None, backend: str, device: str, threads: int | None
) -> tuple[Backend, float]:
    """The model's backend, and the seconds it took to load."""
    from minigpt_tui.generation import load_backend

    threads, note = check_threads(threads)
    if note:
        print(f"note: {note}", file=sys.stderr)
    t0 = time.perf_counter()
    engine = load_backend(model, backend=backend, device=device, threads=threads, spin=True)
    return engine, time.perf_counter() - t0


def _encode(tokenizer: Tokenizer, text: str, unknown_chars: str) -> tuple[list[int], list[str]]:
    """The prompt's token ids, and the characters --unknown-chars drop left out."""
    from model.tokenizer import TokenizerError, encode_lenient

    if unknown_chars == "drop":
        return encode_lenient(tokenizer, text)
    try:
        return tokenizer.encode(text), []
    except TokenizerError as e:
        raise UserError(f"{e}; pass --unknown-chars drop to leave such characters out") from None


def _write(gen: Generation, text: str, echo: bool) -> None:
    """Stream the continuation (after the prompt, with --echo) to stdout as it is made."""
    from minigpt_tui.safe_text import plain

    out = sys.stdout
    # On a terminal, control characters a model's vocabulary holds (a hostile config.json can
    # give it ESC) are shown, not obeyed; a pipe gets the text exactly as generated.
    shown = plain if out.isatty() else str
    if echo:
        out.write(shown(text))
        out.flush()
    for event in gen:
        if event.text:
            out.write(shown(event.text))
            out.flush()
    printed = (text if echo else "") + gen.text
    if out.isatty() and printed and not printed.endswith("\n"):
        out.write("\n")  # leave the shell prompt on a line of its own
    out.flush()


def _print_stats(
    gen: Generation, backend: str, block_size: int, load_seconds: float, dropped: list[str]
) -> None:
    st = gen.stats
    prompt = f"prompt {st.prompt_tokens} tokens"
    if st.prompt_truncated:
        prompt += f" (longer than block_size {block_size}: truncated to its last {block_size})"
    lines = [
        f"{prompt}; backend {backend}; model loaded in {load_seconds:.2f}s",
        f"time to first token {st.time_to_first_token * 1000:.1f} ms; "
        f"{st.new_tokens} new tokens at {st.tokens_per_second:.1f} tokens/s; "
        f"{st.slides} window slides; stopped by {STOP_WORDS.get(st.stop_reason, 'nothing')}",
    ]
    if dropped:
        lines.append(f"dropped unknown characters: {''.join(dropped)!r}")
    for line in lines:
        print(line, file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
