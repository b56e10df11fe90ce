"""Calling models: connections, the call service, its tasks, the built-in endpoint."""

from conversations.engine import compiled

# A fresh build of the endpoint's hot modules, if any, is imported in place of their sources.
compiled.extend(__path__, __name__)
