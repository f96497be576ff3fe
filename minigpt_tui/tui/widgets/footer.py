"""Textual's footer, rebuilt once per refresh however often the keys changed meanwhile.

Textual's Footer recomposes (removes and mounts every key) for each change of the screen's
bindings, each after the next refresh: at the chat's start a focus change and the screen
becoming current come together, so the first frame was followed by two rebuilds of the same
keys, each its own style pass (issue 25). This one queues at most one rebuild, which reads
the bindings as they are by then.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    _rebuild_queued = False

    def bindings_changed(self, screen: Screen) -> None:
        # Textual's own, less the extra rebuilds (textual 8.2: widgets/_footer.py).
        self._bindings_ready = True
        if not screen.app.app_focus or self._rebuild_queued:
            return
        if self.is_attached and screen is self.screen:
            self._rebuild_queued = True
            self.call_after_refresh(self._rebuild)

    async def _rebuild(self) -> None:
        self._rebuild_queued = False
        await self.recompose()
