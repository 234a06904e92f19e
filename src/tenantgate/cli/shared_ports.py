"""The ports the workers of ``serve --workers N`` share (SO_REUSEPORT): checked once before any worker
starts, then pinned to what worker 0 bound, so port 0 means one free port for all of them."""

from __future__ import annotations

import dataclasses
import socket

from tenantgate.config import Settings
from tenantgate.errors import ConfigError


def check_free(listen: str, key: str) -> None:
    """Refuse a port another process listens on: with SO_REUSEPORT, a server of the same user (say, a
    second TenantGate) would otherwise share it silently and take part of its traffic."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise ConfigError(f"cannot listen on {listen} ({key}): {err}") from err
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            probe.bind(address)
        except OSError as err:
            raise ConfigError(f"cannot listen on {listen} ({key}): {err.strerror or err}") from err


def pinned(settings: Settings, grpc_port: int, health_port: int, http_port: int) -> Settings:
    """``settings`` listening on the ports worker 0 bound (port 0 in the file means: the one it picked)."""
    def at(listen: str, port: int) -> str:
        return f"{listen.rpartition(':')[0]}:{port}" if listen else listen

    server = dataclasses.replace(settings.server, listen=at(settings.server.listen, grpc_port),
                                 health_listen=at(settings.server.health_listen, health_port))
    http = dataclasses.replace(settings.http, listen=at(settings.http.listen, http_port))
    return dataclasses.replace(settings, server=server, http=http)
