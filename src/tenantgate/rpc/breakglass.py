"""``tenantgate.v1.BreakGlass``: translate, call the break-glass rules, translate back.

Store and audit I/O run on a worker thread so the event loop keeps answering Checks meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc

from tenantgate.core.breakglass import BreakGlass, GrantRequest
from tenantgate.core.model import Principal
from tenantgate.core.problemlog import ProblemLog
from tenantgate.errors import (
    GrantInvalid,
    TenantGateError,
    TokenError,
    TokenInvalid,
    TokenMissing,
    classify,
)
from tenantgate.rpc import convert
from tenantgate.rpc.decoding import Undecodable
from tenantgate.rpc.metadata import bearer_from_metadata
from tenantgate.rpc.status import abort_with, status_of
from tenantgate.rpc.tls import peer_certificate_sha256
from tenantgate.v1 import breakglass_pb2 as bg
from tenantgate.v1 import breakglass_pb2_grpc as bg_grpc

log = logging.getLogger("tenantgate.rpc.breakglass")
T = TypeVar("T")
# Refusals on our side, by the one error table's status; every other status is the caller's own doing (no token
# or a refused one, no permission, a bad request or grant state).
OUR_SIDE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})


class BreakGlassService(bg_grpc.BreakGlassServicer):
    # Changes answer a request protobuf cannot decode themselves: refused and audited like any refused change.
    HANDLES_UNDECODABLE = frozenset({"RequestGrant", "ApproveGrant", "RevokeGrant"})

    def __init__(self, service: BreakGlass) -> None:
        self._service = service
        self._unavailable = ProblemLog(log, now=time.monotonic, noun="refusals",
                                       summary="break-glass calls refused %d more times on our side since the "
                                               "last line (latest: %s)")

    async def RequestGrant(self, request: bg.RequestGrantRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> bg.Grant:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "request", request)
        req = GrantRequest(target_tenant=request.target_tenant, actions=tuple(request.actions),
                           reason=request.reason, ticket=request.ticket,
                           duration_seconds=int(request.duration_seconds))
        grant = await self._call(context, lambda caller: self._service.request(caller, req), "request")
        return convert.grant_message(grant, self._service.now())

    async def ApproveGrant(self, request: bg.ApproveGrantRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> bg.Grant:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "approve", request)
        grant = await self._call(context, lambda caller: self._service.approve(caller, request.grant_id),
                                 "approve", request.grant_id)
        return convert.grant_message(grant, self._service.now())

    async def RevokeGrant(self, request: bg.RevokeGrantRequest | Undecodable,
                          context: grpc.aio.ServicerContext) -> bg.Grant:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "revoke", request)
        grant = await self._call(context, lambda caller: self._service.revoke(caller, request.grant_id,
                                                                              request.reason),
                                 "revoke", request.grant_id)
        return convert.grant_message(grant, self._service.now())

    async def ListGrants(self, request: bg.ListGrantsRequest,
                         context: grpc.aio.ServicerContext) -> bg.ListGrantsResponse:
        state = convert.GRANT_STATE_FROM_PROTO.get(request.state)
        if state is None and request.state != bg.GRANT_STATE_UNSPECIFIED:
            await abort_with(context, GrantInvalid(f"unknown grant state {request.state}"))
        listed = await self._call(context, lambda caller: self._service.list(caller, request.tenant or None, state))
        now = self._service.now()
        return bg.ListGrantsResponse(grants=[convert.grant_message(g, now) for g in listed.grants],
                                     truncated=listed.truncated)

    async def _refuse_undecodable(self, context: grpc.aio.ServicerContext, step: str,
                                  request: Undecodable) -> NoReturn:
        """A change whose request cannot be decoded: ``grant.refused`` for the verified caller, INVALID_ARGUMENT."""
        def refuse(caller: Principal) -> None:
            self._service.refused(step, caller, "", request.problem)
            raise request.refusal()

        await self._call(context, refuse, step)
        raise AssertionError("unreachable")  # pragma: no cover - _call aborts

    async def _call(self, context: grpc.aio.ServicerContext, operation: Callable[[Principal], T], step: str = "",
                    grant_id: str = "") -> T:
        """Run ``operation`` for the verified caller. A change (``step``: request, approve, revoke) refused
        for its token (none, refused, certificate-bound without the certificate) is audited ``grant.refused``
        like every other refused change; reads (``step`` "") are not."""
        token, problem = bearer_from_metadata(context.invocation_metadata())
        try:
            certificate = peer_certificate_sha256(context)

            def run() -> T:
                try:
                    if problem or not token:
                        raise TokenInvalid(problem) if problem else TokenMissing("no bearer token in the call metadata")
                    caller = self._service.caller(token, certificate)
                except TokenError as err:
                    if step:
                        self._service.refused(step, None, grant_id, f"{classify(err)[0]}: {err}")
                    raise
                return operation(caller)

            answer = await asyncio.to_thread(run)
        except TenantGateError as err:
            self._log_refusal(err)
            await abort_with(context, err)
        except Exception as err:
            log.exception("break-glass call failed")
            await abort_with(context, err)
        self._unavailable.ended("break-glass calls are answered again")
        return answer

    def _log_refusal(self, err: TenantGateError) -> None:
        """A refusal for the caller's own doing (token, permission, request, grant state) is a ``debug`` line:
        any client can make one per call (review finding: 1,000 ``info`` lines per 1,000 calls without a
        token). One on our side (grant store or audit log unavailable) is a ``warning``, then counted once a
        minute while it goes on (``ProblemLog``); metrics count every call by status either way."""
        if status_of(err) not in OUR_SIDE:
            log.debug("break-glass call refused: %s", err)
        else:
            self._unavailable.occurred("break-glass call refused: %s", err, cause=str(err))
