"""The operator console: server-rendered pages over the store (states, figures, incidents) behind local accounts."""
