"""``tenantgate serve``: run the PDP (gRPC), as one process or as a supervisor of ``server.workers`` processes,
and print the start-up banner once it serves.

Moved out of ``cli/main.py`` (the parser and dispatcher), which registers this command with ``add_command``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tenantgate import __version__
from tenantgate.cli.main import EXIT_OK, _settings, guarded
from tenantgate.errors import ConfigError, PolicyError
from tenantgate.numerals import int_option

EMBEDDED_DEFAULTS = "embedded defaults"  # Settings.source without a config file
# What the banner's hint asks for: a User reading an Invoice (the bundled example schema declares both).
TOUR_PROBE = 'permit(principal is User, action == Action::"read", resource is Invoice);'


def add_command(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``serve`` on an argparse subparsers object; its handler returns the exit code."""
    serve = sub.add_parser("serve", help="run the PDP (gRPC)")
    config_arg(serve)
    serve.add_argument("--workers", type=int_option, default=None, metavar="N",
                       help="server processes sharing the ports (default: server.workers, 1)")
    serve.set_defaults(handler=_serve)


class _StopBeforeServing(BaseException):
    """SIGTERM arrived while ``serve`` was still starting (before the server handles signals itself)."""


def _stop_before_serving(_signum: int, _frame: Any) -> None:
    raise _StopBeforeServing


class _EarlyHangups:
    """The SIGHUP handler while ``serve`` is still starting: remembers that one came, and ``replay`` sends it
    again once the server handles SIGHUP itself (a reload of what changed meanwhile)."""

    def __init__(self) -> None:
        self.came = False

    def __call__(self, _signum: int, _frame: Any) -> None:
        self.came = True

    def replay(self) -> None:
        if self.came:
            self.came = False
            os.kill(os.getpid(), signal.SIGHUP)


def _serve(args: argparse.Namespace) -> int:
    """Run the server; a SIGTERM while it is still starting (loading policies, fetching JWKS) stops it at once
    with exit 0. Review finding: as a container's PID 1, for which an unhandled SIGTERM does nothing, it was
    ignored until the full grace period ended in SIGKILL.

    A SIGHUP while it is still starting is kept and sent again once the server handles it, so it reloads what
    changed meanwhile (hostile review: SIGHUP's default action killed the starting server, exit 129)."""
    late = quiet_grpc_core()
    previous = signal.signal(signal.SIGTERM, _stop_before_serving)
    hangups = _EarlyHangups()
    previous_hangup = signal.signal(signal.SIGHUP, hangups)
    try:
        return _serve_until_stopped(args, hangups, late)
    except _StopBeforeServing:
        print("tenantgate: SIGTERM while starting: stopped before serving", file=sys.stderr)
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hangup)


def quiet_grpc_core() -> bool:
    """Keep gRPC's C core to errors (``GRPC_VERBOSITY=ERROR``) unless the environment says otherwise.

    Review finding: with TLS on the gRPC port, the core wrote an ``I...`` line (not JSON, whatever
    ``log.level``) for every failed handshake (garbage, no client certificate, a foreign CA, plaintext): about
    10,000 lines a second from one client. The core reads the variable when gRPC is first imported, so this
    runs before anything on the serve path imports it (``tenantgate.cli.main`` and the commands it
    registers do not), and before ``--workers`` forks: the workers inherit it. The container image sets it
    too. An operator's own ``GRPC_VERBOSITY`` is left as it is. Returns True when that came too late: gRPC was
    imported before (embedded) and read its environment then (review finding), for ``serve`` to say so."""
    late = "GRPC_VERBOSITY" not in os.environ and "grpc" in sys.modules
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return late


def _serve_until_stopped(args: argparse.Namespace, hangups: _EarlyHangups, grpc_verbosity_late: bool = False) -> int:
    from tenantgate.observability.logging import configure

    settings = _settings(args) if args.workers is None else _settings_with_workers(args)
    configure(settings.log.level)
    if grpc_verbosity_late:
        logging.getLogger("tenantgate.serve").warning(
            "gRPC was imported before serve started: set GRPC_VERBOSITY=ERROR in the environment, or its C core "
            "logs a plain-text line per failed TLS handshake")
    if settings.server.workers > 1:
        return _serve_workers(settings)
    from tenantgate import app as application
    from tenantgate.cli.shared_ports import check_free

    for listen, key in ((settings.server.listen, "server.listen"),
                        (settings.server.health_listen, "server.health_listen")):
        check_free(listen, key, claim=False)
    built = application.build(settings)

    def started(port: int) -> None:
        hangups.replay()  # app.serve handles SIGHUP before it calls this
        _banner(settings, _served(built, port))

    asyncio.run(application.serve(built, started))
    return EXIT_OK


def _settings_with_workers(args: argparse.Namespace) -> Any:
    """The settings with ``--workers N`` in place of ``server.workers`` before they are validated, so the flag
    overrides the file and ``TENANTGATE_SERVER_WORKERS`` whatever they say (as the README promises)."""
    from tenantgate import config
    from tenantgate.configcheck import check_workers

    try:
        check_workers(args.workers)
    except ConfigError as err:
        raise ConfigError(f"--workers {args.workers}: {err}") from err
    return config.load(args.config, overrides={"server": {"workers": args.workers}})


