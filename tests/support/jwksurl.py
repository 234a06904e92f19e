"""A JWKS URL source on the loopback server and an ES256 issuer trusting it, for the JWKS URL tests."""

from support.issuers import FixedClock, LoopbackServer, TestIssuer
from tenantgate.config import IssuerSettings
from tenantgate.identity import IssuerKeys, JwksUrl

ISSUER = "https://issuer.test"


def url_source(server: LoopbackServer, clock: FixedClock, path: str = "/jwks.json", *,
               timeout_seconds: float = 2) -> JwksUrl:
    """Keys cached 300 s, refreshed at most every 30 s, on the test's clock."""
    return JwksUrl(server.url(path), cache_seconds=300, refresh_min_interval_seconds=30,
                   timeout_seconds=timeout_seconds, monotonic=clock.now)


def url_issuer(es: TestIssuer, source: JwksUrl) -> IssuerKeys:
    return IssuerKeys(IssuerSettings(ISSUER, ("tenantgate",), ("ES256",), jwks_url="http://x"), source)
