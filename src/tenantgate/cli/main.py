"""``tenantgate serve | token mint | check | validate | status | health``.

Exit codes: 0 success / allow, 1 error (usage errors too), 2 deny, 3 invalid policies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from tenantgate import __version__
from tenantgate.cli.channel import (
    add_health_command,
    add_timeout_arg,
    add_tls_args,
    add_token_args,
    message_dict,
    open_channel,
    rpc_problem,
    token_of,
)
from tenantgate.cli.verdict import settle, settled
from tenantgate.core.strictjson import parse_strict_json
from tenantgate.errors import ConfigError, PolicyError, TenantGateError

EXIT_OK, EXIT_ERROR, EXIT_DENY, EXIT_INVALID_POLICIES = 0, 1, 2, 3
EMBEDDED_DEFAULTS = "embedded defaults"  # Settings.source without a config file
# What the banner's hint asks for: a User reading an Invoice (the bundled example schema declares both).
TOUR_PROBE = 'permit(principal is User, action == Action::"read", resource is Invoice);'

Report = Callable[[str, Sequence[str]], None]  # (one-line message, located details) of a failed command


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_ERROR
    return guarded(lambda: args.handler(args))


def guarded(command: Callable[[], int], report: Report | None = None) -> int:
    """Run ``command``; our errors become the documented exit code and a message: by default one line on
    stderr (a policy error's locations indented below it), for a human at a terminal; ``report(message,
    details)`` instead (a worker of ``serve --workers N`` logs it as a JSON line)."""
    try:
        return command()
    except PolicyError as err:
        _report(report, "invalid policies: ", err)
        return EXIT_INVALID_POLICIES
    except TenantGateError as err:
        _report(report, "", err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader left. The answer still stands: a command with a
        # verdict (deny, failures, invalid policies, tampering, unhealthy) settles on it before printing and
        # exits with it (review finding: a DENY piped into `true` exited 0); a command without one exits 0.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return settled(EXIT_OK)


def _report(report: Report | None, prefix: str, err: TenantGateError) -> None:
    details = [str(d) for d in getattr(err, "diagnostics", None) or ()]
    text = str(err)
    located = "".join(f"\n  {d}" for d in details)  # how PolicyError appends them to its message
    if report is None:
        from tenantgate.core.cedar_text import escape_unprintable

        lines = f"tenantgate: {prefix}{text}".split("\n")  # may quote tenants' text: escaped line by line
        print("\n".join(escape_unprintable(line) for line in lines), file=sys.stderr)
        return
    report(prefix + (text[:-len(located)] if located and text.endswith(located) else text), details)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, the documented error code (argparse's 2 means DENY in this CLI). Subcommand
    parsers are of this class too (``add_subparsers`` makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tenantgate", description="TenantGate policy decision point.")
    p.add_argument("--version", action="version", version=f"tenantgate {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    def config_arg(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--config", default=os.environ.get("TENANTGATE_CONFIG"),
                         help="TOML config file (default: $TENANTGATE_CONFIG, else embedded defaults)")

    serve = sub.add_parser("serve", help="run the PDP (gRPC)")
    config_arg(serve)
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="server processes sharing the ports (default: server.workers, 1)")
    serve.set_defaults(handler=_serve)

    token = sub.add_parser("token", help="development tokens")
    token_sub = token.add_subparsers(metavar="ACTION")
    mint = token_sub.add_parser("mint", help="mint a token from the development issuer")
    config_arg(mint)
    mint.add_argument("--tenant", required=True)
    mint.add_argument("--sub", required=True, help="subject (user id)")
    mint.add_argument("--roles", default=None, help="comma-separated roles (without it the token has no roles claim; "
                      "\"\" gives an empty one: no roles, not even from entity data)")
    mint.add_argument("--intents", default=None, help="comma-separated intents to bind")
    mint.add_argument("--act", default=None, metavar="AGENT", help="mint a delegated token for this agent")
    mint.add_argument("--ttl", type=int, default=900, metavar="SECONDS")
    mint.set_defaults(handler=_mint)

    check = sub.add_parser("check", help="ask for a decision (in-process, or --server)")
    config_arg(check)
    request_args(check)
    check.add_argument("--server", default=None, metavar="HOST:PORT", help="ask a running server")
    add_timeout_arg(check, 5.0, "seconds, with --server")
    check.add_argument("--explain", action="store_true", help="show every step of the decision (in-process)")
    add_tls_args(check)
    check.set_defaults(handler=_check)

    status = sub.add_parser("status", help="what a running server is serving (policy version, last reload, ...)")
    status.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT")
    add_timeout_arg(status, 5.0)
    add_tls_args(status)
    status.set_defaults(handler=_status)
    add_health_command(sub)

    from tenantgate.cli import policy, policytest

    policy.add_commands(sub, config_arg, request_args)
    policytest.add_command(sub)

    from tenantgate.cli import audit, grants

    grants.add_commands(sub)
    audit.add_commands(sub)

    return p


def request_args(cmd: argparse.ArgumentParser) -> None:
    """The options that describe one decision request (check, explain)."""
    add_token_args(cmd)
    cmd.add_argument("--action", required=True)
    cmd.add_argument("--resource-type", required=True)
    cmd.add_argument("--resource-id", required=True)
    cmd.add_argument("--resource-tenant", required=True)
    cmd.add_argument("--resource-attributes", default=None, metavar="JSON")
    cmd.add_argument("--intent", default="")
    cmd.add_argument("--context", default=None, metavar="JSON")


def _settings(args: argparse.Namespace) -> Any:
    from tenantgate import config

    return config.load(args.config)


def in_process_settings(args: argparse.Namespace) -> Any:
    """The settings of a command that decides in-process and prints its answer on stdout (``check`` without
    ``--server``, ``explain``): as configured, but without ``audit.stdout``'s copy of each record, which
    would come out ahead of the answer and break a JSON reader. The record itself is written as always, to
    the chained log (``audit.path``) before the answer: that is the durable one, and the copy is only a
    best-effort feed for a server's log shipper (on stderr it would mix with the log lines)."""
    import dataclasses

    settings = _settings(args)
    return dataclasses.replace(settings, audit=dataclasses.replace(settings.audit, stdout=False))


