"""The one way to show text that came from a file or a model: model names, tokenizer pieces,
paths, metrics, history, generated text.

Such text may hold terminal control sequences (ESC [2J clears the screen, ESC ] 0; sets the
window title, C1 codes do the same in one byte) and, for rich, markup (`[/]` is an error,
`[old]` vanishes). `plain` makes every control character visible as a Python-style escape, so
the terminal shows it instead of obeying it; `markup` does that and escapes rich markup, for
text that goes into a rich string. Neither changes ordinary text.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, and the invisible Unicode controls
# that reorder or hide text on screen (bidi overrides and isolates, line/paragraph separators).
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_LINE_BREAKS = re.compile("[\t\n]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: object, *, one_line: bool = False) -> str:
    """`text` with control characters shown as escapes (\\x1b); tabs and newlines are kept,
    unless `one_line`, where they become \\t and \\n too."""
    s = _CONTROL.sub(_visible, str(text))
    if one_line:
        s = _LINE_BREAKS.sub(lambda m: "\\t" if m.group() == "\t" else "\\n", s)
    return s


def markup(text: object, *, one_line: bool = False) -> str:
    """`plain(text)` with rich markup escaped, to put inside a rich markup string."""
    from rich.markup import escape  # here: `generate` prints with plain() and never loads rich

    shown = plain(text, one_line=one_line)
    escaped = escape(shown)
    # rich doubles a final backslash (so it cannot escape a tag that follows), which would
    # show two; a tag after it only loses its meaning, it cannot fail or inject anything.
    if shown.endswith("\\") and not shown.endswith("\\\\") and escaped.endswith("\\\\"):
        escaped = escaped[:-1]
    return escaped
