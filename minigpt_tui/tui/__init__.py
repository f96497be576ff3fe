"""The Textual front end: `minigpt-tui chat` (app.py) and `minigpt-tui watch` (watch_app.py)."""
