"""Applies the one error table (``tenantgate.errors.ERROR_TABLE``) to gRPC calls, without answering a call
that has ended already."""

from __future__ import annotations

import asyncio
from typing import NoReturn

import grpc

from tenantgate.errors import TenantGateError, classify


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status for an error, from the one table; unknown errors are INTERNAL."""
    _reason, name = classify(error)
    return grpc.StatusCode[name]


def stop_if_late(context: grpc.aio.ServicerContext) -> None:
    """Raise ``asyncio.CancelledError`` once the call's deadline has passed (or it has its status already):
    for a handler to stop working for a caller who no longer waits, and to end without answering. It is what
    grpc.aio raises in a handler whose call the client ended, and logs at ``debug`` only; aborting instead
    can meet a call the gRPC core has ended meanwhile, which grpc.aio logs as an error with a traceback, per
    call. The caller's own deadline (never later than this one) tells it DEADLINE_EXCEEDED."""
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= 0) or _gone(context):
        raise asyncio.CancelledError


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    """Abort the call with the table's status and the error's message (our messages carry no secrets);
    an unexpected exception gets a generic message, since its text may hold anything.

    A call that has its status already is not aborted, nor one the gRPC core ends while the status is sent
    (a deadline that passes, a client that goes): both raise ``asyncio.CancelledError`` (see
    ``stop_if_late``), so that nothing is logged for a caller who left. Review finding: grpc.aio logged
    ``ExecuteBatchError raised in core by servicer method`` with a traceback for such calls."""
    if _gone(context):
        raise asyncio.CancelledError
    message = (str(error) or type(error).__name__) if isinstance(error, TenantGateError) else "internal error"
    try:
        await context.abort(status_of(error), message)
    except grpc.aio.AbortError:
        raise
    except grpc.aio.InternalError as err:  # ExecuteBatchError: the core had ended the call
        raise asyncio.CancelledError from err
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


def _gone(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call has its final status already (answered, aborted, or set CANCELLED)."""
    return bool(context.done() or context.cancelled())
