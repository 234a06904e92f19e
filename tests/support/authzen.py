"""AuthZEN test world: a policy directory with tenant entity data, servers in either mode, an HTTP client.

    policies = entity_policies(tmp_path)                   # bundled policies + entity data for acme and globex
    with authzen_server(tmp_path, issuer, policies, mode="trusted_pep") as (base_url, app):
        httpx.post(f"{base_url}/access/v1/evaluation", json=..., headers=bearer(token))
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.server import BUNDLED_POLICIES, running_server, write_config
from tenantgate import config

PEP_ROLE = "authzen-pep"

# Bundled schema plus groups (users' parents), folders (invoices' parents) and a user email.
_SCHEMA_EXTRA = (("entity User = {", "entity Group in [Group];\nentity Folder in [Folder] = { owner?: String };\n"
                  "entity User in [Group] = {\n  email?: String,"),
                 ("entity Invoice = {", "entity Invoice in [Folder] = {"))

ACME_ENTITIES = [
    {"uid": {"type": "Group", "id": "finance"}},
    {"uid": {"type": "User", "id": "alice"}, "attrs": {"roles": ["viewer"], "email": "alice@acme.test"},
     "parents": [{"type": "Group", "id": "finance"}]},
    {"uid": {"type": "User", "id": "erin"}, "attrs": {"roles": ["editor"]}},
    {"uid": {"type": "User", "id": "adam"}, "attrs": {"roles": ["admin"]}},
    {"uid": {"type": "Folder", "id": "ledger"}, "attrs": {"owner": "alice"}},
    {"uid": {"type": "Invoice", "id": "inv-paid"}, "attrs": {"tenant": "acme", "status": "paid"},
     "parents": [{"type": "Folder", "id": "ledger"}]},
]
GLOBEX_ENTITIES = [
    {"uid": {"type": "Group", "id": "finance"}},
    {"uid": {"type": "User", "id": "gina"}, "attrs": {"roles": ["admin"]},
     "parents": [{"type": "Group", "id": "finance"}]},
    {"uid": {"type": "User", "id": "alice"}, "attrs": {"roles": []}},  # globex's alice: no roles, no groups
]
PLATFORM_ENTITIES = [
    {"uid": {"type": "User", "id": "oscar"}, "attrs": {"roles": ["breakglass-operator"]}},
]
FINANCE_POLICY = ('@id("{tenant}-finance-approves")\n'
                  'permit (principal in Group::"finance", action == Action::"approve", resource is Invoice);\n')


def entity_policies(tmp_path: Path) -> Path:
    """Bundled policies and schema (extended), with entity data and a finance policy for acme and globex,
    and entity data for the platform tenant (break-glass operators)."""
    root = tmp_path / "policies"
    shutil.copytree(BUNDLED_POLICIES, root, ignore=shutil.ignore_patterns("tests"))
    schema = (root / "schema.cedarschema").read_text()
    for old, new in _SCHEMA_EXTRA:
        schema = schema.replace(old, new, 1)
    (root / "schema.cedarschema").write_text(schema)
    for tenant, entities in (("acme", ACME_ENTITIES), ("globex", GLOBEX_ENTITIES)):
        directory = root / "tenants" / tenant
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "entities.json").write_text(json.dumps(entities, indent=1))
        (directory / "finance.cedar").write_text(FINANCE_POLICY.replace("{tenant}", tenant))
    (root / "tenants" / "platform").mkdir()
    (root / "tenants" / "platform" / "entities.json").write_text(json.dumps(PLATFORM_ENTITIES))
    return root


def http_section(mode: str = "user_token", **extra: Any) -> str:
    lines = ["[http]", 'listen = "127.0.0.1:0"', f'mode = "{mode}"']
    if mode == "trusted_pep":
        lines.append(f'pep_role = "{PEP_ROLE}"')
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n" + "\n".join(lines) + "\n"


@contextmanager
def authzen_server(tmp_path: Path, issuer: Any, policies: Path, mode: str = "user_token",
                   **http: Any) -> Iterator[tuple[str, Any]]:
    """A real TenantGate (gRPC + AuthZEN HTTP on loopback ports); yields ``(base_url, app)``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path, issuer.settings, policies=policies, extra=http_section(mode, **http))
    settings = config.load(path, env={})
    with running_server(settings) as (_address, app):
        scheme = "https" if settings.http.cert_file else "http"
        yield f"{scheme}://127.0.0.1:{app.http_port}", app


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def evaluation(subject: str, action: str, resource_id: str = "inv-1", resource_type: str = "Invoice",
               **properties: Any) -> dict[str, Any]:
    """An Access Evaluation request body; ``properties`` become ``resource.properties``."""
    resource: dict[str, Any] = {"type": resource_type, "id": resource_id}
    if properties:
        resource["properties"] = properties
    return {"subject": {"type": "user", "id": subject}, "action": {"name": action}, "resource": resource}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, written to ``tmp_path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "http.crt", tmp_path / "http.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
