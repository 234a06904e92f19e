"""The rules settings must satisfy, checked by ``config.load`` before anything uses them: ranges, minima and maxima,
paths, addresses, identities, claim names, algorithms and the combinations that contradict each other.
Every refusal is one ``ConfigError`` naming the key. Pure checks over ``config.Settings``: nothing is read.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from tenantgate.audit.checkpoint import DEPLOYMENT_ID_RULE, is_deployment_id
from tenantgate.audit.files import worker_of
from tenantgate.config import (
    HMAC_ALGORITHMS,
    HTTP_MODES,
    SUPPORTED_ALGORITHMS,
    ExtAuthzSettings,
    HttpSettings,
    Settings,
    TlsSettings,
    TokenSettings,
)
from tenantgate.config_env import shown
from tenantgate.core.request import is_tenant_id
from tenantgate.errors import ConfigError
from tenantgate.paths import NotRegularFile, open_regular

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
    "tokens.jwks_saved_max_age_seconds": (A_WEEK, "a week"),  # how long withdrawn keys may outlive an outage
    # The cache also holds at most 64 MiB: more entries than this could never be filled with real tokens.
    "tokens.cache_size": (1_000_000, "a million"),
    "dev_issuer.max_ttl_seconds": (A_YEAR, "a year"),
    "http.max_body_bytes": (67_108_864, "64 MiB"),
    "http.max_concurrent_requests": (65_536, "64 Ki"),
    "policies.poll_interval_seconds": (A_WEEK, "a week"),
    "grants.sweep_interval_seconds": (A_WEEK, "a week"),
    # Past these, a limit is no limit, and the hourly one overflowed the database's integer (review finding).
    "grants.max_pending_per_operator": (10_000, "10,000"),
    "grants.max_requests_per_operator_per_hour": (100_000, "100,000"),
    "audit.checkpoint_seconds": (A_WEEK, "a week"),
}
# Lower bounds of intervals and timeouts: below them a value is a typo (milliseconds written as seconds), and an
# idle server spent 21% of a core sweeping grants every 0.0001 s, 27% polling policies (review finding).
MINIMA: dict[str, tuple[float, str]] = {
    "tokens.jwks_fetch_timeout_seconds": (0.1, "100 ms"),  # a whole HTTPS fetch, off the decision path
    "tokens.jwks_saved_max_age_seconds": (60, "a minute"),
    "policies.poll_interval_seconds": (0.01, "10 ms"),
    "audit.checkpoint_seconds": (1, "a second"),
    "grants.sweep_interval_seconds": (1, "a second"),
    "grants.lookup_timeout_seconds": (0.01, "10 ms"),  # on the decision path: a tight budget is a choice
}
# Keys of ``MINIMA`` where exactly 0 has a meaning (README): it stays allowed, -0.0 does not.
OFF_AT_ZERO: dict[str, str] = {
    "tokens.jwks_saved_max_age_seconds": "nothing saved",
    "policies.poll_interval_seconds": "no polling",
    "audit.checkpoint_seconds": "by count only",
}
# Claims whose meaning is fixed: RFC 7519's registered claims, and those TenantGate reads itself (act: RFC 8693
# actor; cnf: RFC 8705 certificate binding). A claim setting naming one would read, say, every token's subject
# as its roles (review finding: roles_claim = "sub" denied every token).
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "act", "cnf"})
CLAIM_KEYS = ("tenant_claim", "roles_claim", "intents_claim")


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
    _check_minima(t, "tokens")
    _check_maxima(t, "tokens")
    if t.jwks_fetch_timeout_seconds > 30:
        raise ConfigError(f"tokens.jwks_fetch_timeout_seconds must be at most 30, got {t.jwks_fetch_timeout_seconds}")
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
                              f"addresses), got {shown(iss.jwks_url)}")
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
    _check_minima(a, "audit")
    _check_maxima(a, "audit")
    _check_audit_path(a.path)
    _check_deployment_id(a.deployment_id)
    _positive(s.policies.partition_cache_size, "policies.partition_cache_size")
    if s.policies.decision_cache_size < 0:
        raise ConfigError("policies.decision_cache_size must be 0 (off) or more")
    _positive(s.policies.max_tenant_policies, "policies.max_tenant_policies")
    _positive(s.policies.max_tenant_policy_bytes, "policies.max_tenant_policy_bytes")
    _positive(s.policies.max_tenant_entity_bytes, "policies.max_tenant_entity_bytes")
    _positive(s.policies.max_tenant_entity_ancestry, "policies.max_tenant_entity_ancestry")
    _positive(s.policies.max_tenant_entity_decision_bytes, "policies.max_tenant_entity_decision_bytes")
    if not 0 <= s.policies.max_tenant_like_pattern_chars <= 65_536:
        raise ConfigError("policies.max_tenant_like_pattern_chars must be 0 (no `like` in tenant policies) to 65536, "
                          f"got {shown(s.policies.max_tenant_like_pattern_chars)}")
    if not 0 <= s.policies.tenant_evaluation_budget_ms <= 60_000:
        raise ConfigError("policies.tenant_evaluation_budget_ms must be 0 (off) to 60000, "
                          f"got {shown(s.policies.tenant_evaluation_budget_ms)}")
    if s.policies.invalid_tenants_at_start not in ("refuse", "quarantine"):
        raise ConfigError('policies.invalid_tenants_at_start must be "refuse" or "quarantine", '
                          f"got {shown(s.policies.invalid_tenants_at_start)}")
    _check_minima(s.policies, "policies")
    _check_maxima(s.policies, "policies")
    g = s.grants
    if not g.store.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError("grants.store must be sqlite:///PATH or postgresql://...")

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
    _check_minima(g, "grants")
    _check_maxima(g, "grants")
    if g.max_pending_per_operator < 1:
        raise ConfigError("grants.max_pending_per_operator must be >= 1")
    if g.max_requests_per_operator_per_hour < 1:
        raise ConfigError("grants.max_requests_per_operator_per_hour must be >= 1")
    if g.lookup_timeout_seconds > MAX_LOOKUP_TIMEOUT:
        # The wait holds the event loop: every other call waits with it.
        raise ConfigError(f"grants.lookup_timeout_seconds must be at most {MAX_LOOKUP_TIMEOUT:g}, "
                          f"got {g.lookup_timeout_seconds}")
    _check_ext_authz(s.ext_authz)
    if s.ext_authz.certificate_forwarders and not s.server.tls.client_ca_file:
        # Only a client certificate says who forwarded a certificate: without mTLS anyone could have.
        raise ConfigError("ext_authz.certificate_forwarders needs server.tls.client_ca_file (mTLS)")
    _check_identities(s.ext_authz.certificate_forwarders, "ext_authz.certificate_forwarders")
    _check_http(s.http)
    _check_distinct_ports(s)
    _check_files_read_at_start(s)
    if s.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level must be one of debug, info, warning, error")


_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits (a longer string is no port, and int() stops at 4300 digits)
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
                              f"fragment, got {shown(h.public_url)}")


def check_workers(workers: int) -> None:
    """``server.workers`` (or ``serve --workers``): 1 to ``MAX_WORKERS`` processes."""
    if not 1 <= workers <= MAX_WORKERS:
        # More processes than that is a typo, not a deployment: each one holds every policy in memory.
        raise ConfigError(f"server.workers must be between 1 and {MAX_WORKERS}, got {shown(workers)}")


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
            raise ConfigError(f"{key} must be at most {maximum} ({words}), got {shown(getattr(section, field_name))}")


def _check_minima(section: Any, name: str) -> None:
    """The lower bounds of ``MINIMA`` that belong to the section called ``name`` (0 allowed where it is off)."""
    for key, (minimum, words) in MINIMA.items():
        owner, _, field_name = key.partition(".")
        if owner != name:
            continue
        value = getattr(section, field_name)
        negative = math.copysign(1, value) < 0  # -0.0 too: it equals 0 but is no documented value
        if key in OFF_AT_ZERO and value == 0 and not negative:
            continue
        if value < minimum or negative:
            zero = f"0 ({OFF_AT_ZERO[key]}) or " if key in OFF_AT_ZERO else ""
            raise ConfigError(f"{key} must be {zero}at least {minimum:g} ({words}), got {shown(value)}")


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
    if worker_of(Path(path)):
        raise ConfigError(f"audit.path {path} ends like a worker's log (-wN): `audit verify` would hold it to that "
                          "worker's chain; choose another name")


def _check_deployment_id(value: str) -> None:
    """Signed into every checkpoint and printed by ``audit verify``: short printable ASCII."""
    if not is_deployment_id(value):
        raise ConfigError(f"audit.deployment_id must be {DEPLOYMENT_ID_RULE}, got {shown(value)}")


def _check_files_read_at_start(s: Settings) -> None:
    """Certificate and key files that exist must be regular files (links followed): open() of a FIFO without a
    writer blocked, so `serve` waited at start-up for good with no message (hostile review). A file that cannot be
    opened (missing, unreadable) is left to its reader, which names it."""
    tls = s.server.tls
    for key, path in (("server.tls.cert_file", tls.cert_file), ("server.tls.key_file", tls.key_file),
                      ("server.tls.client_ca_file", tls.client_ca_file), ("http.cert_file", s.http.cert_file),
                      ("http.key_file", s.http.key_file), ("audit.checkpoint_key_file", s.audit.checkpoint_key_file)):
        if not path:
            continue
        try:
            os.close(open_regular(path, follow_symlinks=True))
        except NotRegularFile as err:
            raise ConfigError(f"{key} {path} is {err.strerror}") from err
        except OSError:
            continue


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})  # every address: it overlaps any other host's port


def _check_distinct_ports(s: Settings) -> None:
    """Two listening keys on one port (not 0) of one address, or of any address and another: refused, naming both.
    Otherwise they failed only at start, as gRPC's bind error without the key, or (``--workers``, whose port claims
    go by port alone) as another TenantGate having claimed the port (hostile review)."""
    seen: list[tuple[str, str, str]] = []
    for key, listen in (("server.listen", s.server.listen), ("server.health_listen", s.server.health_listen),
                        ("server.metrics_listen", s.server.metrics_listen), ("http.listen", s.http.listen)):
        if not listen:
            continue
        host, _, port = listen.rpartition(":")
        if int(port) == 0:
            continue
        for other_key, other_host, other_port in seen:
            if int(other_port) == int(port) and (host == other_host or host in _WILDCARD_HOSTS
                                                 or other_host in _WILDCARD_HOSTS):
                raise ConfigError(f"{key} and {other_key} name the same port {int(port)} ({shown(listen)}, "
                                  f"{shown(other_host + ':' + other_port)}): each needs a port of its own")
        seen.append((key, host, port))


def _check_hostport(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    # ASCII digits only: str.isdigit() also takes a superscript two (which int() then refuses with
    # a traceback instead of this ConfigError) and Arabic-Indic digits (which int() reads).
    if not sep or not host or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where} must be HOST:PORT, got {shown(value)}")
