"""Typed, frozen settings; the only reader of configuration files and ``TENANTGATE_*`` environment variables.

``load(path, env)`` reads one TOML file (or the embedded development defaults when ``path`` is None),
applies environment overrides, resolves relative paths against the config file's directory, validates,
and returns ``Settings``. Every key is documented in the README. Unknown keys are errors, so a typo never
silently falls back to a default.

Environment overrides: ``TENANTGATE_<SECTION>_<KEY>`` (upper case), e.g. ``TENANTGATE_SERVER_LISTEN`` or
``TENANTGATE_TOKENS_LEEWAY_SECONDS``. Lists are comma-separated. Issuer tables cannot be set from the
environment (they are structured); use the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from tenantgate.errors import ConfigError
from tenantgate.redact import redact_url

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"
    max_message_bytes: int = 1_048_576
    max_concurrent_rpcs: int = 1000
    grace_seconds: float = 10.0
    state_dir: str = ".tenantgate"


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


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: str = ""  # default: <state_dir>/audit.jsonl


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
    "log": LogSettings,
}

# Embedded defaults for `tenantgate serve` without a config file: the development issuer is on so the
# README tour works in two commands. With a config file it is off unless the file turns it on.
_EMBEDDED: dict[str, dict[str, Any]] = {"dev_issuer": {"enabled": True}}


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load, override, resolve and validate settings. Raises ``ConfigError`` with the offending key."""
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
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{file}: invalid TOML: {err}") from err
        base = file.resolve().parent
        source = str(file)
    _apply_env(raw, env)
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
                hints = get_type_hints(_SECTIONS[section])
                if key not in hints or key == "issuers":
                    raise ConfigError(f"environment variable {name}: unknown key {section}.{key}")
                raw.setdefault(section, {})[key] = _from_env(name, value, hints[key])
                break
        else:
            if rest not in ("config",):
                raise ConfigError(f"environment variable {name}: unknown section")


def _from_env(name: str, value: str, hint: Any) -> Any:
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
        raise ConfigError(f"environment variable {name}: cannot read {value!r} as {hint}") from err


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
    values: dict[str, Any] = {}
    for key, value in table.items():
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"[{where}] {err}") from err


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
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value
    if get_origin(hint) is tuple:
        (item_type, *_rest) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        if item_type is IssuerSettings:
            return tuple(_section(IssuerSettings, _table(v, where), f"{where}[{i}]") for i, v in enumerate(value))
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} entries must be tables ([[tokens.issuers]])")
    return value


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def rel(p: str) -> str:
        return str(p if os.path.isabs(p) else (base / p)) if p else p

    state = rel(s.server.state_dir)
    server = dataclasses.replace(s.server, state_dir=state)
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
        audit=dataclasses.replace(s.audit, path=audit),
        dev_issuer=dataclasses.replace(s.dev_issuer, key_dir=key_dir),
        tokens=dataclasses.replace(s.tokens, issuers=issuers),
        grants=dataclasses.replace(s.grants, store=store),
    )


def validate(s: Settings) -> None:
    """Refuse unsafe or contradictory settings at start-up, naming the key."""
    _check_hostport(s.server.listen, "server.listen")
    if s.server.metrics_listen:
        _check_hostport(s.server.metrics_listen, "server.metrics_listen")
    _positive(s.server.max_message_bytes, "server.max_message_bytes")
    _positive(s.server.max_concurrent_rpcs, "server.max_concurrent_rpcs")
    if s.server.grace_seconds < 0:
        raise ConfigError("server.grace_seconds must be >= 0")
    t = s.tokens
    for key in ("tenant_claim", "roles_claim", "intents_claim"):
        if not getattr(t, key):
            raise ConfigError(f"tokens.{key} must not be empty")
    if len({t.tenant_claim, t.roles_claim, t.intents_claim}) != 3:
        raise ConfigError("tokens.tenant_claim, roles_claim and intents_claim must be different claims")
    if t.tenant_claim in {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "act"}:
        raise ConfigError(f"tokens.tenant_claim cannot be the registered claim {t.tenant_claim!r}")
    if not 0 <= t.leeway_seconds <= 300:
        raise ConfigError("tokens.leeway_seconds must be between 0 and 300")
    for key in ("max_lifetime_seconds", "cache_size", "jwks_cache_seconds", "max_token_bytes"):
        _positive(getattr(t, key), f"tokens.{key}")
    # A zero interval would let a flood of unknown kids become a flood of fetches.
    if t.jwks_refresh_min_interval_seconds < 1:
        raise ConfigError("tokens.jwks_refresh_min_interval_seconds must be >= 1")
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
        check_algorithms(iss.algorithms, where)
        for tenant in iss.tenants:
            if not is_tenant_id(tenant):
                raise ConfigError(f"{where}.tenants: {tenant!r} is not a valid tenant id")
        if bool(iss.jwks_file) == bool(iss.jwks_url):
            raise ConfigError(f"{where}: set exactly one of jwks_file or jwks_url")
        if iss.jwks_url and not (iss.jwks_url.startswith("https://") or _is_loopback_http(iss.jwks_url)):
            # Plain http would let anyone on the path substitute the issuer's keys.
            raise ConfigError(f"{where}.jwks_url must be https:// (http:// only for loopback addresses)")
    d = s.dev_issuer
    if d.enabled:
        check_algorithms((d.algorithm,), "dev_issuer")
        if d.algorithm in HMAC_ALGORITHMS:
            raise ConfigError("dev_issuer.algorithm must be asymmetric (RS*, PS*, ES* or EdDSA)")
        _positive(d.max_ttl_seconds, "dev_issuer.max_ttl_seconds")
    if not t.issuers and not d.enabled:
        raise ConfigError("no trusted token issuer: add [[tokens.issuers]] or enable [dev_issuer]")
    _positive(s.policies.partition_cache_size, "policies.partition_cache_size")
    if s.policies.poll_interval_seconds < 0:
        raise ConfigError("policies.poll_interval_seconds must be >= 0 (0 turns polling off)")
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
    if g.sweep_interval_seconds <= 0:
        raise ConfigError("grants.sweep_interval_seconds must be > 0")
    if s.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level must be one of debug, info, warning, error")


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


def _is_loopback_http(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")


def _positive(value: int, where: str) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be > 0")


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
