"""Typed, frozen settings; the only reader of configuration files and ``TENANTGATE_*`` environment variables.

``load(path, env)`` reads one TOML file (or the embedded development defaults when ``path`` is None),
applies environment overrides, resolves relative paths against the config file's directory, validates,
and returns ``Settings``. Every key is documented in the README. Unknown keys are errors, so a typo never
silently falls back to a default.

Environment overrides: ``TENANTGATE_<SECTION>_<KEY>`` (upper case), e.g. ``TENANTGATE_SERVER_LISTEN`` or
``TENANTGATE_TOKENS_LEEWAY_SECONDS``. Lists are comma-separated. Keys of a nested table take its name too
(``TENANTGATE_SERVER_TLS_CERT_FILE``). Issuer and route tables cannot be set from the environment (they
are structured); use the file. ``TENANTGATE_TEST_*`` variables belong to the test suite and are ignored.
``config_env`` turns those variables into settings; only this module reads the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from tenantgate.config_env import apply_env
from tenantgate.errors import ConfigError
from tenantgate.redact import redact_url

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS


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
    jwks_saved_max_age_seconds: float = 86_400.0  # a saved JWKS response older than this is not used; 0 = none saved
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
    decision_cache_size: int = 4096  # requests whose Cedar outcome is kept per policy version; 0 = off
    poll_interval_seconds: float = 2.0  # 0 = no polling (SIGHUP still reloads)
    max_tenant_policies: int = 1000  # policies in one tenant's own files
    max_tenant_policy_bytes: int = 262_144  # bytes of one tenant's own policy files together
    max_tenant_entity_bytes: int = 1_048_576  # bytes of one tenant's entities.json
    max_tenant_entity_ancestry: int = 4096  # ancestor links one entity of a tenant's file brings into a decision
    max_tenant_entity_decision_bytes: int = 32_768  # attribute bytes it and its ancestors bring into a decision
    max_tenant_like_pattern_chars: int = 256  # characters of all `like` patterns in one tenant's policies
    # A tenant whose own policies take Cedar longer than this, repeatedly, is quarantined (core.slowtenants); 0 = off
    tenant_evaluation_budget_ms: float = 50.0
    # "refuse": start only with every file valid (as `tenantgate validate`); "quarantine": start with the tenants
    # whose own files are invalid denied every decision (README, Hot reload). Restarted workers always quarantine.
    invalid_tenants_at_start: str = "refuse"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: str = ""  # default: <state_dir>/audit.jsonl
    durability: str = "flush"  # "flush" (in the OS before the answer) | "fsync" (on disk, group commit)
    rotate_bytes: int = 0  # rotate the live file before it would pass this size; 0 = off
    keep_files: int = 10  # rotated files kept (audit.jsonl.1 ... .N); 0 = keep all
    checkpoint_key_file: str = ""  # Ed25519 private key (PEM) for signed checkpoints; "" = none
    checkpoint_every: int = 1000  # records between signed checkpoints
    deployment_id: str = ""  # signed into every checkpoint with the worker number; `audit verify --deployment`
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
    replaced = {f"{section}_{key}".lower() for section, values in (overrides or {}).items() for key in values}
    env = {name: value for name, value in env.items()  # what an override replaces is not even read (any case)
           if not (name.startswith("TENANTGATE_") and name[len("TENANTGATE_"):].lower() in replaced)}
    apply_env(raw, env, _SECTIONS, _is_table)
    for section, values in (overrides or {}).items():
        table = raw.setdefault(section, {})
        if isinstance(table, dict):  # otherwise _build says the section must be a table
            table.update(values)
    settings = _build(raw, source)
    settings = _resolve_paths(settings, base)
    from tenantgate.configcheck import validate  # here: configcheck imports this module's classes

    validate(settings)
    return settings


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


def _as_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_as_plain(v) for v in value]
    return value
