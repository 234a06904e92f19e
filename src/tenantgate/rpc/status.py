"""Applies the one error table (``tenantgate.errors.ERROR_TABLE``) to gRPC calls."""

from __future__ import annotations

from typing import NoReturn

import grpc

from tenantgate.errors import TenantGateError, classify


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for an error, from the one table; unknown errors are INTERNAL."""
    _reason, name = classify(error)
    return grpc.StatusCode[name]


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """Abort the call with the table's status and the error's message (our messages carry no secrets);
    an unexpected exception gets a generic message, since its text may hold anything."""
    message = (str(error) or type(error).__name__) if isinstance(error, TenantGateError) else "internal error"
    await context.abort(status_of(error), message)
    raise AssertionError("unreachable")  # pragma: no cover - abort raises
