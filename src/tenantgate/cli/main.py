"""``tenantgate serve | token mint | check | validate | status | health``.

The parser and dispatcher, and the request commands (``token mint``, ``check``, ``status``). ``serve``'s
machinery (start-up, workers, the banner) moved to ``cli/serve.py``; the other commands register themselves
from their own modules.

Exit codes: 0 success / allow, 1 error (usage errors too), 2 deny, 3 invalid policies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
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
from tenantgate.config_env import shown
from tenantgate.core.strictjson import parse_strict_json
from tenantgate.errors import ConfigError, PolicyError, TenantGateError
from tenantgate.numerals import int_option

EXIT_OK, EXIT_ERROR, EXIT_DENY, EXIT_INVALID_POLICIES = 0, 1, 2, 3
CHECK_TIMEOUT = 5.0  # seconds `check --server` waits for its answer

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
    except OSError as err:
        # The last resort for a file error no command expected: one line, not a traceback (review finding: a
        # file name longer than the file system allows ended `audit verify` with ENAMETOOLONG's traceback).
        where = f": {shown(os.fsdecode(err.filename))}" if isinstance(err.filename, (str, bytes)) else ""
        _report(report, "", TenantGateError(f"{err.strerror or err}{where}"))
        return EXIT_ERROR


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

    from tenantgate.cli import serve

    serve.add_command(sub, config_arg)

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
    mint.add_argument("--ttl", type=int_option, default=900, metavar="SECONDS")
    mint.set_defaults(handler=_mint)

    check = sub.add_parser("check", help="ask for a decision (in-process, or --server)")
    config_arg(check)
    request_args(check)
    check.add_argument("--server", default=None, metavar="HOST:PORT", help="ask a running server")
    add_timeout_arg(check, None, f"seconds, with --server (default {CHECK_TIMEOUT:g})")
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
    from tenantgate.identity.claimchecks import MAX_SUBJECT_CHARS

    if not is_tenant_id(args.tenant):
        raise ConfigError(f"--tenant {args.tenant!r} is not a tenant id ({TENANT_ID.pattern}): every decision "
                          "would deny the token (tenant_claim_missing)")
    if not args.sub or len(args.sub) > MAX_SUBJECT_CHARS:
        raise ConfigError(f"--sub must be 1 to {MAX_SUBJECT_CHARS} characters: every decision would deny the "
                          "token (token_invalid)")
    if args.act is not None and not 1 <= len(args.act) <= MAX_SUBJECT_CHARS:
        raise ConfigError(f"--act must be 1 to {MAX_SUBJECT_CHARS} characters: every decision would deny the "
                          "token (token_invalid)")
    if args.intents is not None and not _csv(args.intents):
        raise ConfigError("--intents names no intent: a token that binds none has every decision denied "
                          "(intent_missing, intent_not_bound); leave --intents out for a token that binds none")
    if args.act is not None and args.intents is None:
        raise ConfigError("--act needs --intents: an agent token must bind its intents, or every decision "
                          "denies it (intent_not_bound)")
    max_ttl, max_lifetime = settings.dev_issuer.max_ttl_seconds, settings.tokens.max_lifetime_seconds
    if not 1 <= args.ttl <= max_ttl:
        raise ConfigError(f"--ttl must be between 1 and {max_ttl} seconds (dev_issuer.max_ttl_seconds), "
                          f"not {args.ttl}")
    if args.ttl > max_lifetime:
        raise ConfigError(f"--ttl {args.ttl} is longer than tokens.max_lifetime_seconds ({max_lifetime}): every "
                          "decision would deny the token")


def _check(args: argparse.Namespace) -> int:
    from tenantgate.v1 import authorizer_pb2 as pb

    if not args.server:
        # Review finding: `check --tls-ca ca.pem ...` without --server decided in-process on the local files,
        # silently, where the user meant to ask a server over TLS.
        remote_only = [option for option, value in (("--timeout", args.timeout), ("--tls-ca", args.tls_ca),
                                                     ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key))
                       if value is not None]
        if remote_only:
            raise ConfigError(f"{', '.join(remote_only)} only apply with --server; without --server, check decides "
                              "in-process on the local configuration")
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
    try:
        token.encode("utf-8")
    except UnicodeEncodeError as err:  # undecodable bytes in the argument: a protobuf string cannot carry them
        raise ConfigError("the token is not UTF-8 text and cannot be sent to a server (a token is ASCII)") from err
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
        except (OverflowError, ValueError, TypeError) as err:
            # A protobuf Struct carries numbers as doubles: an integer beyond them cannot be sent (review finding:
            # a traceback, where deciding in-process gave an audited invalid_request).
            raise ConfigError(f"{name} cannot be sent to a server: {err} (numbers travel as doubles)") from err
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
            timeout = CHECK_TIMEOUT if args.timeout is None else args.timeout
            return pb_grpc.AuthorizerStub(channel).Check(request, timeout=timeout)
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
    healthy = answer.last_reload_ok and answer.audit_writable and answer.grant_store_reachable and \
        not answer.quarantined_tenants
    code = settle(EXIT_OK if healthy else EXIT_ERROR)
    print(json.dumps(message_dict(answer), indent=2))
    return code


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    sys.exit(main())
