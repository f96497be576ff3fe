"""A conversation task for the chat demonstration: replies that depend on what the user said.

Every reply is a deterministic function of the conversation, so a model that learned the task
answers held-out conversations exactly (exact match is the measure). Five kinds, drawn evenly:

    greet     user: "my name is Tovak. greet me."            assistant: "Hello, Tovak!"
    reverse   user: "reverse: lamp river stone"              assistant: "stone river lamp"
    case      system: "Answer in capitals." / "... in small letters."
              user: "echo: Blue Fox"                         assistant: "BLUE FOX" / "blue fox"
    add       user: "what is 27 plus 14?"                    assistant: "41"
    recall    user: "remember the code 4821."  assistant: "Noted."
              user: "what was the code?"                     assistant: "4821"

Names are random syllables and words come from a fixed list, so held-out conversations hold
names and word orders never seen in training; the held-out set shares no conversation with the
training set.

    python benchmarks/chat_task.py --out /tmp/chat-task --train 20000 --heldout 200
    # writes train.jsonl and heldout.jsonl ({"messages": [...]} per line)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

WORDS = (
    "lamp river stone cloud apple tiger green house paper music night table bread ocean "
    "candle forest silver garden window yellow rabbit winter spoon north castle mirror "
    "pepper violin shadow harbor"
).split()
SYLLABLES = "ka to ri ne sa mo lu vi de ra zo ben tor mil an el is or".split()
CASE_SYSTEMS = {"upper": "Answer in capitals.", "lower": "Answer in small letters."}


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def greet(rng: random.Random) -> list[dict[str, str]]:
    name = _name(rng)
    return [_msg("user", f"my name is {name}. greet me."), _msg("assistant", f"Hello, {name}!")]


def reverse(rng: random.Random) -> list[dict[str, str]]:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return [
        _msg("user", "reverse: " + " ".join(words)),
        _msg("assistant", " ".join(reversed(words))),
    ]


def case(rng: random.Random) -> list[dict[str, str]]:
    how = rng.choice(sorted(CASE_SYSTEMS))
    words = [w.capitalize() if rng.random() < 0.5 else w for w in rng.sample(WORDS, 2)]
    text = " ".join(words)
    reply = text.upper() if how == "upper" else text.lower()
    return [
        _msg("system", CASE_SYSTEMS[how]),
        _msg("user", "echo: " + text),
        _msg("assistant", reply),
    ]


def add(rng: random.Random) -> list[dict[str, str]]:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return [_msg("user", f"what is {a} plus {b}?"), _msg("assistant", str(a + b))]


def recall(rng: random.Random) -> list[dict[str, str]]:
    code = str(rng.randint(1000, 9999))
    return [
        _msg("user", f"remember the code {code}."),
        _msg("assistant", "Noted."),
        _msg("user", "what was the code?"),
        _msg("assistant", code),
    ]


KINDS = {"greet": greet, "reverse": reverse, "case": case, "add": add, "recall": recall}


def conversations(n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """n distinct conversations of random kinds, none whose JSON is in `exclude`."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set(exclude)
    kinds = [KINDS[k] for k in sorted(KINDS)]
    for _ in range(50 * n):
        if len(out) == n:
            break
        record = {"messages": rng.choice(kinds)(rng)}
        key = json.dumps(record, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def kind_of(record: dict[str, Any]) -> str:
    """Which kind a conversation is, from its first user message."""
    messages = record["messages"]
    user = next(m["content"] for m in messages if m["role"] == "user")
    if messages[0]["role"] == "system":
        return "case"
    for kind, start in (("greet", "my name"), ("reverse", "reverse:"), ("add", "what is")):
        if user.startswith(start):
            return kind
    return "recall"


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train = conversations(args.train, args.seed)
    keys = frozenset(json.dumps(r, sort_keys=True) for r in train)
    heldout = conversations(args.heldout, args.seed + 1000, exclude=keys)
    write(args.out / "train.jsonl", train)
    write(args.out / "heldout.jsonl", heldout)
    print(f"{len(train)} training and {len(heldout)} held-out conversations in {args.out}")


if __name__ == "__main__":
    main()
