"""Shape checks for an incoming request and conversion of its free-form data into Cedar values.

Everything here is untrusted input from an enforcement point. Problems are returned as messages
(a deny with reason ``invalid_request``), never raised past ``decide()``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenantgate.core.model import CheckInput

# Tenant ids: a documented, conservative grammar. Unicode look-alikes, whitespace, NUL and other control
# characters can never form a tenant id, so two tenants cannot differ only by an invisible character.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

MAX_ACTION = 128
MAX_TYPE = 128
MAX_ID = 1024
MAX_INTENT = 128
MAX_DEPTH = 16
MAX_NODES = 5_000
MAX_STRING = 65_536
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# The largest whole number a float (a protobuf Struct number, e.g. from gRPC or ext_authz) holds exactly and
# unambiguously: the float 2**53 is also what 2**53 + 1 rounds to, so beyond this the value sent is unknown.
FLOAT_EXACT_MAX = 2**53 - 1

# Context keys TenantGate itself sets; a request may not provide them.
RESERVED_CONTEXT_KEYS = frozenset({"intent", "breakGlass"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*")


class RequestProblem(Exception):
    """Internal signal carrying the message of an ``invalid_request`` denial."""


@dataclass(frozen=True, slots=True)
class MemberNames:
    """How an API names the request's members, so a message points at what its caller actually sent.
    The defaults are the gRPC ``CheckRequest`` fields (also used by ext_authz, the CLI and policy tests)."""

    action: str = "action"
    resource_type: str = "resource.type"
    resource_id: str = "resource.id"
    resource_tenant: str = "resource.tenant"
    resource_attributes: str = "resource.attributes"
    context: str = "context"
    intent: str = "intent"


CHECK_NAMES = MemberNames()
# AuthZEN 1.0 members (``CheckInput.api == "authzen"``): attributes are ``resource.properties``, the owning
# tenant ``resource.properties.tenant``, the intent ``context.intent`` (see http/convert.py).
AUTHZEN_NAMES = MemberNames(action="action.name", resource_tenant="resource.properties.tenant",
                            resource_attributes="resource.properties", intent="context.intent")
_NAMES_BY_API = {"authzen": AUTHZEN_NAMES}


def member_names(api: str) -> MemberNames:
    """The member names of ``api`` (``CheckInput.api``); gRPC's for any API without its own."""
    return _NAMES_BY_API.get(api, CHECK_NAMES)


def is_tenant_id(value: object) -> bool:
    """True for a string matching the tenant id grammar ``[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}``."""
    return isinstance(value, str) and TENANT_ID.fullmatch(value) is not None


def check_shape(check: CheckInput) -> None:
    """Raise RequestProblem when a required field is missing, too long or ill-formed."""
    names = member_names(check.api)
    if not check.action:
        raise RequestProblem(f"{names.action} is required")
    if len(check.action) > MAX_ACTION or not _printable(check.action):
        raise RequestProblem(f"{names.action} must be 1-{MAX_ACTION} printable characters")
    res = check.resource
    if not res.type:
        raise RequestProblem(f"{names.resource_type} is required")
    if len(res.type) > MAX_TYPE or not _NAME.fullmatch(res.type):
        raise RequestProblem(f"{names.resource_type} must be a Cedar entity type name such as Invoice or "
                             "App::Invoice")
    if not res.id:
        raise RequestProblem(f"{names.resource_id} is required")
    if len(res.id) > MAX_ID or not _printable(res.id):
        raise RequestProblem(f"{names.resource_id} must be 1-{MAX_ID} printable characters")
    if not res.tenant:
        raise RequestProblem(f"{names.resource_tenant} (the owning tenant) is required")
    if not is_tenant_id(res.tenant):
        raise RequestProblem(f"{names.resource_tenant} is not a valid tenant id ([A-Za-z0-9][A-Za-z0-9._:@-]{{0,127}})")
    if len(check.intent) > MAX_INTENT or (check.intent and not _printable(check.intent)):
        raise RequestProblem(f"{names.intent} must be at most {MAX_INTENT} printable characters")


def resource_attributes(check: CheckInput) -> dict[str, Any]:
    """The resource entity's Cedar attributes: the request's attributes plus the owning tenant.

    INVARIANT: the ``tenant`` attribute is always the request's ``resource.tenant``. An attributes map that
    states a different tenant is refused rather than silently overridden, so a confused or hostile
    enforcement point is visible in the audit log.
    """
    names = member_names(check.api)
    attrs = to_cedar_record(check.resource.attributes, names.resource_attributes)
    stated = attrs.get("tenant")
    if stated is not None and stated != check.resource.tenant:
        raise RequestProblem(f"{names.resource_attributes}.tenant contradicts {names.resource_tenant}")
    attrs["tenant"] = check.resource.tenant
    return attrs


def request_context(check: CheckInput) -> dict[str, Any]:
    """The Cedar context: the request's context plus ``intent``. Reserved keys may not come from the request."""
    names = member_names(check.api)
    ctx = to_cedar_record(check.context, names.context)
    clash = RESERVED_CONTEXT_KEYS & ctx.keys()
    if clash:
        raise RequestProblem(f"{names.context} key(s) {', '.join(sorted(clash))} are reserved for TenantGate")
    ctx["intent"] = check.intent
    return ctx


def to_cedar_record(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Convert JSON-like data (e.g. a protobuf Struct) into a Cedar record.

    Refuses what Cedar cannot represent or would interpret specially: null, non-integral or out-of-range
    numbers (Cedar has only 64-bit integers; a float, as protobuf Struct numbers are, only up to ±(2^53 - 1),
    beyond which it may already be rounded), keys starting with ``__`` (Cedar's ``__entity``/``__extn``
    escapes, which would let a request forge entity references), over-deep or over-large values.
    """
    if isinstance(data, dict) and not data:
        return {}  # the common case: nothing to convert
    budget = [MAX_NODES]
    value = _convert(data, where, 0, budget)
    assert isinstance(value, dict)
    return value


def _convert(value: Any, where: str, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise RequestProblem(f"{where}: too many values (limit {MAX_NODES})")
    if depth > MAX_DEPTH:
        raise RequestProblem(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not I64_MIN <= value <= I64_MAX:
            raise RequestProblem(f"{where}: integer out of 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RequestProblem(f"{where}: only whole numbers are supported (Cedar has no floats)")
        if not -FLOAT_EXACT_MAX <= value <= FLOAT_EXACT_MAX:
            # INVARIANT: one answer per question whatever the API: a JSON integer is exact up to 64 bits, a
            # floating-point number past 2^53 may already have been rounded (9007199254740993 arrives as
            # 9007199254740992.0), so a policy comparing it could decide differently. Refuse, never guess.
            raise RequestProblem(f"{where}: a floating-point number is exact only up "
                                 f"to {FLOAT_EXACT_MAX} (2^53 - 1) in magnitude; this one may have been rounded")
        return int(value)
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise RequestProblem(f"{where}: string longer than {MAX_STRING} characters")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key or key.startswith("__") or len(key) > MAX_TYPE:
                raise RequestProblem(f"{where}: invalid attribute name {str(key)[:40]!r}")
            out[key] = _convert(item, f"{where}.{key}", depth + 1, budget)
        return out
    if isinstance(value, (list, tuple)):
        return [_convert(item, f"{where}[]", depth + 1, budget) for item in value]
    if value is None:
        raise RequestProblem(f"{where}: null is not a Cedar value")
    raise RequestProblem(f"{where}: unsupported value type {type(value).__name__}")


def _printable(text: str) -> bool:
    return text.isprintable()
