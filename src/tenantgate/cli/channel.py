"""gRPC channels for the CLI's ``--server`` commands: plaintext, TLS (``--tls-ca``) or mTLS (plus
``--tls-cert``/``--tls-key``), their answers as JSON and their errors as text, and ``tenantgate health``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tenantgate.cli.verdict import settle
from tenantgate.errors import ConfigError
from tenantgate.numerals import NUMBER_SPELLING, read_number

MAX_TIMEOUT = 86_400  # gRPC holds a deadline in int64 nanoseconds: about 7.4e9 s overflowed into DEADLINE_EXCEEDED


def add_timeout_arg(cmd: argparse.ArgumentParser, default: float | None, what: str = "seconds") -> None:
    """``--timeout SECONDS``: more than 0 and at most a day (nan, inf, 0, negatives and values whose
    deadline gRPC cannot hold are usage errors). A ``None`` default lets a command tell whether it was given."""
    cmd.add_argument("--timeout", type=_seconds, default=default, metavar="SECONDS", help=what)


def _seconds(text: str) -> float:
    try:
        value = read_number(text)  # float() also read nan, inf, 1_0 and other scripts' digits
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r} ({NUMBER_SPELLING})") from None
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds up to {MAX_TIMEOUT}, not {text!r}")
    return value


def add_token_args(cmd: argparse.ArgumentParser) -> None:
    """``--token`` (visible in ``ps``; prefer the others), ``--token-file FILE`` or ``$TENANTGATE_TOKEN``;
    ``--token -`` reads stdin."""
    import os

    cmd.add_argument("--token", default=os.environ.get("TENANTGATE_TOKEN", ""),
                     help="bearer token (default: $TENANTGATE_TOKEN; '-' reads stdin). On a shared machine "
                          "prefer --token-file or the variable: command lines are visible to other users")
    cmd.add_argument("--token-file", default=None, metavar="FILE", help="read the bearer token from FILE")


def token_of(args: argparse.Namespace) -> str:
    """The token the options name (file, stdin, value or variable); never printed."""
    if getattr(args, "token_file", None):
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                return handle.readline().strip()
        except OSError as err:
            raise ConfigError(f"cannot read --token-file {args.token_file}: {err.strerror}") from err
        except UnicodeDecodeError as err:
            # A binary or mis-encoded file was a traceback (review finding); the message names no byte of it.
            raise ConfigError(f"--token-file {args.token_file} is not UTF-8 text") from err
    token = str(getattr(args, "token", "") or "")
    if token != "-":
        return token
    try:
        return sys.stdin.readline().strip()
    except UnicodeDecodeError as err:
        raise ConfigError("the token read from stdin (--token -) is not UTF-8 text") from err


def add_tls_args(cmd: argparse.ArgumentParser) -> None:
    """``--tls-ca FILE`` turns TLS on; ``--tls-cert FILE --tls-key FILE`` present a client certificate (mTLS)."""
    cmd.add_argument("--tls-ca", default=None, metavar="FILE",
                     help="CA bundle (PEM) to verify the server's certificate: connect with TLS")
    cmd.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate chain (PEM), for mTLS")
    cmd.add_argument("--tls-key", default=None, metavar="FILE", help="client private key (PEM), for mTLS")


def open_channel(args: argparse.Namespace) -> Any:
    """A channel to ``args.server``: TLS when ``--tls-ca`` (or a client certificate) is given, else plaintext."""
    import grpc

    ca, cert, key = getattr(args, "tls_ca", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if not (ca or cert):
        return grpc.insecure_channel(args.server)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "--tls-ca") if ca else None,
        private_key=_read(key, "--tls-key") if key else None,
        certificate_chain=_read(cert, "--tls-cert") if cert else None,
    )
    return grpc.secure_channel(args.server, credentials)


def message_dict(message: Any, *, all_fields: bool = True) -> dict[str, Any]:
    """``message`` as JSON data with the .proto's field names, as protobuf's ``MessageToDict`` renders it, except
    that 64-bit integers stay numbers (proto3 JSON makes them strings) and timestamps are UTC RFC 3339 with
    milliseconds, as in audit records. ``all_fields``: include fields at their default value."""
    from google.protobuf import json_format

    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                                     always_print_fields_with_no_presence=all_fields)
    _plain_values(message, data)
    return data


def _plain_values(message: Any, data: dict[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        kind = field.message_type
        if field.name not in data or (kind is not None and kind.GetOptions().map_entry):
            continue  # unset, or a map (none of ours holds 64-bit numbers or timestamps)
        if field.is_repeated:
            data[field.name] = [_plain_value(field, value, rendered)
                                for value, rendered in zip(getattr(message, field.name), data[field.name],
                                                           strict=True)]
        else:
            data[field.name] = _plain_value(field, getattr(message, field.name), data[field.name])


def _plain_value(field: Any, value: Any, rendered: Any) -> Any:
    from google.protobuf.descriptor import FieldDescriptor

    from tenantgate.core.model import rfc3339

    kind = field.message_type
    if kind is None:
        wide = field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
        return int(rendered) if wide else rendered
    if kind.full_name == "google.protobuf.Timestamp":
        return rfc3339(value.seconds + value.nanos / 1e9)
    if not kind.full_name.startswith("google.protobuf."):  # Struct and the like: as MessageToDict has them
        _plain_values(value, rendered)
    return rendered


_NO_CONNECTION = "failed to connect to all addresses"  # gRPC's own details: no call reached a server


def rpc_problem(err: Any) -> str:
    """A failed call's status code and details, as one line (``NOT_FOUND``, not ``NOT_FOUND: ``, when the
    server sent no details). When no connection could be made, say what to check: gRPC's own words ("Socket
    closed") are all a plaintext client gets from a TLS port, or from an mTLS port without a certificate."""
    details = err.details()
    problem = f"{err.code().name}: {details}" if details else err.code().name
    if details and details.startswith(_NO_CONNECTION):
        problem += (" (no connection: is the server running at that address? A port with TLS needs --tls-ca, "
                    "and one with mTLS also --tls-cert and --tls-key)")
    return problem


def add_health_command(sub: Any) -> None:
    health = sub.add_parser("health", help="ask a running server's gRPC health service (for probes)")
    health.add_argument("--server", default="127.0.0.1:50051", metavar="HOST:PORT")
    health.add_argument("--service", default="", help="service name (default: the server as a whole)")
    add_timeout_arg(health, 3.0)
    add_tls_args(health)
    health.set_defaults(handler=_health)


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open_channel(args) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as err:
            problem = rpc_problem(err)
            if err.code() == grpc.StatusCode.NOT_FOUND and args.service:
                problem = f"no such service: {args.service}"  # the health service answers with no details
            print(f"tenantgate: health {args.server}: {problem}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    code = settle(0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1)
    print(status)
    return code


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as err:
        raise ConfigError(f"{option}: cannot read {path}: {err.strerror}") from err
