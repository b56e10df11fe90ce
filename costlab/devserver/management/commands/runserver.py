"""`manage.py runserver` with TCP_NODELAY on every connection it accepts.

Django's development server sends a response's status and headers, then its body, in two
writes. With Nagle's algorithm on (the socket default), the body waited for the client to
acknowledge the headers, which a Linux client delays by up to 40 ms: each built-in endpoint
call through `make run` or bench/calls.py took ~45 ms where the endpoint's own work is
~2 ms (1.8 ms with the option; the SDK's client sets it on its side already). Gunicorn (the
Docker image) sets it on its listening socket itself.

Otherwise the command is the one it replaces: WhiteNoise's runserver (static files left to
WhiteNoise), itself Django's.
"""

from __future__ import annotations

import socket
from typing import Any

from django.core.servers.basehttp import WSGIServer
from whitenoise.runserver_nostatic.management.commands.runserver import (  # type: ignore[import-untyped]
    Command as WhiteNoiseRunserver,
)


class NoDelayWSGIServer(WSGIServer):
    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class Command(WhiteNoiseRunserver):  # type: ignore[misc]
    server_cls = NoDelayWSGIServer
