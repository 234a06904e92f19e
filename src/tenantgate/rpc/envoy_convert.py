"""Pure conversions for Envoy ext_authz (``envoy.service.auth.v3``): CheckRequest -> CheckInput, and a
DecisionResult -> CheckResponse. No decisions are made here: anything that cannot be translated becomes a
``token_problem`` or ``request_problem`` that ``decide()`` turns into an audited denial.

What is read from Envoy's request, and nothing else:

- the bearer token from the one ``authorization`` header (two of them, a scheme other than ``Bearer``,
  bytes that are not UTF-8 or a value over ``MAX_HEADER_VALUE`` are a token problem);
- the intent from the configured intent header (at most once);
- method and path, mapped to action and resource by the route table (the caller's tenant is never read
  from a header or the path: it comes from the verified token in ``decide()``);
- the query's parameter names, only to refuse those a backend could act on instead of what was decided
  (``_method``, ``access_token``, the name of a path variable of the matched route);
- every header's name: one that is not an HTTP token, or another spelling of the intent header or of a
  method/path override header, is refused; ``x-tenantgate-*`` names are listed for Envoy to strip;
- the client certificate Envoy forwards (``include_peer_certificate``) for certificate-bound tokens.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from tenantgate.config_env import shown
from tenantgate.core.model import CheckInput, DecisionResult, Reason, Resource
from tenantgate.rpc.routes import HTTP_TOKEN, PathRefused, RouteMatch, RouteTable
from tenantgate.rpc.tls import certificate_sha256

API = "ext_authz"
DECISION_ID_HEADER = "x-tenantgate-decision-id"
TENANT_HEADER = "x-tenantgate-tenant"
RESERVED_PREFIX = "x-tenantgate-"
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# Headers some backends (legacy Symfony and Zend, IIS URL Rewrite) serve instead of the request's own path.
PATH_OVERRIDE_HEADERS = ("x-original-url", "x-rewrite-url")
_OVERRIDE_HEADERS = frozenset(METHOD_OVERRIDE_HEADERS + PATH_OVERRIDE_HEADERS)
METHOD_PARAMETER = "_method"
TOKEN_PARAMETER = "access_token"  # RFC 6750 §2.3: a bearer token in the query
_PHP_NAME = str.maketrans(" .", "__")  # PHP turns these into '_' in request variable names
MAX_HEADER_VALUE = 65_536
MAX_NAME_SHOWN = 64  # characters of a header name quoted in a message (it goes into the audit record)
# A header name as HTTP allows it (an HTTP token), or an HTTP/2 pseudo-header (:path); and names as sent, one
# per line (one match per request, not one per header: about 1 us instead of 3 for 16 headers).
_TOKEN = rf":?{HTTP_TOKEN}"
_HEADER_NAME = re.compile(_TOKEN)
_HEADER_NAMES = re.compile(rf"{_TOKEN}(?:\n{_TOKEN})*")
MAX_CERTIFICATE = 65_536
# Reasons about the token itself: HTTP 401 / UNAUTHENTICATED. Every other denial is 403 / PERMISSION_DENIED.
UNAUTHENTICATED_REASONS = frozenset({Reason.TOKEN_MISSING, Reason.TOKEN_INVALID, Reason.TOKEN_EXPIRED,
                                     Reason.ISSUER_UNTRUSTED, Reason.AUDIENCE_MISMATCH,
                                     Reason.TENANT_CLAIM_MISSING, Reason.TOKEN_BINDING_MISMATCH})
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


@dataclass(frozen=True, slots=True)
class ExtAuthzOptions:
    """How HTTP requests map to decisions: the route table, the intent header and dry-run mode."""

    routes: RouteTable
    intent_header: str = "x-tenantgate-intent"
    dry_run: bool = False
    # Identities (client certificate SANs) of the callers whose forwarded client certificates are believed.
    certificate_forwarders: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Translated:
    """A CheckRequest as the core sees it, plus the incoming ``x-tenantgate-*`` header names to strip."""

    check: CheckInput
    reserved_headers: tuple[str, ...]


def check_input(request: ext.CheckRequest, options: ExtAuthzOptions,
                caller: Callable[[], tuple[str, ...]] = tuple) -> Translated:
    """Translate Envoy's CheckRequest. Never raises for hostile input: problems are carried in the result.

    ``caller`` gives the identities of the client certificate the call came with (asked only when the request
    forwards a certificate): a forwarded certificate counts only from a caller in
    ``options.certificate_forwarders``. Anyone else who can reach the port could paste in a victim's
    certificate, which is public, and so use a stolen certificate-bound token."""
    http = request.attributes.request.http
    headers, header_problem = request_headers(http)
    token, token_problem = _bearer(headers.get("authorization", []))
    request_problem = header_problem
    intents = headers.get(options.intent_header, [])
    # Repeated headers arrive joined with ',' in Envoy's `headers` map; an intent never contains one.
    repeated = len(intents) > 1 or any("," in value for value in intents)
    intent = intents[0] if intents and not repeated else ""
    if repeated:
        request_problem = request_problem or f"more than one {options.intent_header} header"
    # CGI-style servers fold `_` into `-`: another spelling of the intent header (x_tenantgate_intent) would
    # reach the backend as the intent while the decision used this one (or none). Refused, not guessed.
    folded = _fold(options.intent_header)
    variants = sorted(name for name in headers if name != options.intent_header and _fold(name) == folded)
    if variants:
        request_problem = request_problem or f"header {variants[0]!r} is another spelling of {options.intent_header}"
    forwarded = request.attributes.source.certificate
    cert_sha256 = cert_ignored = ""
    if forwarded and not options.certificate_forwarders.intersection(caller()):
        cert_ignored = "it was forwarded by a caller not listed in ext_authz.certificate_forwarders"
    else:
        cert_sha256, cert_problem = client_certificate_sha256(forwarded)
        request_problem = request_problem or cert_problem
    action = resource_type = resource_id = resource_tenant = ""
    matched = options.routes.match(http.method, http.path)
    if isinstance(matched, PathRefused):
        request_problem = request_problem or matched.message
    elif matched is None:
        request_problem = request_problem or "no [[ext_authz.routes]] entry matches this method and path"
    else:
        action, resource_type = matched.action, matched.resource_type
        resource_id, resource_tenant = matched.resource_id, matched.resource_tenant
    check = CheckInput(
        token=token,
        action=action,
        resource=Resource(type=resource_type, id=resource_id, tenant=resource_tenant),
        intent=intent,
        api=API,
        token_problem=token_problem,
        request_problem=request_problem,
        client_cert_sha256=cert_sha256,
        client_cert_ignored=cert_ignored,
        dry_run=options.dry_run,
    )
    # x_tenantgate_tenant is folded onto X-TenantGate-Tenant by CGI-style servers: strip both spellings.
    reserved = tuple(sorted(name for name in headers
                            if _fold(name).startswith(RESERVED_PREFIX) and name != options.intent_header))
    # The backend might act on another method or path than the one decided: refuse rather than guess. In any
    # spelling CGI-style servers fold onto the header (review finding: x_http_method_override was let through).
    overrides = sorted(name for name in headers if _fold(name) in _OVERRIDE_HEADERS)
    if overrides and not check.request_problem:
        kind = "method" if _fold(overrides[0]) in METHOD_OVERRIDE_HEADERS else "path"
        check = dataclasses.replace(check, request_problem=f"{kind} override header {overrides[0]} is not allowed")
    named = _query_names(http.path) if not check.request_problem and "?" in http.path else frozenset()
    if METHOD_PARAMETER in named:
        # Review finding: POST .../inv-1?_method=DELETE was decided as the POST route's action, and Laravel,
        # Symfony (httpMethodParameterOverride) and Rails run a DELETE.
        check = dataclasses.replace(check, request_problem=f"method override query parameter {METHOD_PARAMETER} "
                                                           "is not allowed")
    elif TOKEN_PARAMETER in named:
        # Review finding: ?access_token=<another token> beside the header's was ignored; a backend that prefers
        # the query's token (RFC 6750 section 2.3) would act for a caller other than the one decided.
        check = dataclasses.replace(check, request_problem=f"a token in the query ({TOKEN_PARAMETER}) is not "
                                                           "allowed: send it in the Authorization header only")
    elif named and isinstance(matched, RouteMatch) and (
            restated := sorted(named & {name.lower() for name in matched.variables})):
        # Review finding: /tenants/acme/invoices/inv-1?tenant=globex was decided for acme, and Laravel's
        # $request->tenant reads query input ahead of the route parameter: the backend served globex's invoice.
        # INVARIANT: the owning tenant and id a backend acts on are the ones decided, from the path only.
        check = dataclasses.replace(check, request_problem=f"query parameter {restated[0]} restates the path "
                                                           f"variable of that name (a backend may read it instead)")
    return Translated(check, reserved)


def _query_names(path: str) -> frozenset[str]:
    """The query string's parameter names as servers read them: percent-decoded, any case, and as PHP reads
    names: cut at a NUL, leading spaces dropped, then ' ' and '.' made '_' (``.method``, ``_method[]``; review
    finding: `+_method` and `_method%00x` were let through)."""
    query = path.partition("?")[2].partition("#")[0]
    return frozenset(urllib.parse.unquote_plus(part.partition("=")[0]).partition("\0")[0].lstrip(" ").lower()
                     .translate(_PHP_NAME).partition("[")[0] for part in query.replace(";", "&").split("&"))


def _shown(name: str) -> str:
    """A header name for a message: quoted, and cut short (a name may be nearly ``max_message_bytes`` long, and
    the message is kept in the audit record; review finding: one request wrote a 1 MB record)."""
    return shown(name, limit=MAX_NAME_SHOWN)


def _fold(name: str) -> str:
    """A header name as servers that treat ``_`` like ``-`` read it."""
    return name.replace("_", "-")


def request_headers(http: Any) -> tuple[dict[str, list[str]], str]:
    """Lowercase header name -> values in order, and a problem ("" if none).

    Envoy sends ``headers`` (a map; repeated headers joined with ``,``) or, newer and with
    ``encode_raw_headers``, ``header_map`` (one entry per header line, values possibly as raw bytes).
    ``header_map`` wins when it has entries. Non-UTF-8 bytes and NUL/CR/LF in a value are a problem, and so is
    a name that is not an HTTP token (NUL, space, non-ASCII): it was ignored, so ``authorization `` or
    ``authorization\\0`` beside the real header reached a backend that trims or cuts names as a second token.
    """
    out: dict[str, list[str]] = {}
    problem = ""
    entries = list(http.header_map.headers)
    names: list[str] = []  # as sent
    if entries:
        for entry in entries:
            key: str = entry.key
            names.append(key)
            value: str = entry.value
            if entry.raw_value:
                try:
                    value = entry.raw_value.decode("utf-8")
                except UnicodeDecodeError:
                    problem = problem or f"header {_shown(key.lower())} is not UTF-8"
                    # Kept (replaced) so the step that reads it refuses it too (authorization: token_invalid).
                    value = entry.raw_value.decode("utf-8", errors="replace")
            out.setdefault(key.lower(), []).append(value)
    else:
        for key, value in http.headers.items():
            names.append(key)
            out.setdefault(key.lower(), []).append(value)
    # Names as sent, not lowercased (review finding: str.lower() makes the Kelvin sign U+212A an ASCII 'k', so
    # "x-api-\u212aey" passed as x-api-key). One name per line: the count catches a line break inside a name.
    joined = "\n".join(names)
    if names and not (_HEADER_NAMES.fullmatch(joined) and joined.count("\n") == len(names) - 1):
        bad = next((name for name in names if not _HEADER_NAME.fullmatch(name)), "")
        problem = problem or f"header name {_shown(bad)} is not an HTTP token"
    for name, values in out.items():
        if any(ch in value for value in values for ch in "\x00\r\n"):
            problem = problem or f"header {_shown(name)} holds NUL, CR or LF"
    return out, problem


def _bearer(values: list[str]) -> tuple[str, str]:
    """``(token, token_problem)`` from the authorization header values; no header is ``("", "")``."""
    if not values:
        return "", ""
    # Envoy's `headers` map joins repeated headers with ','; a JWT never contains one.
    if len(values) > 1 or "," in values[0]:
        return "", "more than one authorization header"
    value = values[0]
    if len(value) > MAX_HEADER_VALUE:
        return "", "authorization header too large"
    if any(ord(ch) > 0x7E or ord(ch) < 0x20 for ch in value):
        return "", "authorization header must be printable ASCII"
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "", "authorization header must be 'Bearer <token>'"
    return token.strip(), ""


def client_certificate_sha256(encoded: str) -> tuple[str, str]:
    """``(hex SHA-256 of the DER certificate, problem)`` from Envoy's URL-encoded PEM; ("", "") if absent."""
    if not encoded:
        return "", ""
    if len(encoded) > MAX_CERTIFICATE:
        return "", "client certificate too large"
    try:
        pem = urllib.parse.unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return "", "the forwarded client certificate is not UTF-8"
    # Any PEM block counts: cryptography also reads "X509 CERTIFICATE" blocks, and uses the first one it finds.
    if pem.count("-----BEGIN ") != 1:
        return "", "the forwarded client certificate must be exactly one PEM certificate"
    try:
        return certificate_sha256(pem.encode("ascii")), ""
    except (ValueError, UnicodeEncodeError):
        return "", "the forwarded client certificate cannot be parsed"


