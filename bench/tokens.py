"""Scenario 5: token verification per algorithm, cold (distinct tokens, full verification) vs cache hit.

``JwtVerifier`` with default ``TokenSettings`` and a test issuer's JWKS file (key objects, not PEM); raw
``jwt.decode`` with the same key object is shown as the floor of a cold verification.
"""

from __future__ import annotations

import math

import jwt

from tenantgate.config import TokenSettings
from tenantgate.core.ports import SystemClock
from tenantgate.identity import JwtVerifier

from .context import RunContext
from .fixture import BenchIssuer
from .results import Chart, Section
from .stats import rate, ratio, summarize, times, us
from .timing import each

GOALS: list[tuple[str, str]] = []
ALGORITHMS = ("RS256", "ES256", "EdDSA")


def run(ctx: RunContext) -> Section:
    n = ctx.budget.token_samples
    section = Section("tokens", "5. Token path: cold verification vs cache hit",
                      ["algorithm", "path", "p50", "p99", "per second (1/p50)", "vs cache hit (p50)"])
    directory = ctx.tmp / "tokens"
    directory.mkdir()
    data: dict[str, dict[str, object]] = {}
    chart_labels, chart_values = [], []
    for alg in ALGORITHMS:
        issuer = BenchIssuer(directory, alg)
        verifier = JwtVerifier([issuer.issuer_keys()], TokenSettings(), SystemClock())
        tokens = [issuer.mint("acme", f"user-{i}", ("viewer",)) for i in range(n)]
        warm = issuer.mint("acme", "warm", ("viewer",))
        verifier.verify(warm)
        public = issuer.private_key.public_key()

        def pyjwt(token: object, key: object = public, alg: str = alg, aud: str = issuer.audience,
                  iss: str = issuer.issuer) -> object:
            return jwt.decode(str(token), key, algorithms=[alg], audience=aud, issuer=iss)

        pyjwt(warm)
        series = {
            "JwtVerifier.verify, cold (distinct tokens)": each(verifier.verify, tokens),  # type: ignore[arg-type]
            "jwt.decode alone, cold (floor)": each(pyjwt, tokens),  # type: ignore[arg-type]
            "JwtVerifier.verify, cache hit": each(verifier.verify, [warm] * (n * 10)),  # type: ignore[arg-type]
        }
        hit = summarize(series["JwtVerifier.verify, cache hit"]).p50
        data[alg] = {}
        for path, samples in series.items():
            s = summarize(samples)
            data[alg][path] = s.to_dict()
            section.add(alg, path, us(s.p50), us(s.p99), rate(1 / s.p50 if s.p50 > 0 else math.nan),
                        times(ratio(s.p50, hit)))
            chart_labels.append(f"{alg}: {path.split(',')[0]}{', cold' if 'cold' in path else ', hit'}")
            chart_values.append(s.p50 * 1e6)
    section.data["algorithms"] = data
    section.notes.append(f"{n:,} distinct tokens per algorithm for the cold rows, {n * 10:,} calls for the cache hit "
                         "(the verifier caches verified tokens under their SHA-256 until exp).")
    section.charts.append(Chart("Token verification p50", "µs", chart_labels, chart_values, log=True))
    return section
