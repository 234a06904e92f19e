"""Where verification keys come from: a JWKS file (``jwksfile``) or URL, parsed into key objects by ``keys``.

Security defaults:

* A JWKS *file* is trusted configuration: anything doubtful is a start-up ``ConfigError`` naming the file, and
  a changed file is re-read off the request path (see ``tenantgate.identity.jwksfile``).
* A JWKS *URL* is fetched lazily, without following redirects, capped at 1 MiB and at ``timeout_seconds`` in
  total, and re-fetched at most once per ``refresh_min_interval_seconds`` whatever the reason (expiry, unknown
  ``kid``, failure), so a flood of unknown ``kid`` values cannot become a flood of fetches. Once keys are held,
  re-fetches run on a background thread: verification never waits for the network. The last good key set
  keeps working while the URL is down or serves garbage; doubtful keys in a fetched set are skipped with a
  warning. A well-formed key set without a usable key (``{"keys": []}``) is not garbage: it replaces the held
  keys, so an issuer that withdrew every key is trusted with none.

The URL source is ``JwksUrl`` (``tenantgate.identity.jwksurl``, one request in ``tenantgate.identity.jwkshttp``);
its answers are saved by ``tenantgate.identity.jwkssaved``. Keys are parsed by ``tenantgate.identity.keys``;
strict JSON and base64url decoding live in ``tenantgate.identity.encoding`` (re-exported here). This module
holds what every source shares: the ``KeySource`` contract and ``IssuerKeys``, an issuer bound to its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tenantgate.config import IssuerSettings, TokenSettings
from tenantgate.configcheck import check_algorithms
from tenantgate.core.request import is_tenant_id
from tenantgate.errors import ConfigError

# Re-exported: these helpers lived here before ``encoding`` was split out, and callers may import them from here.
from tenantgate.identity.encoding import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from tenantgate.identity.encoding import b64url_decode as b64url_decode
from tenantgate.identity.encoding import b64url_encode as b64url_encode
from tenantgate.identity.encoding import parse_strict_json as parse_strict_json
from tenantgate.identity.jwksfile import JwksFile as JwksFile
from tenantgate.identity.jwkssaved import SavedKeySet

# Re-exported: ``JwksUrl`` lived here before ``jwksurl`` was split out.
from tenantgate.identity.jwksurl import JwksUrl as JwksUrl
from tenantgate.identity.keys import KeySet


class KeySource(Protocol):
    """Where an issuer's verification keys come from.

    ``current()`` returns the key set, or raises ``KeySourceUnavailable`` when no key set was ever obtained.
    ``refresh()`` asks for a re-read after an unknown ``kid`` and returns the (possibly unchanged) key set;
    implementations rate-limit it. Once a source holds keys, neither call may wait for I/O: a re-read runs in
    the background and the held keys answer meanwhile. ``peek()`` returns the keys already held, without I/O.
    ``fetch_soon()`` starts a read in the background when it holds no usable key yet (rate-limited), never
    waiting. ``reread(force=...)`` re-reads a source that changes only when asked (a file: when its fingerprint
    changed, or always with ``force``), off the request path; True iff a different key set was installed;
    never raises. ``last_error`` says why the held keys are stale or hold no usable key ('' otherwise).

    A held key set may be empty: the issuer published a well-formed set without a usable key, which revokes
    every key it held before. Its tokens are denied and it is not ready (``JwtVerifier.keys_ready``).
    """

    description: str

    @property
    def last_error(self) -> str: ...

    def current(self) -> KeySet: ...

    def refresh(self) -> KeySet: ...

    def peek(self) -> KeySet | None: ...

    def fetch_soon(self) -> None: ...

    def reread(self, *, force: bool = False) -> bool: ...


# --------------------------------------------------------------------------------------------- issuers


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """A trusted issuer: its settings (exact ``iss``, audiences, algorithms, tenants) and where its keys come from.

    ``settings.tenants`` (``[[tokens.issuers]] tenants = ["acme", "globex"]``) limits the tenants the issuer
    may assert in the tenant claim; empty (the default) means any tenant. Raises ``ConfigError`` when the
    settings are unsafe (no audience, unknown or mixed HMAC/asymmetric algorithms, a tenants entry that is
    not a tenant id) or when keys already held cannot verify any of the issuer's algorithms.
    """

    settings: IssuerSettings
    source: KeySource

    def __post_init__(self) -> None:
        where = f"issuer {self.settings.issuer!r}"
        if not self.settings.issuer:
            raise ConfigError("issuer must not be empty")
        if not self.settings.audiences or not all(isinstance(a, str) and a for a in self.settings.audiences):
            raise ConfigError(f"{where}: audiences must list at least one non-empty audience")
        check_algorithms(tuple(self.settings.algorithms), where)
        for tenant in self.settings.tenants:
            if not is_tenant_id(tenant):
                raise ConfigError(f"{where}: tenants entry {tenant!r} is not a valid tenant id")
        held = self.source.peek()
        if held is not None and not any(held.usable_for(alg) for alg in self.settings.algorithms):
            raise ConfigError(
                f"{where}: no key in {self.source.description} fits the algorithms "
                f"{', '.join(self.settings.algorithms)}"
            )

    @classmethod
    def from_settings(cls, issuer: IssuerSettings, tokens: TokenSettings,
                      saved_dir: Path | None = None) -> IssuerKeys:
        """Build the key source the settings name (exactly one of ``jwks_file`` / ``jwks_url``). Key sources
        measure their ages on the monotonic clock, so they take no wall clock (see ``JwksUrl``). A URL's
        responses are saved in ``saved_dir`` (``identity.jwkssaved``) unless it is None or
        ``tokens.jwks_saved_max_age_seconds`` is 0."""
        if bool(issuer.jwks_file) == bool(issuer.jwks_url):
            raise ConfigError(f"issuer {issuer.issuer!r}: set exactly one of jwks_file or jwks_url")
        source: KeySource
        if issuer.jwks_file:
            source = JwksFile(issuer.jwks_file)
        else:
            source = JwksUrl(
                issuer.jwks_url,
                tokens.jwks_cache_seconds,
                tokens.jwks_refresh_min_interval_seconds,
                tokens.jwks_fetch_timeout_seconds,
                saved=None if saved_dir is None or not tokens.jwks_saved_max_age_seconds else SavedKeySet(
                    saved_dir, issuer.jwks_url, tokens.jwks_saved_max_age_seconds),
            )
        return cls(issuer, source)
