"""What a grant is in the database, apart from the SQL: the row <-> ``Grant`` mapping, the key of an operator's
lock, which strings a row can hold, and the message a driver's error becomes.

Both grant stores and ``SqlGrantStore`` (``_store``) use these; they hold no connection and no state. Actions
are a JSON array in a TEXT column in both databases. The table, the schema and its migration (``migrate``), the
statement texts (``COLUMNS``, ``statements``) and ``Dialect`` are in ``_sql``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tenantgate.core.grants import Grant, GrantState
from tenantgate.errors import GrantStoreUnavailable

# First half of the two-key advisory lock on one operator's creates ("tgop" in ASCII): the two-key space does
# not overlap the one-key space of ``postgres.MIGRATION_LOCK_KEY``.
OPERATOR_LOCK_CLASS = 0x7467_6F70


def operator_lock_key(grant: Grant) -> tuple[int, int]:
    """The advisory lock key of ``grant``'s operator (subject, tenant, issuer): ``OPERATOR_LOCK_CLASS`` and a
    signed 32-bit hash that every replica computes alike. Two operators sharing a hash only wait for each other."""
    identity = "\0".join((grant.operator, grant.operator_tenant, grant.operator_issuer)).encode("utf-8")
    digest = hashlib.blake2b(identity, digest_size=4).digest()
    return OPERATOR_LOCK_CLASS, int.from_bytes(digest, "big", signed=True)


def grant_params(grant: Grant) -> tuple[Any, ...]:
    """The row for ``grant`` in ``COLUMNS`` order (actions as a compact JSON array)."""
    return (grant.id, grant.operator, grant.operator_tenant, grant.target_tenant,
            json.dumps(list(grant.actions), ensure_ascii=False, separators=(",", ":")), grant.reason, grant.ticket,
            int(grant.duration_seconds), grant.state.value, float(grant.requested_at), float(grant.pending_until),
            grant.approved_by, float(grant.approved_at), float(grant.expires_at), grant.revoked_by,
            float(grant.revoked_at), grant.revoke_reason, grant.operator_issuer)


def grant_from_row(row: Sequence[Any]) -> Grant:
    """The ``Grant`` a row in ``COLUMNS`` order holds.

    Raises ``GrantStoreUnavailable`` when the row is not one this code wrote (unknown state, actions that are
    not a JSON array of strings): a store we cannot read is a store we cannot use, and that fails closed.
    """
    try:
        actions = json.loads(row[4])
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ValueError("actions is not a JSON array of strings")
        return Grant(
            id=str(row[0]), operator=str(row[1]), operator_tenant=str(row[2]), target_tenant=str(row[3]),
            actions=tuple(actions), reason=str(row[5]), ticket=str(row[6]), duration_seconds=int(row[7]),
            state=GrantState(row[8]), requested_at=float(row[9]), pending_until=float(row[10]),
            approved_by=str(row[11]), approved_at=float(row[12]), expires_at=float(row[13]),
            revoked_by=str(row[14]), revoked_at=float(row[15]), revoke_reason=str(row[16]),
            operator_issuer=str(row[17]),
        )
    except (ValueError, TypeError, IndexError) as err:
        raise GrantStoreUnavailable(f"grant store unavailable: unreadable grant row ({err})") from err


def short_reason(err: BaseException, secrets: Sequence[str] = ()) -> str:
    """The first line of ``err`` (at most 200 characters), with each of ``secrets`` masked."""
    text = (str(err).strip().splitlines() or [""])[0].strip() or type(err).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:200]


def unavailable(err: BaseException, secrets: Sequence[str] = ()) -> GrantStoreUnavailable:
    """``GrantStoreUnavailable("grant store unavailable: <short reason>")`` for a driver error; raise it
    ``from err``."""
    return GrantStoreUnavailable(f"grant store unavailable: {short_reason(err, secrets)}")


def storable(*values: str) -> bool:
    """True when every string can be stored and compared the same way in both databases.

    PostgreSQL text cannot hold NUL, and neither driver can encode lone surrogates (which JSON tokens can
    carry); no stored grant can contain either, so such values can never match one.
    """
    for value in values:
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def sort_oldest_first(grants: Sequence[Grant]) -> list[Grant]:
    """A stable order for grants an UPDATE returned (RETURNING order is unspecified)."""
    return sorted(grants, key=lambda g: (g.requested_at, g.id))
