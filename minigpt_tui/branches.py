"""A conversation as a tree: every reply regenerated, continued from another token, or every
message edited and sent again, is a new branch; the old ones stay.

    root ─ user "hi" ─┬─ model "Good morrow"        (1/2)
                      └─ model "Good night" ─ ...   (2/2, shown)

`path` is what is shown (and what the model sees): one child of each node, down from the root.
The chat keeps its turns as a plain list; `follow(turns)` makes the path spell that list,
adding nodes where it differs, so any change to the list becomes a branch. History stores the
tree as rows (seq, parent seq, role, text, chosen) in pre-order; `chosen` marks the child each
node shows (so the shown path, and the branch last shown under every other node, come back).
No UI here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minigpt_tui.dialogue import Turn

# One stored node: (seq, parent seq or None for the first turns, role, text, chosen child)
Row = tuple[int, int | None, str, str, bool]


@dataclass(eq=False)
class Node:
    role: str
    text: str
    children: list[Node] = field(default_factory=list)
    chosen: int = 0  # the child shown below this node
    tokens: list[Any] = field(default_factory=list, repr=False)  # this session's TokenEvents


class Branches:
    def __init__(self) -> None:
        self.root = Node("root", "")
        self.path: list[Node] = []  # the nodes shown, first turn first

    def turns(self) -> list[Turn]:
        return [Turn(n.role, n.text) for n in self.path]

    def parent(self, i: int) -> Node:
        """The node above path[i]."""
        return self.path[i - 1] if i > 0 else self.root

    def follow(self, turns: list[Turn]) -> None:
        """Make the path spell `turns`: keep the nodes that match, then take an existing child
        with the same role and text or add a new one. Nodes left behind stay as branches."""
        i = 0
        while (
            i < len(turns)
            and i < len(self.path)
            and (self.path[i].role, self.path[i].text) == (turns[i].role, turns[i].text)
        ):
            i += 1
        del self.path[i:]
        for turn in turns[i:]:
            parent = self.path[-1] if self.path else self.root
            same = [
                k
                for k, c in enumerate(parent.children)
                if (c.role, c.text) == (turn.role, turn.text)
            ]
            if same:
                parent.chosen = same[-1]
            else:
                parent.children.append(Node(turn.role, turn.text))
                parent.chosen = len(parent.children) - 1
            self.path.append(parent.children[parent.chosen])

    def position(self, i: int) -> tuple[int, int]:
        """path[i] is branch k of n (k from 1)."""
        siblings = self.parent(i).children
        return siblings.index(self.path[i]) + 1, len(siblings)

    def switch(self, i: int, step: int) -> bool:
        """Show the branch `step` away from path[i] (and the branches last shown below it);
        False when there is none that way."""
        if not 0 <= i < len(self.path):
            return False
        parent = self.parent(i)
        k = parent.children.index(self.path[i]) + step
        if not 0 <= k < len(parent.children):
            return False
        parent.chosen = k
        del self.path[i:]
        node = parent.children[k]
        self.path.append(node)
        while node.children:
            node = node.children[node.chosen]
            self.path.append(node)
        return True

    def count(self) -> int:
        """Every node in the tree."""
        return len(self.rows())

    # ----------------------------------------------------------------- storage
    def rows(self) -> list[Row]:
        """The tree in pre-order, parents before their children."""
        out: list[Row] = []

        def walk(node: Node, parent: int | None) -> None:
            for k, child in enumerate(node.children):
                seq = len(out)
                out.append((seq, parent, child.role, child.text, k == node.chosen))
                walk(child, seq)

        walk(self.root, None)
        return out

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Branches:
        """Rebuild a tree from `rows` (any order of seq, parents first); a row whose parent is
        missing hangs from the root, so a damaged record still shows every message."""
        tree = cls()
        nodes: dict[int, Node] = {}
        for seq, parent, role, text, chosen in sorted(rows, key=lambda r: r[0]):
            node = Node(role, text)
            above = nodes.get(parent, tree.root) if parent is not None else tree.root
            above.children.append(node)
            if chosen:
                above.chosen = len(above.children) - 1
            nodes[seq] = node
        # The shown path: from the root, follow each node's chosen child.
        node = tree.root
        while node.children:
            node = node.children[node.chosen]
            tree.path.append(node)
        return tree

    @classmethod
    def linear(cls, turns: list[Turn]) -> Branches:
        tree = cls()
        tree.follow(turns)
        return tree
