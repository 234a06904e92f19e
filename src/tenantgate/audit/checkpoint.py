"""Signed checkpoints: Ed25519 signatures over the chain head, so a rewritten chain cannot pass as original.

A checkpoint is an ordinary chain record::

    {"record_type": "checkpoint", "time": ..., "count": N, "chain_head": H, "deployment": D, "worker": W,
     "key_id": K, "signature": S, "seq": N + 1, "prev_hash": H, "hash": ...}

``count`` is the seq of the last record it covers and ``chain_head`` that record's hash. ``deployment``
(``audit.deployment_id``, "" when not set) and ``worker`` (the worker number of ``serve --workers``, 0 for a
single process) name the chain it signs: every worker's chain is signed with the same key, so without them a
chain replaced whole by another worker's verified. ``signature`` is the base64 Ed25519 signature over
``C({"chain_head", "count", "deployment", "key_id", "record_type", "time", "worker"})`` (the canonical
encoding of ``chain.py``). ``key_id`` is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.

A checkpoint proves its chain's identity only against one the verifier knows by other means (the worker
number from the file name, the deployment from the operator): see ``verify.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tenantgate.audit.chain import canonical
from tenantgate.errors import ConfigError

CHECKPOINT = "checkpoint"
_SIGNED_FIELDS = ("chain_head", "count", "deployment", "key_id", "record_type", "time", "worker")
# Every field a checkpoint record is written with: the signed ones, the signature and the chain fields.
_RECORD_FIELDS = frozenset((*_SIGNED_FIELDS, "signature", "seq", "prev_hash", "hash"))
DEPLOYMENT_ID_RULE = "at most 128 printable ASCII characters without spaces"


def is_deployment_id(value: str) -> bool:
    """What ``audit.deployment_id`` may be (``DEPLOYMENT_ID_RULE``; "" is "not set"): the config refuses
    anything else, so no checkpoint can sign another value and ``verify --deployment`` refuses it too."""
    return len(value) <= 128 and all(" " < c <= "~" for c in value)


@dataclass(frozen=True, slots=True)
class ChainIdentity:
    """Which chain a checkpoint signs: ``deployment`` (``audit.deployment_id``, "" when not set) and ``worker``
    (0 for a single process or worker 0 of ``serve --workers``)."""

    deployment: str = ""
    worker: int = 0

    def __str__(self) -> str:
        deployment = f"deployment {self.deployment!r}" if self.deployment else "no deployment id"
        return f"worker {self.worker}'s chain ({deployment})"


def load_private_key(source: str | os.PathLike[str] | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8, unencrypted) file, or the key itself.

    Raises ``ConfigError`` naming the file when it is unreadable or not an Ed25519 private key. The key
    material is never put in a message.
    """
    if isinstance(source, Ed25519PrivateKey):
        return source
    path = Path(source)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise ConfigError(f"cannot read audit checkpoint key {path}: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"audit checkpoint key {path} is not an unencrypted PEM private key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit checkpoint key {path} is not an Ed25519 key")
    return key


def load_public_key(source: str | os.PathLike[str] | Ed25519PublicKey) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) file. Raises ``ConfigError``."""
    if isinstance(source, Ed25519PublicKey):
        return source
    path = Path(source)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as err:
        raise ConfigError(f"cannot read public key {path}: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path} is not a PEM public key") from err
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_fields(key: Ed25519PrivateKey, *, count: int, chain_head: str, time: str,
                      chain: ChainIdentity) -> dict[str, Any]:
    """The fields of a checkpoint of ``chain`` covering records 1..``count`` whose last hash is ``chain_head``."""
    fields: dict[str, Any] = {"record_type": CHECKPOINT, "time": time, "count": count, "chain_head": chain_head,
                              "deployment": chain.deployment, "worker": chain.worker,
                              "key_id": key_id(key.public_key())}
    fields["signature"] = base64.b64encode(key.sign(_payload(fields))).decode("ascii")
    return fields


def check_checkpoint(fields: dict[str, Any], seq: int, prev_hash: str, public: Ed25519PublicKey | None, *,
                     worker: int, deployment: str | None) -> str:
    """Why a checkpoint record is invalid, or "" when it is valid.

    It must sign the chain of ``worker`` and, unless ``deployment`` is None (not checked), of ``deployment``.
    Without a public key only the structure, its agreement with the chain (``count == seq - 1``,
    ``chain_head == prev_hash``) and the chain it names are checked. A checkpoint of the format before
    checkpoints named their chain (no ``worker`` nor ``deployment``) is invalid, with a message saying so:
    it could be any chain's signed with the same key. So is one holding a field no checkpoint is written with:
    the signature does not cover it, so whatever it says (a forged decision, say) would pass as signed.
    """
    if fields.get("count") != seq - 1 or fields.get("chain_head") != prev_hash:
        return "checkpoint count/chain_head do not match its place in the chain"
    if "worker" not in fields and "deployment" not in fields:
        return ("checkpoint of the old format that does not name its chain (no worker, no deployment): refused, "
                "it could be any chain's signed with the same key; verify this log with the release that wrote it, "
                "and start a new one")
    signature, named_worker, named_deployment = fields.get("signature"), fields.get("worker"), fields.get("deployment")
    if not isinstance(signature, str) or not isinstance(named_deployment, str) or \
            not isinstance(named_worker, int) or isinstance(named_worker, bool) or \
            not all(isinstance(fields.get(name), (str, int)) for name in _SIGNED_FIELDS):
        return "checkpoint fields are missing or ill-typed"
    # Review finding: the last checkpoint, given a "decision": "ALLOW" and re-hashed with the head file, verified
    # as signed (with --max-unsigned 0) and `audit query --decision ALLOW` listed it.
    if extra := sorted(set(fields) - _RECORD_FIELDS):
        shown = ", ".join(repr(name[:40]) for name in extra[:5]) + (", ..." if len(extra) > 5 else "")
        return f"checkpoint holds field(s) no checkpoint is written with, which its signature does not cover: {shown}"
    if public is not None:
        if fields.get("key_id") != key_id(public):
            return f"checkpoint signed by key {fields.get('key_id')!r}, not by the given public key " \
                f"({key_id(public)})"
        try:
            public.verify(base64.b64decode(signature, validate=True), _payload(fields))
        except (InvalidSignature, ValueError):
            return "checkpoint signature does not verify"
    # INVARIANT: a checkpoint counts for the chain the verifier knows it is verifying, never for the one it names.
    signed = ChainIdentity(named_deployment, named_worker)
    if named_worker != worker or (deployment is not None and named_deployment != deployment):
        expected = f"worker {worker}'s" if deployment is None else str(ChainIdentity(deployment, worker))
        return f"checkpoint signs {signed}, not {expected}: another chain in this one's place (or a log renamed: " \
            "say whose it is, verify --worker / --deployment)"
    return ""


def _payload(fields: dict[str, Any]) -> bytes:
    return canonical({name: fields[name] for name in _SIGNED_FIELDS}).encode("ascii")
