"""``tenantgate grant request | approve | revoke | list`` against a running server's BreakGlass API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tenantgate.cli.channel import (
    add_timeout_arg,
    add_tls_args,
    add_token_args,
    message_dict,
    open_channel,
    rpc_problem,
    token_of,
)
from tenantgate.core.cedar_text import escape_unprintable
from tenantgate.errors import ConfigError
from tenantgate.numerals import int_option

STATES = ("pending", "active", "expired", "revoked")


def add_commands(sub: Any) -> None:
    grant = sub.add_parser("grant", help="break-glass grants (against --server)")
    grant_sub = grant.add_subparsers(metavar="ACTION")

    def common(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT")
        add_token_args(cmd)
        cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
        add_timeout_arg(cmd, 10.0)
        add_tls_args(cmd)

    request = grant_sub.add_parser("request", help="ask for access to another tenant")
    common(request)
    request.add_argument("--target-tenant", required=True)
    request.add_argument("--actions", required=True, help="comma-separated actions, e.g. read,update")
    request.add_argument("--reason", required=True)
    request.add_argument("--ticket", default="")
    request.add_argument("--duration", type=int_option, required=True, metavar="SECONDS")
    request.set_defaults(handler=_request)

    approve = grant_sub.add_parser("approve", help="approve a pending grant (a second person)")
    common(approve)
    approve.add_argument("grant_id")
    approve.set_defaults(handler=_approve)

    revoke = grant_sub.add_parser("revoke", help="end a pending or active grant")
    common(revoke)
    revoke.add_argument("grant_id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=_revoke)

    listing = grant_sub.add_parser("list", help="list grants")
    common(listing)
    listing.add_argument("--tenant", default="", help="target tenant (default: all)")
    listing.add_argument("--state", default="", choices=("", *STATES))
    listing.set_defaults(handler=_list)


def _request(args: argparse.Namespace) -> int:
    from tenantgate.v1 import breakglass_pb2 as bg

    actions = [a.strip() for a in args.actions.split(",") if a.strip()]
    msg = bg.RequestGrantRequest(target_tenant=args.target_tenant, actions=actions, reason=args.reason,
                                 ticket=args.ticket, duration_seconds=args.duration)
    return _show(args, [_call(args, "RequestGrant", msg)])


def _approve(args: argparse.Namespace) -> int:
    from tenantgate.v1 import breakglass_pb2 as bg

    return _show(args, [_call(args, "ApproveGrant", bg.ApproveGrantRequest(grant_id=args.grant_id))])


def _revoke(args: argparse.Namespace) -> int:
    from tenantgate.v1 import breakglass_pb2 as bg

    msg = bg.RevokeGrantRequest(grant_id=args.grant_id, reason=args.reason)
    return _show(args, [_call(args, "RevokeGrant", msg)])


def _list(args: argparse.Namespace) -> int:
    from tenantgate.v1 import breakglass_pb2 as bg

    state = bg.GrantState.Value(args.state.upper()) if args.state else bg.GRANT_STATE_UNSPECIFIED
    answer = _call(args, "ListGrants", bg.ListGrantsRequest(tenant=args.tenant, state=state))
    status = _show(args, list(answer.grants))
    if answer.truncated:
        narrow = ("narrow the list with --state and --tenant" if not (args.state and args.tenant) else
                  "older ones cannot be listed (there is no paging); approve, revoke or let some expire")
        print(f"note: more grants matched than the newest {len(answer.grants):,} listed here: {narrow}",
              file=sys.stderr)
    return status


def _call(args: argparse.Namespace, method: str, message: Any) -> Any:
    import grpc

    from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

    token = token_of(args)
    if not token:
        raise ConfigError("a token is required: --token-file, TENANTGATE_TOKEN or --token")
    with open_channel(args) as channel:
        stub = bg_grpc.BreakGlassStub(channel)
        try:
            return getattr(stub, method)(message, timeout=args.timeout,
                                         metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as err:
            raise ConfigError(f"{method} refused: {rpc_problem(err)}") from err


def _show(args: argparse.Namespace, grants: list[Any]) -> int:
    # Numbers as numbers; times as in audit records (RFC 3339 UTC, milliseconds), in the table too.
    rows = [message_dict(g, all_fields=False) for g in grants]
    if args.json:
        print(json.dumps(rows if args.handler is _list else rows[0], indent=2))
        return 0
    header = ("ID", "STATE", "OPERATOR", "TARGET", "ACTIONS", "EXPIRES", "TICKET")
    table = [header] + [(r.get("id", ""), r.get("state", ""), f"{r.get('operator', '')}@{r.get('operator_tenant', '')}",
                          r.get("target_tenant", ""), ",".join(r.get("actions", [])), r.get("expires_at", "-"),
                          r.get("ticket", "")) for r in rows]
    # Whatever the store holds, a table cell never carries a control character to the terminal.
    table = [tuple(escape_unprintable(str(cell)) for cell in row) for row in table]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no grants)", file=sys.stderr)
    return 0
