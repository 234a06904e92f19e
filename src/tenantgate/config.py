"""Typed, frozen settings; the only reader of configuration files and ``TENANTGATE_*`` environment variables.

``load(path, env)`` reads one TOML file (or the embedded development defaults when ``path`` is None),
applies environment overrides, resolves relative paths against the config file's directory, validates,
and returns ``Settings``. Every key is documented in the README. Unknown keys are errors, so a typo never
silently falls back to a default.

Environment overrides: ``TENANTGATE_<SECTION>_<KEY>`` (upper case), e.g. ``TENANTGATE_SERVER_LISTEN`` or
``TENANTGATE_TOKENS_LEEWAY_SECONDS``. Lists are comma-separated. Keys of a nested table take its name too
(``TENANTGATE_SERVER_TLS_CERT_FILE``). Issuer and route tables cannot be set from the environment (they
are structured); use the file. ``TENANTGATE_TEST_*`` variables belong to the test suite and are ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import SplitResult, urlsplit

from tenantgate.errors import ConfigError
from tenantgate.redact import redact_url

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
MAX_WORKERS = 64  # server.workers
GRPC_INT_MAX = 2**31 - 1  # gRPC channel arguments and the concurrent-call limit are C ints
A_WEEK, A_YEAR = 604_800, 31_536_000
MIN_CONNECTION_AGE, MAX_CONNECTION_AGE = 1, A_WEEK  # server.max_connection_age_seconds when not 0
MAX_GRACE = 86_400  # server.grace_seconds: a drain longer than a day is a typo
MAX_GRANT_SECONDS = A_YEAR  # grants.max_ttl_seconds, pending_ttl_seconds (timestamps stay valid)
MAX_LOOKUP_TIMEOUT = 5.0  # grants.lookup_timeout_seconds: the wait holds the event loop
# Upper bounds no deployment needs to pass: beyond them a value is a typo, and some (tokens.max_token_bytes
# sizes gRPC's metadata limit and aiohttp's header limit, both C integers) broke every request while the
# server looked healthy. Lifetimes: a year; intervals and cache ages: a week.
MAXIMA: dict[str, tuple[int, str]] = {
    "tokens.max_token_bytes": (1_048_576, "1 MiB"),
    "tokens.max_lifetime_seconds": (A_YEAR, "a year"),
    "tokens.jwks_cache_seconds": (A_WEEK, "a week"),
    "tokens.jwks_refresh_min_interval_seconds": (A_WEEK, "a week"),
    # The cache also holds at most 64 MiB: more entries than this could never be filled with real tokens.
    "tokens.cache_size": (1_000_000, "a million"),
    "dev_issuer.max_ttl_seconds": (A_YEAR, "a year"),
    "http.max_body_bytes": (67_108_864, "64 MiB"),
    "http.max_concurrent_requests": (65_536, "64 Ki"),
    "policies.poll_interval_seconds": (A_WEEK, "a week"),
    "grants.sweep_interval_seconds": (A_WEEK, "a week"),
    "audit.checkpoint_seconds": (A_WEEK, "a week"),
}
# Claims whose meaning is fixed: RFC 7519's registered claims, and those TenantGate reads itself (act: RFC 8693
# actor; cnf: RFC 8705 certificate binding). A claim setting naming one would read, say, every token's subject
# as its roles (review finding: roles_claim = "sub" denied every token).
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "act", "cnf"})
CLAIM_KEYS = ("tenant_claim", "roles_claim", "intents_claim")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: str = ""  # server certificate chain (PEM); with key_file, the gRPC port serves TLS
    key_file: str = ""
    client_ca_file: str = ""  # CA bundle for client certificates: set = mTLS (a client certificate is required)
    allowed_callers: tuple[str, ...] = ()  # SPIFFE IDs / DNS names of client certificate SANs; empty = any


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    max_message_bytes: int = 1_048_576
    max_concurrent_rpcs: int = 1000
    grace_seconds: float = 10.0
    state_dir: str = ".tenantgate"
    health_listen: str = ""  # plaintext port serving only grpc.health.v1 (for probes when TLS is on); "" = off
    workers: int = 1  # server processes sharing the ports (SO_REUSEPORT) under one supervisor; 1 = no fork
    # > 0: after about this long the gRPC port asks a client to reconnect (HTTP/2 GOAWAY; calls in flight get
    # grace_seconds, at least 1 s), so with workers the kernel places its next connection anew. 0 = never.
    max_connection_age_seconds: float = 0.0
    tls: TlsSettings = field(default_factory=TlsSettings)


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_file: str = ""
    jwks_url: str = ""
    tenants: tuple[str, ...] = ()  # tenants this issuer may assert in tokens.tenant_claim; empty = any


@dataclass(frozen=True, slots=True)
class TokenSettings:
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    intents_claim: str = "intents"
    leeway_seconds: int = 30
    max_lifetime_seconds: int = 86_400
    require_typ: bool = False
    cache_size: int = 10_000
    jwks_cache_seconds: int = 300
    jwks_refresh_min_interval_seconds: int = 30
    jwks_fetch_timeout_seconds: float = 2.0
    max_token_bytes: int = 16_384
    issuers: tuple[IssuerSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class DevIssuerSettings:
    enabled: bool = False
    issuer: str = "https://dev.tenantgate.local"
    audience: str = "tenantgate"
    algorithm: str = "ES256"
    key_dir: str = ""  # default: <state_dir>/dev-issuer
    max_ttl_seconds: int = 86_400


@dataclass(frozen=True, slots=True)
class PolicySettings:
    dir: str = "policies"
    schema_file: str = ""  # default: <dir>/schema.cedarschema
    partition_cache_size: int = 1024
    poll_interval_seconds: float = 2.0  # 0 = no polling (SIGHUP still reloads)
    max_tenant_policies: int = 1000  # policies in one tenant's own files
    max_tenant_policy_bytes: int = 262_144  # bytes of one tenant's own policy files together


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: str = ""  # default: <state_dir>/audit.jsonl
    durability: str = "flush"  # "flush" (in the OS before the answer) | "fsync" (on disk, group commit)
    rotate_bytes: int = 0  # rotate the live file before it would pass this size; 0 = off
    keep_files: int = 10  # rotated files kept (audit.jsonl.1 ... .N); 0 = keep all
    checkpoint_key_file: str = ""  # Ed25519 private key (PEM) for signed checkpoints; "" = none
    checkpoint_every: int = 1000  # records between signed checkpoints
    checkpoint_seconds: float = 60.0  # also after this many seconds (0 = only by count)
    stdout: bool = False  # also print each record as a JSON line on stdout (for a log shipper)


@dataclass(frozen=True, slots=True)
class GrantSettings:
    store: str = ""  # default: sqlite:///<state_dir>/grants.db
    operator_tenant: str = "platform"
    operator_role: str = "breakglass-operator"
    approver_role: str = "breakglass-approver"
    require_approval: bool = True
    require_ticket: bool = True
    max_ttl_seconds: int = 3600
    pending_ttl_seconds: int = 86_400
    sweep_interval_seconds: float = 5.0
    # Longest a decision waits for a grant lookup (on the event loop) before denying grant_store_unavailable.
    lookup_timeout_seconds: float = 0.25
    # PENDING requests one operator may have at once; more are refused (FAILED_PRECONDITION).
    max_pending_per_operator: int = 10
    # Grant requests (any state) one operator may make in an hour; more are refused (FAILED_PRECONDITION).
    max_requests_per_operator_per_hour: int = 30


@dataclass(frozen=True, slots=True)
class RouteSettings:
    methods: tuple[str, ...]
    path: str  # template such as /tenants/{tenant}/invoices/{id}
    action: str
    resource_type: str
    tenant_from: str = "tenant"  # path variable holding the resource's owning tenant
    id_from: str = "id"  # path variable holding the resource id


@dataclass(frozen=True, slots=True)
class ExtAuthzSettings:
    intent_header: str = "x-tenantgate-intent"
    dry_run: bool = False  # decide and audit, but always answer OK (flagged in the audit record)
    routes: tuple[RouteSettings, ...] = ()  # first match wins; no match is a deny
    # SPIFFE IDs / DNS names (client certificate SANs, over mTLS) of the Envoys whose forwarded client
    # certificates (include_peer_certificate) are believed; from any other caller they are ignored.
    certificate_forwarders: tuple[str, ...] = ()


HTTP_MODES = ("user_token", "trusted_pep")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The AuthZEN Authorization API 1.0 over HTTP (off unless ``listen`` is set)."""

    listen: str = ""  # HOST:PORT; "" = no HTTP API
    mode: str = "user_token"  # user_token: subject.id must be the token's sub; trusted_pep: see pep_role
    pep_role: str = ""  # trusted_pep: the role an enforcement point's token must carry to state subjects
    max_body_bytes: int = 1_048_576
    max_concurrent_requests: int = 256  # more in flight are answered 503
    max_evaluations: int = 1000  # items per /access/v1/evaluations request
    cert_file: str = ""  # with key_file: serve HTTPS
    key_file: str = ""
    public_url: str = ""  # the policy_decision_point identifier in discovery; "" = from the request's Host


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    dev_issuer: DevIssuerSettings = field(default_factory=DevIssuerSettings)
    policies: PolicySettings = field(default_factory=PolicySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    grants: GrantSettings = field(default_factory=GrantSettings)
    ext_authz: ExtAuthzSettings = field(default_factory=ExtAuthzSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "embedded defaults"

    def redacted(self) -> dict[str, Any]:
        """A printable dump with any password in the grant store URL masked."""
        plain = {f.name: _as_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        plain["grants"]["store"] = redact_url(self.grants.store)
        return plain


_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "tokens": TokenSettings,
    "dev_issuer": DevIssuerSettings,
    "policies": PolicySettings,
    "audit": AuditSettings,
    "grants": GrantSettings,
    "ext_authz": ExtAuthzSettings,
    "http": HttpSettings,
    "log": LogSettings,
}
# Lists of tables ([[tokens.issuers]], [[ext_authz.routes]]): settable only in the file, never from the environment.
_TABLE_LISTS: dict[type, str] = {IssuerSettings: "tokens.issuers", RouteSettings: "ext_authz.routes"}

# Embedded defaults for `tenantgate serve` without a config file: the development issuer is on so the
# README tour works in two commands. With a config file it is off unless the file turns it on.
_EMBEDDED: dict[str, dict[str, Any]] = {"dev_issuer": {"enabled": True}}


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, *,
         overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Load, override, resolve and validate settings. Raises ``ConfigError`` with the offending key.

    ``overrides`` (``{section: {key: value}}``, from command-line options such as ``serve --workers``) win over
    the file and the environment, and are validated with them, so the value they replace is never checked."""
    env = dict(os.environ) if env is None else dict(env)
    if path is None:
        raw: dict[str, Any] = {k: dict(v) for k, v in _EMBEDDED.items()}
        base = Path.cwd()
        source = "embedded defaults"
    else:
        file = Path(path)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(f"config file not found: {file}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file {file}: {err}") from err
        except ValueError as err:  # TOMLDecodeError, or an integer beyond Python's 4300-digit conversion limit
            raise ConfigError(f"{file}: invalid TOML: {err}") from err
        base = file.resolve().parent
        source = str(file)
    _apply_env(raw, env)
    for section, values in (overrides or {}).items():
        table = raw.setdefault(section, {})
        if isinstance(table, dict):  # otherwise _build says the section must be a table
            table.update(values)
    settings = _build(raw, source)
    settings = _resolve_paths(settings, base)
    validate(settings)
    return settings


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    prefix = "TENANTGATE_"
    # Longest section names first so DEV_ISSUER wins over a hypothetical DEV.
    sections = sorted(_SECTIONS, key=len, reverse=True)
    for name, value in env.items():
        if not name.startswith(prefix) or name.startswith("TENANTGATE_TEST_") or name == "TENANTGATE_TOKEN":
            continue
        rest = name[len(prefix):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                table = raw.setdefault(section, {})
                hints = get_type_hints(_SECTIONS[section])
                # A nested table (server.tls): TENANTGATE_SERVER_TLS_CERT_FILE sets server.tls.cert_file.
                for sub, sub_hint in hints.items():
                    if dataclasses.is_dataclass(sub_hint) and key.startswith(sub + "_"):
                        if not isinstance(table, dict) or not isinstance(table.setdefault(sub, {}), dict):
                            raise ConfigError(f"environment variable {name}: [{section}.{sub}] must be a table")
                        section, table, key = f"{section}.{sub}", table[sub], key[len(sub) + 1:]
                        hints = get_type_hints(sub_hint)
                        break
                if key not in hints or _is_table(hints[key]) or not isinstance(table, dict):
                    if not _is_service_link(name, value):
                        raise ConfigError(f"environment variable {name}: unknown key {section}.{key}")
                else:
                    table[key] = _from_env(name, value, hints[key], f"{section}.{key}")
                break
        else:
            if rest not in ("config",) and not _is_service_link(name, value):
                raise ConfigError(f"environment variable {name}: unknown section")


# What Kubernetes puts in every pod's environment for each Service of its namespace (unless the pod sets
# enableServiceLinks: false): for a Service named `tenantgate` (or `tenantgate-<x>`), TENANTGATE_SERVICE_HOST,
# TENANTGATE_SERVICE_PORT[_<PORT NAME>], TENANTGATE_PORT and TENANTGATE_PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR].
# Names of this shape that are no setting are skipped instead of refused (review finding: every central pod
# created after its Service crash-looped on "unknown section"); any other unknown TENANTGATE_* name is refused.
_SERVICE_LINK = re.compile(r"TENANTGATE_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|"
                           r"PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)")
# ... and only with the value Kubernetes gives it, so a typo such as TENANTGATE_SERVER_PORT=9000 is still refused
# (review finding): an address, a port number, a protocol, or protocol://address:port.
_ADDRESS = r"[0-9A-Fa-f:.]+"
_LINK_VALUES = ((("_SERVICE_HOST", "_ADDR"), re.compile(_ADDRESS)),
                (("_PROTO",), re.compile(r"tcp|udp|sctp")),
                (("_TCP_PORT", "_UDP_PORT", "_SCTP_PORT"), re.compile(r"[0-9]+")))
_LINK_URL = re.compile(rf"(?:tcp|udp|sctp)://(?:{_ADDRESS}|\[{_ADDRESS}\]):[0-9]+")


def _is_service_link(name: str, value: str) -> bool:
    if not _SERVICE_LINK.fullmatch(name):
        return False
    for suffixes, shape in _LINK_VALUES:
        if name.endswith(suffixes):
            return shape.fullmatch(value) is not None
    if "_SERVICE_PORT" in name:
        return value.isdigit()
    return _LINK_URL.fullmatch(value) is not None  # <SERVICE>_PORT, <SERVICE>_PORT_<n>_<PROTO>


_TYPE_WORDS = {bool: "true or false (or 1/0, yes/no, on/off)", int: "an integer", float: "a number"}


def _from_env(name: str, value: str, hint: Any, key: str) -> Any:
    try:
        if hint is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if get_origin(hint) is tuple:
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
    except ValueError as err:
        raise ConfigError(f"{name} ({key}) must be {_TYPE_WORDS[hint]}, got {_shown(value)}") from err


def _build(raw: dict[str, Any], source: str) -> Settings:
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _section(cls, table, name)
    return Settings(source=source, **sections)


def _section(cls: type, table: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    unknown = set(table) - set(hints)
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(sorted(unknown))}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [key for key in required if key not in table]
    if missing:  # [[tokens.issuers]] and [[ext_authz.routes]] entries have required keys
        raise ConfigError(f"{where}: missing required key{'s' if len(missing) > 1 else ''} "
                          + ", ".join(repr(key) for key in missing))
    return cls(**{key: _coerce(value, hints[key], f"{where}.{key}") for key, value in table.items()})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number")
        try:
            finite = math.isfinite(value)  # TOML and float() both read nan and inf, which no comparison refuses
        except OverflowError:  # a TOML integer too large for a float
            finite = False
        if not finite:
            raise ConfigError(f"{where} must be a finite number, not {str(value)[:20]}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    if get_origin(hint) is tuple:
        (item_type, *_rest) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        if item_type in _TABLE_LISTS:
            return tuple(_section(item_type, _table(v, where), f"{where}[{i}]") for i, v in enumerate(value))
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested table such as [server.tls]
        if not isinstance(value, dict):
            raise ConfigError(f"[{where}] must be a table")
        return _section(hint, value, where)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _is_table(hint: Any) -> bool:
    """A nested table or a list of tables: structured settings the environment cannot set."""
    return dataclasses.is_dataclass(hint) or (get_origin(hint) is tuple and get_args(hint)[0] in _TABLE_LISTS)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} entries must be tables ([[{where}]])")
    return value


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def rel(p: str) -> str:
        return str(p if os.path.isabs(p) else (base / p)) if p else p

    state = rel(s.server.state_dir)
    tls = s.server.tls
    tls = dataclasses.replace(tls, cert_file=rel(tls.cert_file), key_file=rel(tls.key_file),
                              client_ca_file=rel(tls.client_ca_file))
    server = dataclasses.replace(s.server, state_dir=state, tls=tls)
    policy_dir = rel(s.policies.dir)
    schema = rel(s.policies.schema_file) or str(Path(policy_dir) / "schema.cedarschema")
    audit = rel(s.audit.path) or str(Path(state) / "audit.jsonl")
    key_dir = rel(s.dev_issuer.key_dir) or str(Path(state) / "dev-issuer")
    store = s.grants.store
    if not store:
        store = "sqlite:///" + str(Path(state) / "grants.db")
    elif store.startswith("sqlite:///") and not os.path.isabs(store[len("sqlite:///"):]):
        store = "sqlite:///" + rel(store[len("sqlite:///"):])
    issuers = tuple(
        dataclasses.replace(i, jwks_file=rel(i.jwks_file)) for i in s.tokens.issuers
    )
    return dataclasses.replace(
        s,
        server=server,
        policies=dataclasses.replace(s.policies, dir=policy_dir, schema_file=schema),
        audit=dataclasses.replace(s.audit, path=audit, checkpoint_key_file=rel(s.audit.checkpoint_key_file)),
        dev_issuer=dataclasses.replace(s.dev_issuer, key_dir=key_dir),
        tokens=dataclasses.replace(s.tokens, issuers=issuers),
        grants=dataclasses.replace(s.grants, store=store),
        http=dataclasses.replace(s.http, cert_file=rel(s.http.cert_file), key_file=rel(s.http.key_file)),
    )


def validate(s: Settings) -> None:
    """Refuse unsafe or contradictory settings at start-up, naming the key."""
    _check_hostport(s.server.listen, "server.listen")
    if s.server.metrics_listen:
        _check_hostport(s.server.metrics_listen, "server.metrics_listen")
    if s.server.health_listen:
        _check_hostport(s.server.health_listen, "server.health_listen")
    _check_tls(s.server.tls)
    _check_directories(s)
    for key in ("max_message_bytes", "max_concurrent_rpcs"):
        _positive(getattr(s.server, key), f"server.{key}")
        if getattr(s.server, key) > GRPC_INT_MAX:  # gRPC holds both in a C int: larger crashed the start
            raise ConfigError(f"server.{key} must be at most {GRPC_INT_MAX} (gRPC's limit)")
    if not 0 <= s.server.grace_seconds <= MAX_GRACE:
        raise ConfigError(f"server.grace_seconds must be between 0 and {MAX_GRACE}")
    age = s.server.max_connection_age_seconds
    if age and not MIN_CONNECTION_AGE <= age <= MAX_CONNECTION_AGE:
        # Below a second, clients would spend their time reconnecting; gRPC holds the age in an int of ms.
        raise ConfigError(f"server.max_connection_age_seconds must be 0 (off) or between {MIN_CONNECTION_AGE} "
                          f"and {MAX_CONNECTION_AGE}, got {age!r}")
    check_workers(s.server.workers)
    t = s.tokens
    _check_claims(t)
    if not 0 <= t.leeway_seconds <= 300:
        raise ConfigError("tokens.leeway_seconds must be between 0 and 300")
    for key in ("max_lifetime_seconds", "cache_size", "jwks_cache_seconds", "max_token_bytes"):
        _positive(getattr(t, key), f"tokens.{key}")
    # A zero interval would let a flood of unknown kids become a flood of fetches.
    if t.jwks_refresh_min_interval_seconds < 1:
        raise ConfigError("tokens.jwks_refresh_min_interval_seconds must be >= 1")
    _check_maxima(t, "tokens")
    if not 0 < t.jwks_fetch_timeout_seconds <= 30:
        raise ConfigError("tokens.jwks_fetch_timeout_seconds must be > 0 and <= 30")
    from tenantgate.core.request import is_tenant_id

    seen: set[str] = set()
    for i, iss in enumerate(t.issuers):
        where = f"tokens.issuers[{i}]"
        if not iss.issuer:
            raise ConfigError(f"{where}.issuer must not be empty")
        if iss.issuer in seen or (s.dev_issuer.enabled and iss.issuer == s.dev_issuer.issuer):
            raise ConfigError(f"{where}: issuer {iss.issuer!r} is configured twice")
        seen.add(iss.issuer)
        if not iss.audiences:
            raise ConfigError(f"{where}.audiences must list at least one audience")
        if not all(iss.audiences):  # accepted aud values: an empty one is no audience
            raise ConfigError(f"{where}.audiences: an audience must not be empty")
        check_algorithms(iss.algorithms, where)
        for tenant in iss.tenants:
            if not is_tenant_id(tenant):
                raise ConfigError(f"{where}.tenants: {tenant!r} is not a valid tenant id")
        if bool(iss.jwks_file) == bool(iss.jwks_url):
            raise ConfigError(f"{where}: set exactly one of jwks_file or jwks_url")
        # Plain http would let anyone on the path substitute the issuer's keys.
        if iss.jwks_url and not (_is_https(iss.jwks_url) or _is_loopback_http(iss.jwks_url)):
            raise ConfigError(f"{where}.jwks_url must be an https:// URL with a host (http:// only for loopback "
                              f"addresses), got {_shown(iss.jwks_url)}")
    d = s.dev_issuer
    if d.enabled:
        for key in ("issuer", "audience"):  # the iss and aud of every token it mints
            if not getattr(d, key):
                raise ConfigError(f"dev_issuer.{key} must not be empty")
        check_algorithms((d.algorithm,), "dev_issuer")
        if d.algorithm in HMAC_ALGORITHMS:
            raise ConfigError("dev_issuer.algorithm must be asymmetric (RS*, PS*, ES* or EdDSA)")
        _positive(d.max_ttl_seconds, "dev_issuer.max_ttl_seconds")
        _check_maxima(d, "dev_issuer")
    if not t.issuers and not d.enabled:
        raise ConfigError("no trusted token issuer: add [[tokens.issuers]] or enable [dev_issuer]")
    a = s.audit
    if a.durability not in ("flush", "fsync"):
        raise ConfigError('audit.durability must be "flush" or "fsync"')
    if a.rotate_bytes != 0 and a.rotate_bytes < 4096:
        raise ConfigError("audit.rotate_bytes must be 0 (off) or at least 4096")
    if a.keep_files < 0:
        raise ConfigError("audit.keep_files must be >= 0 (0 keeps all rotated files)")
    _positive(a.checkpoint_every, "audit.checkpoint_every")
    if a.checkpoint_seconds < 0:
        raise ConfigError("audit.checkpoint_seconds must be >= 0 (0 = by count only)")
    _check_maxima(a, "audit")
    _check_audit_path(a.path)
    _positive(s.policies.partition_cache_size, "policies.partition_cache_size")
    _positive(s.policies.max_tenant_policies, "policies.max_tenant_policies")
    _positive(s.policies.max_tenant_policy_bytes, "policies.max_tenant_policy_bytes")
    if s.policies.poll_interval_seconds < 0:
        raise ConfigError("policies.poll_interval_seconds must be >= 0 (0 turns polling off)")
    _check_maxima(s.policies, "policies")
    g = s.grants
    if not g.store.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError("grants.store must be sqlite:///PATH or postgresql://...")
    from tenantgate.core.request import is_tenant_id

    if not is_tenant_id(g.operator_tenant):
        raise ConfigError("grants.operator_tenant must be a valid tenant id")
    if not g.operator_role or not g.approver_role or g.operator_role == g.approver_role:
        raise ConfigError("grants.operator_role and grants.approver_role must be set and different")
    for key in ("max_ttl_seconds", "pending_ttl_seconds"):
        _positive(getattr(g, key), f"grants.{key}")
        if getattr(g, key) > MAX_GRANT_SECONDS:
            # Beyond year 9999 a grant's times cannot be sent as protobuf Timestamps: the grant would be stored
            # and then break every ListGrants.
            raise ConfigError(f"grants.{key} must be at most {MAX_GRANT_SECONDS} (a year)")
    if g.sweep_interval_seconds <= 0:
        raise ConfigError("grants.sweep_interval_seconds must be > 0")
    _check_maxima(g, "grants")
    if g.max_pending_per_operator < 1:
        raise ConfigError("grants.max_pending_per_operator must be >= 1")
    if g.max_requests_per_operator_per_hour < 1:
        raise ConfigError("grants.max_requests_per_operator_per_hour must be >= 1")
    if not 0 < g.lookup_timeout_seconds <= MAX_LOOKUP_TIMEOUT:
        # The wait holds the event loop: every other call waits with it.
        raise ConfigError(f"grants.lookup_timeout_seconds must be > 0 and at most {MAX_LOOKUP_TIMEOUT:g}, "
                          f"got {g.lookup_timeout_seconds}")
    _check_ext_authz(s.ext_authz)
    if s.ext_authz.certificate_forwarders and not s.server.tls.client_ca_file:
        # Only a client certificate says who forwarded a certificate: without mTLS anyone could have.
        raise ConfigError("ext_authz.certificate_forwarders needs server.tls.client_ca_file (mTLS)")
    _check_identities(s.ext_authz.certificate_forwarders, "ext_authz.certificate_forwarders")
    _check_http(s.http)
    if s.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level must be one of debug, info, warning, error")


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # a lowercase HTTP token, as Envoy presents names
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*")
EXT_AUTHZ_RESPONSE_HEADERS = ("x-tenantgate-decision-id", "x-tenantgate-tenant")


def _check_tls(tls: TlsSettings) -> None:
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("server.tls.cert_file and server.tls.key_file must be set together")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("server.tls.client_ca_file (mTLS) needs server.tls.cert_file and key_file")
    if tls.allowed_callers and not tls.client_ca_file:
        # Without client certificates there is no caller identity to compare with the list.
        raise ConfigError("server.tls.allowed_callers needs server.tls.client_ca_file (mTLS)")
    _check_identities(tls.allowed_callers, "server.tls.allowed_callers")


def _check_identities(identities: tuple[str, ...], key: str) -> None:
    for identity in identities:
        if not (_SPIFFE_ID.fullmatch(identity) or _DNS_NAME.fullmatch(identity)):
            raise ConfigError(f"{key}: {identity!r} is not a SPIFFE ID (spiffe://trust-domain/path) "
                              "or a lowercase DNS name (no wildcards)")


def _check_ext_authz(e: ExtAuthzSettings) -> None:
    from tenantgate.rpc.routes import Route, TemplateError

    name = e.intent_header
    if not _HEADER_NAME.fullmatch(name) or name == "authorization" or name in EXT_AUTHZ_RESPONSE_HEADERS:
        raise ConfigError("ext_authz.intent_header must be a lowercase header name other than authorization "
                          f"and {', '.join(EXT_AUTHZ_RESPONSE_HEADERS)}")
    for i, r in enumerate(e.routes):
        try:
            Route.build(r.methods, r.path, r.action, r.resource_type, r.tenant_from, r.id_from)
        except TemplateError as err:
            raise ConfigError(f"ext_authz.routes[{i}]: {err}") from err


def _check_http(h: HttpSettings) -> None:
    if h.listen:
        _check_hostport(h.listen, "http.listen")
    if h.mode not in HTTP_MODES:
        raise ConfigError(f"http.mode must be one of {', '.join(HTTP_MODES)}")
    if h.mode == "trusted_pep" and not h.pep_role:
        # Without a role to look for, any token of the tenant could speak for any of its users.
        raise ConfigError("http.mode = \"trusted_pep\" needs http.pep_role")
    for key in ("max_body_bytes", "max_concurrent_requests", "max_evaluations"):
        _positive(getattr(h, key), f"http.{key}")
    _check_maxima(h, "http")
    if bool(h.cert_file) != bool(h.key_file):
        raise ConfigError("http.cert_file and http.key_file must be set together")
    if h.public_url:
        # Without it, discovery answers the scheme the request came in on: http on a plaintext port.
        parts = _url_parts(h.public_url)
        if (parts is None or parts.scheme not in ("https", "http") or not parts.hostname
                or "?" in h.public_url or "#" in h.public_url):  # even an empty query or fragment
            raise ConfigError("http.public_url must be an http:// or https:// URL with a host and without query or "
                              f"fragment, got {_shown(h.public_url)}")


def check_workers(workers: int) -> None:
    """``server.workers`` (or ``serve --workers``): 1 to ``MAX_WORKERS`` processes."""
    if not 1 <= workers <= MAX_WORKERS:
        # More processes than that is a typo, not a deployment: each one holds every policy in memory.
        raise ConfigError(f"server.workers must be between 1 and {MAX_WORKERS}, got {_shown(workers)}")


def check_algorithms(algorithms: tuple[str, ...], where: str) -> None:
    """An issuer's algorithm list: non-empty, known, no ``none``, never HMAC mixed with asymmetric."""
    if not algorithms:
        raise ConfigError(f"{where}.algorithms must list at least one algorithm")
    for alg in algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigError(f"{where}.algorithms: {alg!r} is not supported ('none' never is)")
    kinds = {alg in HMAC_ALGORITHMS for alg in algorithms}
    if len(kinds) > 1:
        raise ConfigError(
            f"{where}.algorithms mixes HMAC and asymmetric algorithms (key confusion, CVE-2022-29217)"
        )


def _is_https(url: str) -> bool:
    parts = _url_parts(url)
    return parts is not None and parts.scheme == "https" and bool(parts.hostname)


def _is_loopback_http(url: str) -> bool:
    parts = _url_parts(url)
    return parts is not None and parts.scheme == "http" and (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")


def _url_parts(url: str) -> SplitResult | None:
    """The parts of a URL, or None when it cannot be one (an unclosed ``[``, a port that is no port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading it checks it
    except ValueError:
        return None
    return parts


def _check_directories(s: Settings) -> None:
    """Directories and files without a documented meaning for "": an empty path was resolved against the working
    directory, not the config file's (review finding: the audit log, grants.db and the dev issuer's keys went
    wherever the server was started). "" stays "not set" for optional files, and the default for derived paths."""
    for key, value in (("server.state_dir", s.server.state_dir), ("policies.dir", s.policies.dir)):
        if not value:
            raise ConfigError(f"{key} must not be empty (use \".\" for the config file's own directory)")
    if s.grants.store == "sqlite:///":
        raise ConfigError("grants.store sqlite:/// names no file: use sqlite:///PATH (or leave it unset for "
                          "<state_dir>/grants.db)")


def _check_claims(t: TokenSettings) -> None:
    for key in CLAIM_KEYS:
        claim = getattr(t, key)
        if not claim:
            raise ConfigError(f"tokens.{key} must not be empty")
        if claim in RESERVED_CLAIMS:
            raise ConfigError(f"tokens.{key} cannot be {claim!r}: a registered claim, or one TenantGate reads "
                              f"itself ({', '.join(sorted(RESERVED_CLAIMS))})")
    for i, first in enumerate(CLAIM_KEYS):
        for second in CLAIM_KEYS[i + 1:]:
            if getattr(t, first) == getattr(t, second):
                raise ConfigError(f"tokens.{first} and tokens.{second} name the same claim {getattr(t, first)!r}: "
                                  "they must be different claims")


def _check_maxima(section: Any, name: str) -> None:
    """The upper bounds of ``MAXIMA`` that belong to the section called ``name``."""
    for key, (maximum, words) in MAXIMA.items():
        owner, _, field_name = key.partition(".")
        if owner == name and getattr(section, field_name) > maximum:
            raise ConfigError(f"{key} must be at most {maximum} ({words}), got {_shown(getattr(section, field_name))}")


def _shown(value: object) -> str:
    """A value for a one-line message: strings quoted, anything long cut short."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive(value: int, where: str) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be > 0")


def _check_audit_path(path: str) -> None:
    """``audit.path`` names a regular file, or nothing yet: records written to a FIFO nobody reads or to a device
    (``/dev/null``) would be acknowledged and kept nowhere, and the sink does not follow a symlink at the log's
    own name (its head and rotated files live beside that name; directories on the way may be links)."""
    if os.path.islink(path):
        raise ConfigError(f"audit.path {path} is a symbolic link: name the log file itself (the audit sink does "
                          "not follow a link there)")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ConfigError(f"audit.path {path} exists and is not a regular file (a FIFO, a device or a directory)")


def _check_hostport(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where} must be HOST:PORT, got {value!r}")


def _as_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_as_plain(v) for v in value]
    return value
