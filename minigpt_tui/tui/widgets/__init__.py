"""Widgets of the chat and watch apps, one module each."""
