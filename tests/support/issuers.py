"""Test issuers, a fixed clock and a loopback HTTP server, shared by every test that needs tokens.

    from support.issuers import TestIssuer, FixedClock

    clock = FixedClock(1_700_000_000)
    issuer = TestIssuer(tmp_path, alg="ES256", clock=clock)
    verifier = verifier_for(issuer, clock=clock)
    claims = verifier.verify(issuer.mint(tenant="globex"))

``mint`` and ``signed_raw`` assemble tokens by hand (json + base64url + the issuer's key), so hostile
headers and payloads can still carry a *valid* signature; ``raw`` takes any signature bytes you like.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tenantgate.config import IssuerSettings, TokenSettings
from tenantgate.core.ports import Clock
from tenantgate.identity import IssuerKeys, JwksFile, JwtVerifier
from tenantgate.identity.encoding import b64url_encode
from tenantgate.identity.keys import jwk_thumbprint

NOW = 1_700_000_000.0
"""A fixed instant tests can share (2023-11-14)."""


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()
"""Pass as a claim or header value to leave it out: ``issuer.mint(exp=OMIT)``."""

_EC: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}


@dataclass(slots=True)
class FixedClock:
    """A ``Clock`` that only moves when told to."""

    t: float = NOW

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def generate_key(alg: str) -> Any:
    """A fresh private key (or HMAC secret bytes) for ``alg``."""
    if alg in _EC:
        return ec.generate_private_key(_EC[alg]())
    if alg in _RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg in _HMAC:
        return secrets.token_bytes(_HMAC[alg])
    raise ValueError(f"no test key for {alg}")


def public_jwk(private_key: Any) -> dict[str, Any]:
    """The public JWK (kty and key members only) of a private key; the full JWK for an HMAC secret."""
    if isinstance(private_key, bytes):
        return {"kty": "oct", "k": b64url_encode(private_key)}
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return dict(jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return dict(jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True))
    return dict(jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True))


def json_with_literals(obj: Mapping[str, Any], literals: Mapping[str, str]) -> bytes:
    """Compact JSON of ``obj`` whose top-level members in ``literals`` are replaced by raw JSON text.

    ``json_with_literals(claims, {"exp": "1e400"})`` builds what no JSON encoder would emit.
    """
    marked = {**obj, **{name: f"__literal_{name}__" for name in literals}}
    text = json.dumps(marked, separators=(",", ":"))
    for name, literal in literals.items():
        text = text.replace(json.dumps(f"__literal_{name}__"), literal)
    return text.encode("utf-8")


class TestIssuer:
    """A throw-away issuer: a key pair, a JWKS file in ``tmp_dir`` and a token minter.

    ``settings`` is the ``IssuerSettings`` to trust it; ``private_key`` signs (secret bytes for HS*);
    ``kid`` is the RFC 7638 thumbprint written into the JWKS and, by default, into minted headers.
    ``jwk_extra`` adds or (with ``OMIT``) removes members of the published JWK.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        tmp_dir: Path,
        alg: str = "ES256",
        issuer: str = "https://issuer.test",
        audience: str = "tenantgate",
        *,
        clock: Clock | None = None,
        private_key: Any = None,
        jwk_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.alg = alg
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        self.private_key = private_key if private_key is not None else generate_key(alg)
        base = public_jwk(self.private_key)
        self.kid = jwk_thumbprint(base)
        jwk = {**base, "kid": self.kid, "alg": alg, "use": "sig", **(jwk_extra or {})}
        self.jwk: dict[str, Any] = {name: value for name, value in jwk.items() if value is not OMIT}
        self.jwks_path = Path(tmp_dir) / f"jwks-{uuid.uuid4().hex}.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.jwk]}), encoding="utf-8")
        self.settings = IssuerSettings(
            issuer=issuer, audiences=(audience,), algorithms=(alg,), jwks_file=str(self.jwks_path)
        )

    @property
    def public_key(self) -> Any:
        return self.private_key if isinstance(self.private_key, bytes) else self.private_key.public_key()

    def jwks_document(self, *extra_jwks: Mapping[str, Any]) -> bytes:
        """The JWKS JSON (this issuer's key plus ``extra_jwks``), e.g. to serve from a loopback URL."""
        return json.dumps({"keys": [self.jwk, *extra_jwks]}).encode("utf-8")

    def issuer_keys(self) -> IssuerKeys:
        return IssuerKeys(self.settings, JwksFile(self.jwks_path))

    def default_claims(self, now: float | None = None) -> dict[str, Any]:
        issued = int(self._now(now))
        return {
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + 300,
            "tenant": "acme",
            "jti": uuid.uuid4().hex,
        }

    def default_header(self) -> dict[str, Any]:
        return {"alg": self.alg, "typ": "at+jwt", "kid": self.kid}

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, Any] | None = None,
        now: float | None = None,
        **claim_overrides: Any,
    ) -> str:
        """A validly signed token: default claims, updated by ``claims`` then ``claim_overrides``.

        ``now`` (default: the issuer's clock, else ``time.time()``) anchors iat/nbf and exp (= now + 300).
        ``OMIT`` as a value removes a claim or header.
        """
        payload = _merged(self.default_claims(now), claims, claim_overrides)
        header = _merged(self.default_header(), headers, {})
        return self.signed_raw(header, payload)

    def sign(self, signing_input: bytes, alg: str | None = None) -> bytes:
        """The JOSE signature of ``signing_input`` with this issuer's key (raw r||s for ECDSA)."""
        algorithm = jwt.algorithms.get_default_algorithms()[alg or self.alg]
        return algorithm.sign(signing_input, self.private_key)

    def signed_raw(self, header: Mapping[str, Any] | bytes, payload: Mapping[str, Any] | bytes) -> str:
        """Hand-assemble and sign (with ``self.alg``, whatever the header claims) a token.

        Dicts are compact JSON (``OMIT`` members dropped); bytes are used as they are.
        """
        head, body = _segment(header), _segment(payload)
        signature = self.sign(f"{head}.{body}".encode("ascii"))
        return f"{head}.{body}.{b64url_encode(signature)}"

    @staticmethod
    def raw(header: Mapping[str, Any] | bytes, payload: Mapping[str, Any] | bytes, signature: bytes) -> str:
        """Hand-assemble a token from a header, a payload and arbitrary signature bytes (no PyJWT)."""
        return f"{_segment(header)}.{_segment(payload)}.{b64url_encode(signature)}"

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        return self.clock.now() if self.clock is not None else time.time()


