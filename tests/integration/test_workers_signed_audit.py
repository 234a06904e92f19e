"""`tenantgate serve --workers 2` with a checkpoint key and a deployment id: each worker signs its own chain, and
`audit verify --all-workers --public-key --deployment` holds every chain to its worker. Every process is started
and stopped here; each wait is bounded."""

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support import workers
from support.worker_records import _decisions
from support.workers import CHANNELS, TENANTGATE, _check, _env, serving
from tenantgate.v1 import authorizer_pb2 as pb

issuer = workers.issuer  # function-scoped: each test's own issuer and policies
policy_dir = workers.policy_dir


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "ckpt.pem", tmp_path / "ckpt.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TENANTGATE, "audit", "verify", *args], env=_env(), capture_output=True, text=True,
                          timeout=60)


def test_two_workers_signed_chains_verify_with_the_public_key_and_a_swap_does_not(tmp_path, issuer, policy_dir):
    private, public = _keys(tmp_path)
    extra = f'\n[audit]\ncheckpoint_key_file = "{private}"\ncheckpoint_every = 3\ndeployment_id = "eu-1"\n'
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir, extra=extra) as cluster:
        answers = [_check(cluster.address, token) for _ in range(CHANNELS)]
        assert all(a.decision == pb.ALLOW for a in answers)
        assert cluster.stop() == 0
    chains = _decisions(cluster.audit)
    assert [f.name for f in chains] == ["audit.jsonl", "audit-w1.jsonl"]
    assert all(records for records in chains.values()), "one worker answered every connection"
    strict = ["--all-workers", "--public-key", str(public), "--deployment", "eu-1", "--max-unsigned", "3",
              "--from-genesis", str(cluster.audit)]
    verified = _verify(*strict)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("OK:") == 2 and "TAMPERED" not in verified.stdout
    assert _verify("--public-key", str(public), str(cluster.audit.with_name("audit-w1.jsonl"))).returncode == 0
    assert _verify("--all-workers", "--public-key", str(public), "--deployment", "us-1",
                   str(cluster.audit)).returncode == 4
    worker0, worker1 = cluster.audit, cluster.audit.with_name("audit-w1.jsonl")
    for suffix in ("", ".head"):  # worker 1's chain, head file included, in worker 0's place
        Path(f"{worker0}{suffix}").write_bytes(Path(f"{worker1}{suffix}").read_bytes())
    swapped = _verify(*strict)
    assert swapped.returncode == 4, swapped.stdout
    assert "checkpoint signs worker 1's chain (deployment 'eu-1'), not worker 0's chain" in swapped.stdout
