"""The chat: who owns what (Textual's rule: attributes down, messages up).

    ChatApp (tui/app.py)      settings file (keys, theme), history store, loading models,
                              the app-wide keys (Workflow: F6 model, F7 system, F10, Ctrl+F, Ctrl+Q)
    ChatScreen (screen.py)    the layout and the chat's keys (tui/keys.py); a dialog pushed over it
                              disables them. Routes the settings panel's changes down to the chat
                              and the chat's messages to its siblings; watches the chat's status
    Chat (chat.py)            the conversation: the ChatSession, the model talking now, the reply
                              in flight, the edit and branch state, and the status values (state,
                              model, backend, context, speed) the status bar shows. Its parts:
                              sending.py, branching.py, conversations.py, inspecting.py (F8, F9)
    ChatSession (../session)  the one writer of the turns and the branch tree (add_turn, cut_at,
                              drop_last_reply, switch_branch, restore, reset); no UI
    Chat.template             how turns are laid out for the model (prompt, names, stop strings,
                              reply cleaning): the one place another layout plugs in

Chat posts up ModeShown, Steering, TokenShown and ReplyEnded; siblings never touch each other.
"""