def _merged(
    base: dict[str, Any], update: Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    merged = {**base, **(update or {}), **overrides}
    return {name: value for name, value in merged.items() if value is not OMIT}


def _segment(part: Mapping[str, Any] | bytes) -> str:
    if isinstance(part, bytes):
        return b64url_encode(part)
    members = {name: value for name, value in part.items() if value is not OMIT}
    return b64url_encode(json.dumps(members, separators=(",", ":")).encode("utf-8"))


def token_settings(**overrides: Any) -> TokenSettings:
    """``TokenSettings`` with test-friendly defaults (no issuers: the verifier gets ``IssuerKeys`` directly)."""
    return replace(TokenSettings(), **overrides)


def verifier_for(*issuers: TestIssuer | IssuerKeys, clock: Clock, **token_overrides: Any) -> JwtVerifier:
    """A ``JwtVerifier`` trusting ``issuers`` (file key sources), with ``TokenSettings`` overrides."""
    keys = [i.issuer_keys() if isinstance(i, TestIssuer) else i for i in issuers]
    return JwtVerifier(keys, token_settings(**token_overrides), clock)


# ------------------------------------------------------------------------------------------ HTTP server


@dataclass(slots=True)
class Route:
    """What a path answers. ``hold``: answer only once the event is set (bounded by 30 s), a slow server.
    ``trickle_seconds``: send the body one byte at a time with this pause (``trickle_headers``: the status
    line and headers too), a server that never lets a per-read socket timeout expire."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    hold: threading.Event | None = None
    trickle_seconds: float = 0.0
    trickle_headers: bool = False


class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1 (port 0) that serves configured routes and records every request path.

    Use as a context manager; ``stop()`` closes the port so later connections are refused at once.
    Unknown paths answer 404. ``count`` counts requests received, ``answered`` responses sent in full, and
    ``trickled`` the bytes a trickling route has sent so far.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self._answered: list[str] = []
        self._trickled: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                    route = server.routes.get(self.path, Route(404, b"not found", {}))
                if route.hold is not None:
                    route.hold.wait(timeout=30)
                head = self._head(route)
                if route.trickle_seconds:
                    if not self._trickle(route, head):
                        return
                else:
                    self.wfile.write(head + route.body)
                with server._lock:
                    server._answered.append(self.path)

            def _head(self, route: Route) -> bytes:
                lines = [f"HTTP/1.0 {route.status} {self.responses.get(route.status, ('?',))[0]}"]
                lines += [f"{name}: {value}" for name, value in route.headers.items()]
                if not any(name.lower() == "content-length" for name in route.headers):
                    lines.append(f"Content-Length: {len(route.body)}")
                lines += ["", ""]
                return "\r\n".join(lines).encode("latin-1")

            def _trickle(self, route: Route, head: bytes) -> bool:
                paced = head + route.body if route.trickle_headers else route.body
                try:
                    if not route.trickle_headers:
                        self.wfile.write(head)
                    for index in range(len(paced)):
                        time.sleep(route.trickle_seconds)
                        self.wfile.write(paced[index:index + 1])
                        with server._lock:
                            server._trickled[self.path] = server._trickled.get(self.path, 0) + 1
                except OSError:
                    return False  # the client hung up
                return True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # A short poll interval so stop() returns in milliseconds, not serve_forever's default 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._running = False

    def url(self, path: str = "/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(
        self,
        path: str,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        *,
        hold: threading.Event | None = None,
        trickle_seconds: float = 0.0,
        trickle_headers: bool = False,
    ) -> None:
        route = Route(status, body, hold=hold, trickle_seconds=trickle_seconds, trickle_headers=trickle_headers)
        if headers is not None:
            route.headers = headers
        with self._lock:
            self.routes[path] = route

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return len(self.requests) if path is None else self.requests.count(path)

    def answered(self, path: str) -> int:
        with self._lock:
            return self._answered.count(path)

    def trickled(self, path: str) -> int:
        with self._lock:
            return self._trickled.get(path, 0)

    def start(self) -> Self:
        self._thread.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._running = False
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