def check_response(result: DecisionResult, translated: Translated) -> ext.CheckResponse:
    """The answer for Envoy. Status is always set explicitly; OK only for an allow (or in dry-run mode, but
    never for a decision whose audit record was not written: no request passes unrecorded)."""
    allow = result.allowed or (translated.check.dry_run and result.reason is not Reason.AUDIT_UNAVAILABLE)
    metadata = struct_pb2.Struct()
    metadata.update({"decision_id": result.decision_id, "decision": result.decision.value,
                     "reason": result.reason.value, "dry_run": translated.check.dry_run})
    if allow:
        set_headers = [(DECISION_ID_HEADER, result.decision_id)]
        tenant = result.audit.principal_tenant
        if tenant:
            set_headers.append((TENANT_HEADER, tenant))
        # Headers we set overwrite every incoming copy; other x-tenantgate-* headers a client sent are removed
        # (Envoy applies removals after sets, so a header we set must not be in the removal list).
        ours = {name for name, _ in set_headers}
        remove = sorted({*translated.reserved_headers, DECISION_ID_HEADER, TENANT_HEADER} - ours)
        return ext.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=ext.OkHttpResponse(headers=[_header(k, v) for k, v in set_headers],
                                           headers_to_remove=remove),
            dynamic_metadata=metadata,
        )
    return denied_response(result.reason, result.decision_id, metadata)


def denied_response(reason: Reason, decision_id: str, metadata: struct_pb2.Struct | None = None) -> ext.CheckResponse:
    """An explicit denial: 401 + UNAUTHENTICATED for token problems, 403 + PERMISSION_DENIED otherwise."""
    unauthenticated = reason in UNAUTHENTICATED_REASONS
    headers = [_header("content-type", "application/json"), _header(DECISION_ID_HEADER, decision_id)]
    if unauthenticated:
        headers.append(_header("www-authenticate", 'Bearer error="invalid_token"'))
    body = json.dumps({"reason": reason.value, "decision_id": decision_id}, separators=(",", ":"))
    return ext.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED if unauthenticated else code_pb2.PERMISSION_DENIED,
                                 message=reason.value),
        denied_response=ext.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized if unauthenticated
                                              else http_status_pb2.Forbidden),
            headers=headers,
            body=body,
        ),
        dynamic_metadata=metadata,
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)

