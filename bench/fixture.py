"""What every scenario needs: a token issuer, a config file, a free port, a scaled policy tree, budgets.

Nothing here imports ``tests/``: the harness is usable on its own (``make bench``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tenantgate.config import IssuerSettings
from tenantgate.identity import IssuerKeys, JwksFile
from tenantgate.identity.keys import jwk_thumbprint

REPO = Path(__file__).resolve().parents[1]
BUNDLED_POLICIES = REPO / "policies"
ISSUER = "https://bench.tenantgate.test"
AUDIENCE = "tenantgate"


@dataclass(frozen=True, slots=True)
class Budget:
    """How much each scenario runs. ``FULL`` is ``make bench``; ``QUICK`` keeps the harness tested."""

    warmup_s: float            # closed-loop gRPC: warm-up before each measured run
    run_s: float               # closed-loop gRPC: measured time per run (also bounded by max_calls)
    max_calls: int
    concurrency: tuple[int, ...]
    core_samples: int          # in-process: timed calls per series (split into rounds, series interleaved)
    core_rounds: int
    peer_tenants: int
    peer_samples: int
    scale_tenants: tuple[int, ...]
    scale_sample: int          # tenants sampled (and cold measurements) per size
    token_samples: int         # distinct tokens per algorithm for the cold path
    batch_sizes: tuple[int, ...]
    batch_concurrency: tuple[int, ...]
    gate_rate: float           # load gate: offered requests per second
    gate_seconds: float
    gate_concurrency: int
    gate_workers: tuple[int, ...]  # load gate: one run per server process count (1 = `make serve`)
    gate_connections: int      # load gate: client connections (Envoy opens one per worker thread)
    model_threads: tuple[int, ...]  # server model: thread pool sizes of the sync grpc.server


FULL = Budget(warmup_s=1.0, run_s=5.0, max_calls=200_000, concurrency=(1, 16, 64), core_samples=10_000,
              core_rounds=5, peer_tenants=20, peer_samples=10_000, scale_tenants=(1, 100, 10_000),
              scale_sample=500, token_samples=400, batch_sizes=(1, 10, 100, 1000), batch_concurrency=(1, 2),
              gate_rate=2000.0, gate_seconds=30.0, gate_concurrency=50, gate_workers=(1, 2),
              gate_connections=4, model_threads=(4, 16))
QUICK = Budget(warmup_s=0.2, run_s=0.4, max_calls=5_000, concurrency=(1, 16, 64), core_samples=300,
               core_rounds=2, peer_tenants=3, peer_samples=300, scale_tenants=(1, 10, 50),
               scale_sample=20, token_samples=20, batch_sizes=(1, 10, 100, 1000), batch_concurrency=(1, 2),
               gate_rate=200.0, gate_seconds=2.0, gate_concurrency=50, gate_workers=(1, 2),
               gate_connections=4, model_threads=(4,))


def python_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: ours, with the repository root importable (``bench``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _generate(alg: str) -> Any:
    if alg.startswith("ES"):
        return ec.generate_private_key(ec.SECP256R1())
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"no bench key for {alg}")


def _public_jwk(private_key: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return dict(jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True))
    if isinstance(public, ec.EllipticCurvePublicKey):
        return dict(jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True))
    return dict(jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True))


class BenchIssuer:
    """A throw-away issuer (like the tests' ``TestIssuer``): a key pair, its JWKS file, and ``mint``."""

    def __init__(self, directory: Path, alg: str = "ES256", issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.alg, self.issuer, self.audience = alg, issuer, audience
        self.private_key = _generate(alg)
        jwk = _public_jwk(self.private_key)
        self.kid = jwk_thumbprint(jwk)
        self.jwks_path = Path(directory) / f"jwks-{alg}-{uuid.uuid4().hex[:8]}.json"
        self.jwks_path.write_text(json.dumps({"keys": [{**jwk, "kid": self.kid, "alg": alg, "use": "sig"}]}))
        self.settings = IssuerSettings(issuer=issuer, audiences=(audience,), algorithms=(alg,),
                                       jwks_file=str(self.jwks_path))

    def mint(self, tenant: str, sub: str, roles: tuple[str, ...] = (), ttl: int = 3600) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": sub, "aud": self.audience, "iat": now, "nbf": now, "exp": now + ttl,
                  "tenant": tenant, "roles": list(roles), "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers={"kid": self.kid, "typ": "at+jwt"})

    def issuer_keys(self) -> IssuerKeys:
        return IssuerKeys(self.settings, JwksFile(self.jwks_path))


def write_config(directory: Path, issuer: BenchIssuer, *, listen: str = "127.0.0.1:0",
                 policies: Path = BUNDLED_POLICIES) -> Path:
    """A config trusting ``issuer`` with state (audit log, grant store) under ``directory``; metrics off."""
    text = f"""
[server]
listen = "{listen}"
metrics_listen = ""
state_dir = "{directory / 'state'}"
grace_seconds = 5

[policies]
dir = "{policies}"

[[tokens.issuers]]
issuer = "{issuer.issuer}"
audiences = ["{issuer.audience}"]
algorithms = ["{issuer.alg}"]
jwks_file = "{issuer.jwks_path}"
"""
    path = directory / "tenantgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def tenant_name(index: int) -> str:
    return f"t{index:05d}"


def write_tenant_tree(root: Path, tenants: int, per_tenant: int = 10) -> None:
    """The bundled global policies and schema, plus ``tenants`` tenants with ``per_tenant`` policies each.

    Tenant ``tNNNNN``'s policy ``j`` permits ``approve`` on an Invoice with ``status == "level-j"`` to a User
    with role ``approver-j`` (the tree of tests/integration/test_policy_scale.py).
    """
    root.mkdir(parents=True)
    for source in BUNDLED_POLICIES.glob("*.cedar"):
        shutil.copy(source, root)
    shutil.copy(BUNDLED_POLICIES / "schema.cedarschema", root)
    for i in range(tenants):
        directory = root / "tenants" / tenant_name(i)
        directory.mkdir(parents=True)
        directory.joinpath("policies.cedar").write_text("\n".join(
            f'@id("t{i}-p{j}")\npermit (principal is User, action == Action::"approve", resource is Invoice)\n'
            f'when {{ principal.roles.contains("approver-{j}") && resource has status && '
            f'resource.status == "level-{j}" }};\n' for j in range(per_tenant)))


def child_python() -> str:
    return sys.executable