def _serve_workers(settings: Any) -> int:
    """``server.workers`` > 1: a supervisor forks the workers (see ``cli/supervisor.py``)."""
    from tenantgate.cli import worker
    from tenantgate.cli.children import Announce
    from tenantgate.cli.supervisor import Supervisor

    supervisor_pid = os.getpid()

    def work(worker_settings: Any, index: int, announce: Announce) -> int:
        # A worker's failure is a JSON log line, as the supervisor's own lines are (not the plain message).
        return guarded(lambda: worker.run(worker_settings, index, supervisor_pid,
                                          lambda built, port: announce(_served(built, port))),
                       report=worker.log_failure)

    def ready(report: Mapping[str, Any], metrics_port: int) -> None:
        _banner(settings, report, metrics_port)

    return Supervisor(settings, work, ready).run()


def _served(built: Any, port: int) -> dict[str, Any]:
    """What a started server reports for the banner (a worker sends it to the supervisor as JSON)."""
    compiled = built.policies.current().compiled
    return {"grpc": port, "health": built.health_port, "http": built.http_port, "metrics": built.metrics_port,
            "policies": [compiled.total_policies, len(compiled.tenants), compiled.version],
            "tour": tour_fits(built.settings)}


def tour_fits(settings: Any) -> bool:
    """Whether the banner's "Try" hint works as printed: it mints without ``--config`` (so only the embedded
    defaults sign with the key this server trusts) and reads an Invoice (so the schema must declare it)."""
    from tenantgate.core.compiler import PolicySource, compile_policies

    if settings.source != EMBEDDED_DEFAULTS or not settings.dev_issuer.enabled:
        return False
    schema = settings.policies.schema_file
    try:
        compile_policies(PolicySource(schema, Path(schema).read_text(encoding="utf-8")),
                         [PolicySource("tour.cedar", TOUR_PROBE)])
    except (OSError, UnicodeDecodeError, PolicyError):
        return False
    return True


def _banner(settings: Any, served: Mapping[str, Any], metrics_port: int = 0) -> None:
    host = settings.server.listen.rpartition(":")[0]
    address = f"{host}:{served['grpc']}"
    total, tenants, version = served["policies"]
    workers = settings.server.workers
    audit = settings.audit.path
    if workers > 1:
        from tenantgate.audit.files import worker_path

        others = [worker_path(audit, k).name for k in range(1, workers)]
        audit += f", {others[0]}{' ... ' + others[-1] if len(others) > 1 else ''} (one chain per worker)"
    lines = [
        f"TenantGate {__version__} serving gRPC on {address} (health and reflection enabled)",
        f"  config      {settings.source}",
        f"  policies    {settings.policies.dir} ({total} policies incl. the built-in "
        f"tenant guardrail, {tenants} tenant partition(s), version {version})",
        f"  audit log   {audit}",
        "  workers     1 process" if workers == 1 else
        f"  workers     {workers} processes sharing the ports (SO_REUSEPORT), supervisor pid {os.getpid()}",
    ]
    if settings.server.metrics_listen and workers > 1:
        lines.append(f"  metrics     http://{settings.server.metrics_listen.rpartition(':')[0]}:{metrics_port}"
                     "/metrics (summed over the workers)")
    elif settings.server.metrics_listen:  # the port bound (the setting may say 0)
        lines.append(f"  metrics     http://{settings.server.metrics_listen.rpartition(':')[0]}:"
                     f"{served.get('metrics') or settings.server.metrics_listen.rpartition(':')[2]}/metrics")
    if served["http"]:
        h = settings.http
        scheme = "https" if h.cert_file else "http"
        lines.append(f"  AuthZEN     {scheme}://{h.listen.rpartition(':')[0]}:{served['http']}/access/v1/evaluation "
                     f"({h.mode})")
    if settings.dev_issuer.enabled:
        lines.append(f"  dev issuer  {settings.dev_issuer.issuer} (keys in {settings.dev_issuer.key_dir}) "
                     "DEVELOPMENT ONLY")
    if served.get("tour"):
        lines += [
            "",
            "Try, in a second shell from this directory:",
            "  TOKEN=$(.venv/bin/tenantgate token mint --tenant acme --sub alice --roles viewer)",
            f"  .venv/bin/tenantgate check --server {address} --token \"$TOKEN\" --action read "
            "--resource-type Invoice --resource-id inv-1 --resource-tenant acme",
            "  (then --resource-tenant globex: denied, reason cross_tenant)",
        ]
    lines.append("Stop with Ctrl-C (SIGTERM drains in-flight calls).")
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # Started with a closed pipe as stdout (review finding: `guarded` took this for a reader leaving
        # early and the server exited 0, silently). The banner is a courtesy: say so on stderr and serve.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        logging.getLogger("tenantgate").warning("stdout has no reader: the start-up banner (and any audit.stdout "
                                                "copy) is discarded; serving")
