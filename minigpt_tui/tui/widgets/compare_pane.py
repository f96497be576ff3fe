"""One pane of the compare screen: its own settings (and maybe its own model), the text it
streams, and how fast and how surprising (to its own model) that text was.

The settings line reads like `temp=0.8 top_k=40 top_p=0.95 rep=1.1 seed=1 max=120`, with an
optional `model=PATH` (a model directory or a bundled model's name). Each pane owns a
ReplyController. Panes on the chat's ONNX model are decoded together by the screen (one
batched call per step, minigpt_tui/streams.py's Lockstep); panes on another backend share its
lock, and a pane on its own model runs in its own worker.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from minigpt_tui.dialogue import LayoutError
from minigpt_tui.generation import Generation, TokenEvent
from minigpt_tui.sampling import Choice, Sampler, SamplingError, SamplingSettings
from minigpt_tui.scoring import surprisal_bits
from minigpt_tui.streams import StreamSlot
from minigpt_tui.tui.loading import ModelLoader, describe
from minigpt_tui.tui.reply import Reply, ReplyController
from model.backend import Backend
from model.tokenizer import Tokenizer, encode_lenient

KEYS = {  # what the settings line accepts -> SamplingSettings attribute
    "temp": "temperature",
    "t": "temperature",
    "top_k": "top_k",
    "k": "top_k",
    "top_p": "top_p",
    "p": "top_p",
    "rep": "repetition_penalty",
    "seed": "seed",
    "max": "max_new_tokens",
}


def parse_spec(text: str, base: SamplingSettings) -> tuple[SamplingSettings, str | None]:
    """Settings (from `base`, changed by the line) and a model, or a ValueError saying why."""
    changes: dict[str, object] = {}
    model = None
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise ValueError(f"{word!r}: write key=value")
        if key == "model":
            model = value
            continue
        attr = KEYS.get(key)
        if attr is None:
            raise ValueError(f"unknown setting {key!r} (temp top_k top_p rep seed max model)")
        kind = {"top_k": int, "seed": int, "max_new_tokens": int}.get(attr, float)
        try:
            changes[attr] = None if attr == "seed" and value == "none" else kind(value)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    settings = dataclasses.replace(base, stop=list(base.stop), **changes)  # type: ignore[arg-type]
    try:
        settings.validate()
    except SamplingError as e:
        raise ValueError(str(e)) from None
    return settings, model


def another_spec(specs: list[str], base: SamplingSettings) -> str:
    """A settings line for a new pane whose text differs from the panes' `specs`: the last
    sampled pane's settings (or the chat's, sampled) with a seed none of them uses."""
    parsed = []
    for spec in specs:
        try:
            parsed.append(parse_spec(spec, base))
        except ValueError:
            continue  # a line being typed: its seed is not taken
    sampled = [(s, model) for s, model in parsed if s.temperature > 0]
    if sampled:
        settings, model = sampled[-1]
    else:  # greedy panes all: a sampled one, since a seed changes nothing greedy
        settings = dataclasses.replace(base, temperature=base.temperature or 0.8)
        model = None
    seed = max((s.seed for s, _ in parsed if s.seed is not None), default=0) + 1
    return describe_settings(dataclasses.replace(settings, seed=seed), model)


def same_output(
    a: tuple[SamplingSettings, str | None], b: tuple[SamplingSettings, str | None]
) -> str:
    """Why two panes (settings, model) write the same text ("" when they need not)."""
    (sa, ma), (sb, mb) = a, b
    if ma != mb or sa.max_new_tokens != sb.max_new_tokens:
        return ""
    if sa.repetition_penalty != sb.repetition_penalty:
        return ""
    if sa.temperature == 0 and sb.temperature == 0:
        return "greedy: the seed and top-k/top-p change nothing"
    if sa.seed is not None and describe_settings(sa) == describe_settings(sb):
        return "the same settings and seed"
    return ""


# A prompt's ids for a pane's model: the text itself (the default), or, for a chat model in
# the chat, the conversation with the text as your next message (tui/chat/inspecting.py).
PromptLayout = Callable[[Tokenizer, str], list[int]]


def plain_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    return encode_lenient(tokenizer, text)[0]


def describe_settings(s: SamplingSettings, model: str | None = None) -> str:
    seed = "none" if s.seed is None else str(s.seed)
    line = (
        f"temp={s.temperature:g} top_k={s.top_k} top_p={s.top_p:g} "
        f"rep={s.repetition_penalty:g} seed={seed} max={s.max_new_tokens}"
    )
    return line + (f" model={model}" if model else "")


class SurprisalSampler(Sampler):
    """The sampler, also noting how surprising each chosen token is to the model itself
    (-log2 p at temperature 1, before any filter): the pane's mean surprisal."""

    def __init__(self, settings: SamplingSettings) -> None:
        super().__init__(settings)
        self.bits: list[float] = []  # appended by the worker, read by the UI

    def choose(self, logits: np.ndarray, context: list[int], n_alternatives: int = 5) -> Choice:
        choice = super().choose(logits, context, n_alternatives)
        self.bits.append(surprisal_bits(logits, choice.token))
        return choice


