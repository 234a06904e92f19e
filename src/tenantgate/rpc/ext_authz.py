"""``envoy.service.auth.v3.Authorization``: Envoy's ext_authz, on the same decision path as Authorizer.Check.

Translate (``envoy_convert``), call the one ``decide()``, translate back. Same reason codes, same audit
record (``api = "ext_authz"``). Every answer carries an explicit status; OK only for an allow (or in
dry-run mode, where the decision is still made, audited and flagged).
"""

from __future__ import annotations

import logging
import time

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from tenantgate.core.model import DecisionResult, Reason
from tenantgate.core.pdp import DecisionPoint
from tenantgate.ids import decision_id as new_decision_id
from tenantgate.rpc import envoy_convert
from tenantgate.rpc.authorizer import DecisionObserver
from tenantgate.rpc.envoy_convert import ExtAuthzOptions

log = logging.getLogger("tenantgate.rpc")

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name


def _ignore(_api: str, _result: DecisionResult, _seconds: float) -> None:
    return None


class ExtAuthzService(ext_grpc.AuthorizationServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, pdp: DecisionPoint, options: ExtAuthzOptions, observe: DecisionObserver = _ignore) -> None:
        self._pdp = pdp
        self._options = options
        self._observe = observe

    async def Check(self, request: ext.CheckRequest, context: grpc.aio.ServicerContext) -> ext.CheckResponse:
        try:
            translated = envoy_convert.check_input(request, self._options)
            started = time.perf_counter()
            result = self._pdp.decide(translated.check)
            self._observe(envoy_convert.API, result, time.perf_counter() - started)
            return envoy_convert.check_response(result, translated)
        except Exception:  # decide() never raises; this guards the conversions
            # Fails closed even in dry-run mode: without a decision there is nothing to let through.
            decision_id = new_decision_id()
            log.exception("ext_authz: translation failed; denied as %s", decision_id)
            return envoy_convert.denied_response(Reason.INTERNAL_ERROR, decision_id)
