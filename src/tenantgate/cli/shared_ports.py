"""The ports the workers of ``serve --workers N`` share (SO_REUSEPORT): checked once before any worker
starts, then pinned to what worker 0 bound, so port 0 means one free port for all of them."""

from __future__ import annotations

import dataclasses
import errno
import socket
from typing import Any

from tenantgate.config import Settings
from tenantgate.errors import ConfigError

# Claims on the ports this process's workers will share, held for its lifetime (the workers inherit them).
_CLAIMS: list[socket.socket] = []


def check_free(listen: str, key: str, *, claim: bool = True) -> None:
    """Refuse a port another process listens on, or another supervisor is about to: with SO_REUSEPORT, a
    server of the same user (say, a second TenantGate) would otherwise share it silently and take part of
    its traffic. ``claim`` False (one process, no SO_REUSEPORT): only the probe, so a busy port is a plain
    message before gRPC's C core prints its own error line (review finding)."""
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
    if claim:
        _claim(address, listen, key)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            probe.bind(address)
        except OSError as err:
            raise ConfigError(f"cannot listen on {listen} ({key}): {err.strerror or err}") from err


def _claim(address: tuple[Any, ...], listen: str, key: str) -> None:
    """Bind a name for ``address``'s port in Linux's abstract socket namespace, which belongs to the network
    namespace as ports do and is released when the last process holding it exits.

    The bind probe alone left a window (review finding): worker 0 binds its port a few tenths of a second
    after the probe, so a second ``serve --workers`` started meanwhile passed the probe too, and the kernel
    split the traffic between the two. Where abstract names do not exist (not Linux), the probe alone
    remains."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # By port alone: 0.0.0.0:P, [::]:P and 127.0.0.1:P overlap, and SO_REUSEPORT would let them share.
        claim.bind(f"\0tenantgate-listen:{address[1]}")
    except OSError as err:
        claim.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {listen} ({key}): another TenantGate serving with workers "
                              "has claimed it (starting, or running)") from err
        return  # no abstract namespace here
    _CLAIMS.append(claim)


def release_claims() -> None:
    """Give up the claims (the supervisor, when it stops)."""
    while _CLAIMS:
        _CLAIMS.pop().close()


def pinned(settings: Settings, grpc_port: int, health_port: int, http_port: int) -> Settings:
    """``settings`` listening on the ports worker 0 bound (port 0 in the file means: the one it picked)."""
    def at(listen: str, port: int) -> str:
        return f"{listen.rpartition(':')[0]}:{port}" if listen else listen

    server = dataclasses.replace(settings.server, listen=at(settings.server.listen, grpc_port),
                                 health_listen=at(settings.server.health_listen, health_port))
    http = dataclasses.replace(settings.http, listen=at(settings.http.listen, http_port))
    return dataclasses.replace(settings, server=server, http=http)


def joining(settings: Settings) -> Settings:
    """``settings`` for a worker started while others serve: tenants whose own files are invalid are quarantined
    (``policies.invalid_tenants_at_start``), as worker 0's first start alone decides whether to start at all."""
    policies = dataclasses.replace(settings.policies, invalid_tenants_at_start="quarantine")
    return dataclasses.replace(settings, policies=policies)
