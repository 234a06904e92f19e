"""One exception tree for TenantGate, and the one table that maps errors to deny reasons and gRPC status.

Deny is a value, failure is an exception: an expected denial (cross-tenant, no permit) is a
``DecisionResult``; an exception means something could not be checked, and at the edge it always becomes
a DENY with the reason from ``ERROR_TABLE`` (never an allow). Third-party errors are wrapped at the
boundary with ``raise ... from err``.

This module imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence


class TenantGateError(Exception):
    """Root of every error TenantGate raises on purpose."""


class ConfigError(TenantGateError):
    """Settings are missing, ill-typed or unsafe; the server refuses to start."""


class TokenError(TenantGateError):
    """The caller's token could not be accepted. Messages never contain the token."""


class TokenMissing(TokenError):
    """No token was presented."""


class TokenInvalid(TokenError):
    """Malformed, badly signed, wrongly typed or otherwise unacceptable token."""


class TokenExpired(TokenError):
    """The token's ``exp`` has passed (beyond the configured leeway)."""


class TokenBindingMismatch(TokenError):
    """A certificate-bound token (RFC 8705 ``cnf.x5t#S256``) came without its certificate, or with another."""


class IssuerUntrusted(TokenError):
    """The token's ``iss`` is not a configured issuer (exact match)."""


class AudienceMismatch(TokenError):
    """The token's ``aud`` does not name an audience the issuer is configured for."""


class KeySourceUnavailable(TokenInvalid):
    """The issuer's key set could not be read or fetched; treated as an invalid token (fail closed)."""


class PolicyDiagnostic:
    """One problem in a policy or schema file, located for humans: ``file:line:column: [policy id] message``."""

    __slots__ = ("column", "line", "message", "path", "policy_id")

    def __init__(self, path: str, line: int, message: str, column: int = 0, policy_id: str = "") -> None:
        self.path = path
        self.line = line
        self.column = column
        self.policy_id = policy_id
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" + (f":{self.column}" if self.column else "")
        ident = f" [{self.policy_id}]" if self.policy_id else ""
        return f"{where}:{ident} {self.message}"

    def __repr__(self) -> str:
        return f"PolicyDiagnostic({str(self)!r})"


class PolicyError(TenantGateError):
    """The policy set or schema is invalid; it never takes effect. ``diagnostics`` locate each problem."""

    def __init__(self, message: str, diagnostics: Sequence[PolicyDiagnostic] = ()) -> None:
        self.diagnostics = tuple(diagnostics)
        detail = "".join(f"\n  {d}" for d in self.diagnostics)
        super().__init__(message + detail)


class EvaluationError(TenantGateError):
    """The policy engine could not reach a trustworthy decision (engine error, NoDecision)."""


class InvalidRequest(TenantGateError):
    """The request is malformed (missing field, bad tenant id, reserved or ill-typed attribute)."""


class GrantError(TenantGateError):
    """A break-glass grant operation was refused."""


class GrantPermissionDenied(GrantError):
    """Wrong tenant or role for this grant operation, or self-approval."""


class GrantInvalid(GrantError):
    """A grant request is malformed: missing reason or ticket, duration over the maximum, bad tenant id."""


class GrantNotFound(GrantError):
    """No grant with that id."""


class GrantConflict(GrantError):
    """The grant is not in a state that allows this operation (e.g. approving a non-pending grant)."""


class GrantStoreUnavailable(TenantGateError):
    """The grant store could not be reached; cross-tenant access is denied, same-tenant is unaffected."""


class AuditUnavailable(TenantGateError):
    """The audit record could not be written; the decision must not be an allow."""


# The one table: error class -> (deny reason code, gRPC status name). Looked up along the MRO, so a
# subclass inherits its parent's row unless it has its own. Anything not in the table (including
# non-TenantGate exceptions) is ("internal_error", "INTERNAL"): unexpected failures fail closed.
ERROR_TABLE: dict[type[BaseException], tuple[str, str]] = {
    TokenMissing: ("token_missing", "UNAUTHENTICATED"),
    TokenInvalid: ("token_invalid", "UNAUTHENTICATED"),
    TokenExpired: ("token_expired", "UNAUTHENTICATED"),
    TokenBindingMismatch: ("token_binding_mismatch", "UNAUTHENTICATED"),
    IssuerUntrusted: ("issuer_untrusted", "UNAUTHENTICATED"),
    AudienceMismatch: ("audience_mismatch", "UNAUTHENTICATED"),
    TokenError: ("token_invalid", "UNAUTHENTICATED"),
    InvalidRequest: ("invalid_request", "INVALID_ARGUMENT"),
    AuditUnavailable: ("audit_unavailable", "UNAVAILABLE"),
    # Grant operations are not decisions: their reason column is never shown, only the status.
    GrantPermissionDenied: ("invalid_request", "PERMISSION_DENIED"),
    GrantInvalid: ("invalid_request", "INVALID_ARGUMENT"),
    GrantNotFound: ("invalid_request", "NOT_FOUND"),
    GrantConflict: ("invalid_request", "FAILED_PRECONDITION"),
    GrantStoreUnavailable: ("grant_store_unavailable", "UNAVAILABLE"),
    PolicyError: ("internal_error", "FAILED_PRECONDITION"),
    EvaluationError: ("internal_error", "INTERNAL"),
    ConfigError: ("internal_error", "FAILED_PRECONDITION"),
}

_FALLBACK = ("internal_error", "INTERNAL")


def classify(error: BaseException) -> tuple[str, str]:
    """Return ``(reason_code, grpc_status_name)`` for any exception; unknown ones are internal errors."""
    for cls in type(error).__mro__:
        row = ERROR_TABLE.get(cls)
        if row is not None:
            return row
    return _FALLBACK