class _StopBeforeServing(BaseException):
    """SIGTERM arrived while ``serve`` was still starting (before the server handles signals itself)."""


def _stop_before_serving(_signum: int, _frame: Any) -> None:
    raise _StopBeforeServing


def _serve(args: argparse.Namespace) -> int:
    """Run the server; a SIGTERM while it is still starting (loading policies, fetching JWKS) stops it at once
    with exit 0. Review finding: as a container's PID 1, for which an unhandled SIGTERM does nothing, it was
    ignored until the full grace period ended in SIGKILL."""
    previous = signal.signal(signal.SIGTERM, _stop_before_serving)
    try:
        return _serve_until_stopped(args)
    except _StopBeforeServing:
        print("tenantgate: SIGTERM while starting: stopped before serving", file=sys.stderr)
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve_until_stopped(args: argparse.Namespace) -> int:
    from tenantgate.observability.logging import configure

    settings = _settings(args)
    if args.workers is not None:
        import dataclasses

        from tenantgate import config

        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, workers=args.workers))
        try:
            config.validate(settings)
        except ConfigError as err:  # only the number of workers changed: the message is about it
            raise ConfigError(f"--workers {args.workers}: {err}") from err
    configure(settings.log.level)
    if settings.server.workers > 1:
        return _serve_workers(settings)
    from tenantgate import app as application

    built = application.build(settings)

    def started(port: int) -> None:
        _banner(settings, _served(built, port))

    asyncio.run(application.serve(built, started))
    return EXIT_OK


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


def _mint(args: argparse.Namespace) -> int:
    from tenantgate.core.model import ClaimNames
    from tenantgate.identity import DevIssuer

    settings = _settings(args)
    if not settings.dev_issuer.enabled:
        raise ConfigError("token mint works only with the development issuer ([dev_issuer] enabled = true)")
    _check_mintable(args, settings)
    issuer = DevIssuer(settings.dev_issuer)
    issuer.ensure_keys()
    t = settings.tokens
    token = issuer.mint(
        tenant=args.tenant,
        subject=args.sub,
        roles=None if args.roles is None else _csv(args.roles),
        intents=None if args.intents is None else _csv(args.intents),
        actor=args.act,
        ttl_seconds=args.ttl,
        claim_names=ClaimNames(tenant=t.tenant_claim, roles=t.roles_claim, intents=t.intents_claim),
    )
    print(token)
    return EXIT_OK


def _check_mintable(args: argparse.Namespace, settings: Any) -> None:
    """Refuse (``ConfigError``) a token that every decision under ``settings`` would deny: a tenant outside the
    tenant id grammar (``tenant_claim_missing``), or a ``--ttl`` the issuer may not sign or verifiers refuse
    (``tokens.max_lifetime_seconds``)."""
    from tenantgate.core.request import TENANT_ID, is_tenant_id
    from tenantgate.identity.verifier import MAX_SUBJECT_CHARS

    if not is_tenant_id(args.tenant):
        raise ConfigError(f"--tenant {args.tenant!r} is not a tenant id ({TENANT_ID.pattern}): every decision "
                          "would deny the token (tenant_claim_missing)")
    if not args.sub or len(args.sub) > MAX_SUBJECT_CHARS:
        raise ConfigError(f"--sub must be 1 to {MAX_SUBJECT_CHARS} characters: every decision would deny the "
                          "token (token_invalid)")
    max_ttl, max_lifetime = settings.dev_issuer.max_ttl_seconds, settings.tokens.max_lifetime_seconds
    if not 1 <= args.ttl <= max_ttl:
        raise ConfigError(f"--ttl must be between 1 and {max_ttl} seconds (dev_issuer.max_ttl_seconds), "
                          f"not {args.ttl}")
    if args.ttl > max_lifetime:
        raise ConfigError(f"--ttl {args.ttl} is longer than tokens.max_lifetime_seconds ({max_lifetime}): every "
                          "decision would deny the token")


