"""`manage.py runserver` (make run, bench/calls.py) accepts connections with TCP_NODELAY: its
two writes per response (headers, then body) no longer wait on the client's delayed ACK
(~43 ms of each built-in endpoint call, costlab/devserver)."""

from __future__ import annotations

import socket

from django.core.management import get_commands, load_command_class
from django.core.servers.basehttp import WSGIRequestHandler
from whitenoise.runserver_nostatic.management.commands.runserver import (  # type: ignore[import-untyped]
    Command as WhiteNoiseRunserver,
)


def test_runserver_sets_tcp_nodelay_on_the_connections_it_accepts() -> None:
    command = load_command_class(get_commands()["runserver"], "runserver")
    assert isinstance(command, WhiteNoiseRunserver)  # static files still left to WhiteNoise
    server = command.server_cls(("127.0.0.1", 0), WSGIRequestHandler)
    try:
        with socket.create_connection(server.server_address[:2], timeout=5):
            accepted, _ = server.get_request()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.server_close()
