"""Throwaway certificate authorities and certificates for TLS, mTLS and certificate-bound token tests.

    ca = TestCA("mesh")
    server = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue("envoy", uris=["spiffe://mesh.test/ns/edge/sa/envoy"])
    cert_file, key_file = server.write(tmp_path)
    token = issuer.mint(cnf={"x5t#S256": client.x5t_s256})
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from tenantgate.identity.encoding import b64url_encode

_START = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_END = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, with the encodings tests need."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def x5t_s256(self) -> str:
        """RFC 8705 thumbprint: base64url SHA-256 of the DER certificate (a token's ``cnf.x5t#S256``)."""
        return b64url_encode(hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).digest())

    @property
    def envoy_encoded(self) -> str:
        """The certificate as Envoy forwards it in ``attributes.source.certificate`` (URL-encoded PEM)."""
        return urllib.parse.quote(self.cert_pem.decode("ascii"), safe="")

    def write(self, directory: Path, name: str = "tls") -> tuple[Path, Path]:
        """Write ``<name>.crt`` and ``<name>.key`` (atomically replaced) and return their paths."""
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        for path, data in ((cert, self.cert_pem), (key, self.key_pem)):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return cert, key


class TestCA:
    """A self-signed EC P-256 CA that issues leaf certificates valid for both server and client use."""

    __test__ = False

    def __init__(self, name: str = "TenantGate Test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_START).not_valid_after(_END)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "ca.crt") -> Path:
        path = directory / name
        path.write_bytes(self.cert_pem)
        return path

    def issue(self, common_name: str, *, dns: Sequence[str] = (), uris: Sequence[str] = (),
              ips: Sequence[str] = (), raw_san: bytes | None = None) -> Issued:
        """A leaf with these SANs; ``raw_san``: the DER of a SubjectAlternativeName extension to use instead
        (for names cryptography cannot build, such as an x400Address)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_START).not_valid_after(_END)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        if raw_san is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, raw_san), critical=False)
        elif names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)
