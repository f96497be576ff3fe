"""Modal screens of the chat app: help, history, export, load error."""
