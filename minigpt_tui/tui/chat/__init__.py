"""The chat: who owns what (Textual's rule: attributes down, messages up).

    ChatApp (tui/app.py)      the settings file (keys, theme), the history store, loading models;
                              app-wide keys in tui/workflow.py (F6 model, F7 system text, F10,
                              Ctrl+F; Ctrl+Q saves first). Hands models down: Chat.start/take_over
    ChatScreen (screen.py)    the layout and the chat's keys (tui/keys.py); a dialog pushed over it
                              disables them. Passes the settings panel's changes down to the chat,
                              the chat's messages on to its siblings, its status to the status bar
    Chat (chat.py)            the conversation: the session, the model talking now, the reply in
                              flight, the edit and branch state; the one writer of its status
                              values (status.py: state, model, backend, context, speed). Its parts
                              sending.py, branching.py, conversations.py, inspecting.py (F8, F9)
    ChatSession (../session)  the one writer of the turns and their branch tree; no UI
    Chat.template             how turns are laid out for the model (prompt ids, names, stop
                              strings, cleaning a reply), chosen when a model loads
                              (Chat.use_layout): the dialogue (speaker names) for a text
                              continuer, roles (model/chat.py) for a chat model; dialogue.py

Chat posts Ready, ModeShown, LayoutShown, Steering, TokenShown and ReplyEnded up; siblings
never touch.
"""
