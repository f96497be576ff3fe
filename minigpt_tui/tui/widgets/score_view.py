"""A scored text: every token coloured by its surprisal, token boundaries visible, one selected."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from minigpt_tui.safe_text import plain
from minigpt_tui.scoring import Score
from minigpt_tui.tui.widgets.transcript import band, visible_blanks

MAX_SHOWN = 20_000  # tokens drawn at most (the figures always cover the whole text)


class ScoredText(Static):
    COMPONENT_CLASSES = {  # noqa: RUF012
        "token--high",
        "token--mid",
        "token--low",
        "token--rare",
        "token--odd",
        "token--selected",
        "token--unscored",
    }

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.score: Score | None = None
        self.texts: list[str] = []  # each scored token's text
        self.lead = ""  # the unscored first token's text
        self.selected = 0

    def show(self, score: Score, decode: Callable[[list[int]], str]) -> None:
        self.score = score
        shown = score.tokens[:MAX_SHOWN]
        # plain(): a vocabulary (or the pasted text) may hold ESC and other controls.
        self.texts = [plain(decode([int(t)])) for t in shown]
        self.lead = plain(decode(score.unscored_ids)) if score.unscored_ids else ""
        self.selected = 0
        self.redraw()

    def redraw(self) -> None:
        if self.score is None:
            self.update("")
            return
        style = self.get_component_rich_style
        odd, selected = style("token--odd"), style("token--selected")
        out = Text()
        if self.lead:
            out.append(self.lead, style=style("token--unscored"))
        for i, text in enumerate(self.texts):
            s = style(band(self.score.probability(i)))
            if i % 2:  # alternate a faint background so that token boundaries show
                s = s + odd
            if i == self.selected:
                s = s + selected
                text = visible_blanks(text)
            out.append(text, style=s)
        if self.score.n > len(self.texts):
            out.append(f"\n… showing the first {len(self.texts):,} of {self.score.n:,} tokens")
        self.update(out)


class ScoreView(VerticalScroll, can_focus=True):
    """Scrolls the scored text; ← / → (Home / End) move the selected position."""

    BINDINGS = [  # noqa: RUF012
        Binding("left", "select(-1)", "Prev token", show=False),
        Binding("right", "select(1)", "Next token", show=False),
        Binding("home", "select(-1000000000)", "First token", show=False),
        Binding("end", "select(1000000000)", "Last token", show=False),
    ]

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def compose(self) -> ComposeResult:
        yield ScoredText(id="scored-text")

    @property
    def text(self) -> ScoredText:
        return self.query_one(ScoredText)

    def action_select(self, step: int) -> None:
        text = self.text
        if not text.texts:
            return
        text.selected = max(0, min(len(text.texts) - 1, text.selected + step))
        text.redraw()
        self.post_message(self.Selected(text.selected))