class PaneText(Static):
    """The streamed text (a ReplyTarget)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", markup=False, **kwargs)  # type: ignore[arg-type]
        self.text = ""

    def append(self, tokens: list[TokenEvent]) -> None:
        self.text += "".join(t.text for t in tokens)
        self.update(self.text)

    def reset(self) -> None:
        self.text = ""
        self.update("")


class ComparePane(Vertical):
    class Changed(Message):
        """The pane's settings line changed (the screen checks which panes write alike)."""

    def __init__(
        self,
        number: int,
        spec: str,
        slot: StreamSlot,
        tokenizer: Tokenizer,
        prompt_layout: PromptLayout = plain_prompt,
    ) -> None:
        super().__init__(classes="compare-pane")
        self.prompt_layout = prompt_layout
        self.number = number
        self.spec = spec
        self.slot = slot  # the shared model's backend and lock for this pane
        self.tokenizer = tokenizer
        self.other: tuple[str, Backend, Tokenizer, threading.Lock] | None = None  # model=
        self.replies = ReplyController(self)
        self.sampler: SurprisalSampler | None = None
        self.base = SamplingSettings()
        self.pending_prompt: str | None = None  # waiting for its model to load
        self.loader = ModelLoader(self)
        self.finished = threading.Event()  # set when the last run ended (tests wait on it)
        self.error = ""

    def compose(self) -> ComposeResult:
        yield Input(
            self.spec,
            id=f"spec-{self.number}",
            classes="pane-spec",
            compact=True,
            select_on_focus=False,  # Tab in, and a typed key adds to the line, never replaces it
        )
        with VerticalScroll(classes="pane-body"):
            yield PaneText(classes="pane-text")
        yield Static("", classes="pane-stats", markup=False)

    def on_mount(self) -> None:
        self.border_title = f"{self.number}"

    def mark_same(self, other: int | None, why: str = "") -> None:
        """Say in the header that pane `other` writes the same text, and why (None: none)."""
        self.border_title = f"{self.number}" + (
            f" · same output as {other} ({why})" if other is not None else ""
        )

    @property
    def text(self) -> str:
        return self.query_one(PaneText).text

    @property
    def running(self) -> bool:
        return self.replies.running or self.pending_prompt is not None

    def settings(self) -> tuple[SamplingSettings, str | None]:
        return parse_spec(self.query_one(".pane-spec", Input).value, self.base)

    @on(Input.Changed, ".pane-spec")
    def _spec_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            self.settings()
        except ValueError as e:
            event.input.add_class("-invalid")
            self._say(str(e), error=True)
            return
        finally:
            self.post_message(self.Changed())
        event.input.remove_class("-invalid")
        self._say("")

    def run(self, prompt: str, together: bool = False) -> Reply | None:
        """Stream a continuation of `prompt` with this pane's settings (and model), in a worker
        of its own; or, `together`, when the pane runs the shared model, return its Reply for
        the screen to decode with the other panes' (its ReplyController shows it as usual)."""
        if self.running:
            return None
        self.finished.clear()
        self.error = ""
        try:
            settings, model = self.settings()
        except ValueError as e:
            self._say(str(e), error=True)
            return None
        if model and (self.other is None or self.other[0] != model):
            self.pending_prompt = prompt
            self._say(f"loading {model}…")
            self.loader.load(_loader(model))
            return None
        backend, tokenizer, lock = self.slot.backend, self.tokenizer, self.slot.lock
        if model and self.other is not None:
            _, backend, tokenizer, lock = self.other
        try:
            ids = self.prompt_layout(tokenizer, prompt)
        except LayoutError as e:
            self._say(str(e))
            self.finished.set()
            return None
        self.sampler = SurprisalSampler(settings)  # a fresh sampler: same seed, same text
        generation = Generation(backend, tokenizer, ids, settings, sampler=self.sampler)
        self.query_one(PaneText).reset()
        if together and not model:
            return self.replies.start(generation, self.query_one(PaneText), worker=False)
        self.replies.backend_lock = lock
        self.replies.start(generation, self.query_one(PaneText))
        return None

    def stop(self) -> None:
        self.replies.stop()

    def cancel(self) -> None:
        self.replies.cancel()
        self.pending_prompt = None

    def _say(self, text: str, error: bool = False) -> None:
        """The line under the text: its speed, or (wrapped, whole) why it cannot run."""
        stats = self.query_one(".pane-stats", Static)
        stats.set_class(error, "-error")
        stats.update(text)

    @on(ModelLoader.Loaded)
    def _loaded(self, event: ModelLoader.Loaded) -> None:
        event.stop()
        _, model = self.settings()
        self.other = (
            model or "",
            event.model.backend,
            event.model.tokenizer,
            threading.Lock(),
        )
        prompt, self.pending_prompt = self.pending_prompt, None
        if prompt is not None:
            self.run(prompt)

    @on(ModelLoader.Failed)
    def _failed(self, event: ModelLoader.Failed) -> None:
        event.stop()
        self.pending_prompt = None
        self.error = event.reason
        self._say(f"cannot load the model: {event.reason}", error=True)
        self.finished.set()

    @on(ReplyController.Started)
    def _started(self, event: ReplyController.Started) -> None:
        event.stop()
        self._say("…")

    @on(ReplyController.Tokens)
    def _tokens(self, event: ReplyController.Tokens) -> None:
        event.stop()
        self.query_one(".pane-body", VerticalScroll).scroll_end(animate=False)
        self._show_stats(event.reply.generation)

    @on(ReplyController.Finished)
    def _finished(self, event: ReplyController.Finished) -> None:
        event.stop()
        if not self.replies.end(event.reply):
            return
        self._show_stats(event.reply.generation)
        if event.error is not None:
            self.error = describe(event.error)
            self._say(f"failed: {self.error}", error=True)
        self.finished.set()

    def mean_bits(self) -> float:
        bits = self.sampler.bits if self.sampler is not None else []
        return float(np.mean(bits)) if bits else 0.0

    def _show_stats(self, gen: Generation) -> None:
        st = gen.stats
        self._say(
            f"{st.new_tokens} tok · {st.tokens_per_second:.0f} tok/s · "
            f"{self.mean_bits():.2f} bits/tok"
        )


def _loader(model: str) -> Callable[[], Backend]:
    from minigpt_tui.generation import load_backend

    return lambda: load_backend(model)
