"""Binding a subject stated in the request to the verified token, and principal roles from entity data.

Pure functions over a token-built ``Principal`` and the token tenant's ``EntityView``; each returns a
principal or a ``Denial``. See ``SubjectBinding`` for the two bindings.
"""

from __future__ import annotations

from dataclasses import replace

from tenantgate.core.entities import EntityView
from tenantgate.core.model import Denial, Principal, Reason, StatedSubject, SubjectBinding

USER = "User"


def bind_stated_subject(principal: Principal, stated: StatedSubject, token_subject: str, pep_role: str,
                        own_tenant: EntityView) -> Principal | Denial:
    """The principal a decision is about when the request states a subject.

    ``TOKEN``: the stated subject must be a user whose id is the token's ``sub`` (``subject_mismatch``
    otherwise); the principal stays the token's. ``PEP``: the token must be a person-less workload token
    (no ``act``) carrying ``pep_role`` (``pep_role_missing``); the stated user must exist in ``own_tenant``
    (``subject_unknown``), and becomes the principal.

    INVARIANT: a stated principal's tenant is the PEP token's tenant, and ``own_tenant`` must be exactly that
    tenant's view: a PEP can never speak for a user of another tenant. Its roles come from that entity data,
    never from the request; its intents stay the token's (the token's restrictions still apply).
    """
    match stated.binding:
        case SubjectBinding.TOKEN:
            if stated.type != USER or stated.id != token_subject:
                return Denial(Reason.SUBJECT_MISMATCH, "the stated subject is not the subject of the caller's token")
            return principal
        case SubjectBinding.PEP:
            if not pep_role or principal.is_agent or pep_role not in principal.roles:
                return Denial(Reason.PEP_ROLE_MISSING, "only a token with the configured PEP role may state subjects")
            if stated.type != USER:
                return Denial(Reason.INVALID_REQUEST,
                              "a trusted enforcement point may state subjects of type user only")
            record = own_tenant.record((USER, stated.id))
            if record is None:
                return Denial(Reason.SUBJECT_UNKNOWN,
                              "the stated subject is not a user in the entity data of the caller's tenant")
            return Principal(entity_type=USER, entity_id=stated.id, subject=stated.id, tenant=principal.tenant,
                             roles=record.roles, intents=principal.intents, issuer=principal.issuer,
                             token_id=principal.token_id, stated_by=principal.subject)


def roles_from_entity_data(principal: Principal, own_tenant: EntityView) -> Principal:
    """A token principal whose token has no roles claim takes the ``roles`` of its record in its own
    tenant's entity data.

    A token with a roles claim keeps exactly its roles, even none (``roles: []``): the identity provider
    said so, and entity data must not widen it. Only for decisions about the principal's own tenant (the
    caller makes sure): break-glass rules read roles from the token alone.
    """
    if principal.roles_claimed or principal.roles or principal.stated_by:
        return principal
    record = own_tenant.record((principal.entity_type, principal.entity_id))
    if record is None or not record.roles:
        return principal
    return replace(principal, roles=record.roles)