def _check(args: argparse.Namespace) -> int:
    from tenantgate.v1 import authorizer_pb2 as pb

    if args.explain:
        from tenantgate.cli.policy import explain

        if args.server:
            raise ConfigError("--explain decides in-process on the local configuration; drop --server")
        return explain(args, as_json=False)
    response = _check_remote(args, check_request(args)) if args.server else _check_local(args)
    code = settle(EXIT_OK if response.decision == pb.ALLOW else EXIT_DENY)
    print(json.dumps(message_dict(response), indent=2))
    return code


def check_request(args: argparse.Namespace) -> Any:
    """The CheckRequest that ``check`` and ``explain`` options describe."""
    from tenantgate.v1 import authorizer_pb2 as pb

    token = token_of(args)
    _check_text(args)
    request = pb.CheckRequest(
        token=token,
        action=args.action,
        resource=pb.Resource(type=args.resource_type, id=args.resource_id, tenant=args.resource_tenant),
        intent=args.intent,
    )
    for target, name, data in ((request.context, "--context", _json_object(args.context, "--context")),
                               (request.resource.attributes, "--resource-attributes",
                                _json_object(args.resource_attributes, "--resource-attributes"))):
        try:
            target.update(data)
        except RecursionError as err:
            raise ConfigError(f"{name} is nested too deeply") from err
    return request


def check_input(args: argparse.Namespace) -> Any:
    """The question ``check`` and ``explain`` options describe, for deciding in-process: taken from the JSON
    as it is (whole numbers stay exact; a protobuf Struct would carry them as doubles, rounding those past
    2**53, which the gRPC path therefore refuses)."""
    from tenantgate.core.model import CheckInput, Resource

    _check_text(args)
    return CheckInput(token=token_of(args), action=args.action, intent=args.intent, api="cli",
                      resource=Resource(type=args.resource_type, id=args.resource_id, tenant=args.resource_tenant,
                                        attributes=_json_object(args.resource_attributes, "--resource-attributes")),
                      context=_json_object(args.context, "--context"))


def _check_text(args: argparse.Namespace) -> None:
    """Refuse an option that is not UTF-8 text (the shell passed raw bytes; Python holds them as surrogates,
    which no request can carry: review finding, a traceback after the decision was made)."""
    for option in ("action", "resource_type", "resource_id", "resource_tenant", "intent", "context",
                   "resource_attributes"):
        value = getattr(args, option, None)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError as err:
            raise ConfigError(f"--{option.replace('_', '-')} is not valid UTF-8 text") from err


def _json_object(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        # Strict, as AuthZEN reads its body: `{"status":"paid","status":"draft"}` must not mean "draft" here
        # and be refused there. Integers beyond Python's 4,300-digit limit are ValueErrors too.
        data = parse_strict_json(text)
    except ValueError as err:
        if "nested too deeply" in str(err):
            raise ConfigError(f"{name} is nested too deeply") from err
        raise ConfigError(f"{name} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a JSON object")
    return data


def _check_local(args: argparse.Namespace) -> Any:
    from tenantgate import app as application
    from tenantgate.rpc import convert

    check = check_input(args)
    built = application.build(in_process_settings(args))
    try:
        return convert.check_response(built.pdp.decide(check))
    finally:
        application.close(built)


def _check_remote(args: argparse.Namespace, request: Any) -> Any:
    import grpc

    from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

    with open_channel(args) as channel:
        try:
            return pb_grpc.AuthorizerStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as err:
            raise ConfigError(f"server {args.server}: {rpc_problem(err)}") from err


def _status(args: argparse.Namespace) -> int:
    import grpc

    from tenantgate.v1 import admin_pb2 as adm
    from tenantgate.v1 import admin_pb2_grpc as adm_grpc

    with open_channel(args) as channel:
        try:
            answer = adm_grpc.AdminStub(channel).Status(adm.StatusRequest(), timeout=args.timeout)
        except grpc.RpcError as err:
            raise ConfigError(f"server {args.server}: {rpc_problem(err)}") from err
    code = settle(EXIT_OK if answer.last_reload_ok and answer.audit_writable else EXIT_ERROR)
    print(json.dumps(message_dict(answer), indent=2))
    return code


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    sys.exit(main())
