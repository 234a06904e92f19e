"""``envoy.service.auth.v3.Authorization``: Envoy's ext_authz, on the same decision path as Authorizer.Check.

Translate (``envoy_convert``), call the one ``decide()``, translate back. Same reason codes, same audit
record (``api = "ext_authz"``). Every answer carries an explicit status; OK only for an allow (or in
dry-run mode, where the decision is still made, audited and flagged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc

from tenantgate.core.model import CheckInput, DecisionResult, Reason, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.ids import decision_id as new_decision_id
from tenantgate.rpc import convert, envoy_convert
from tenantgate.rpc.authorizer import DecisionObserver
from tenantgate.rpc.decoding import Instrument, Undecodable, add_service
from tenantgate.rpc.envoy_convert import ExtAuthzOptions, Translated
from tenantgate.rpc.tls import PeerIdentities

log = logging.getLogger("tenantgate.rpc")

MAX_WARNED_CALLERS = 64  # distinct callers whose ignored certificates are logged (once each)
# Requests larger than this are translated off the event loop. Envoy sends a few KiB (its headers are capped at
# 60 KiB by default); a client calling the port directly can send max_message_bytes of headers, which took
# about 100 ms of the loop to translate (review finding).
ON_LOOP_MAX_REQUEST_BYTES = 65_536
SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name


def _ignore(_api: str, _result: DecisionResult, _seconds: float) -> None:
    return None


class ExtAuthzService(ext_grpc.AuthorizationServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, pdp: DecisionPoint, options: ExtAuthzOptions, observe: DecisionObserver = _ignore) -> None:
        self._pdp = pdp
        self._options = options
        self._observe = observe
        self._identities = PeerIdentities()
        self._warned: set[tuple[str, ...]] = set()  # callers told about their ignored certificates
        # Large requests queue for one thread: they cannot crowd out the event loop, only each other.
        self._large = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenantgate-large-ext-authz")

    def close(self) -> None:
        """Let a running large request finish, drop queued ones (their callers are gone), stop the thread."""
        self._large.shutdown(wait=True, cancel_futures=True)

    async def Check(self, request: ext.CheckRequest | Undecodable,
                    context: grpc.aio.ServicerContext) -> ext.CheckResponse:
        if isinstance(request, Undecodable):  # registered by add_to_server
            return self._undecodable(request)
        try:
            caller = self._identities.of(context) if request.attributes.source.certificate else ()
            if request.ByteSize() > ON_LOOP_MAX_REQUEST_BYTES:
                return await asyncio.get_running_loop().run_in_executor(self._large, self._answer, request, caller)
            return self._answer(request, caller)
        except Exception:  # decide() never raises; this guards the conversions
            # Fails closed even in dry-run mode: without a decision there is nothing to let through. Still
            # decided and audited (review finding: the denial's decision id had no record).
            log.exception("ext_authz: translation failed; denied internal_error")
            try:
                return self._decided(Translated(convert.failed_translation(envoy_convert.API), ()))
            except Exception:
                decision_id = new_decision_id()
                log.exception("ext_authz: no answer could be made; denied as %s", decision_id)
                return envoy_convert.denied_response(Reason.INTERNAL_ERROR, decision_id)

    def _answer(self, request: ext.CheckRequest, caller: tuple[str, ...]) -> ext.CheckResponse:
        translated = envoy_convert.check_input(request, self._options, lambda: caller)
        if translated.check.client_cert_ignored:
            self._warn_ignored(caller)
        return self._decided(translated)

    def _warn_ignored(self, caller: tuple[str, ...]) -> None:
        """Say once per caller (at most ``MAX_WARNED_CALLERS`` of them) that its forwarded certificates are
        ignored: after an upgrade, bound tokens through an Envoy not yet listed are denied, and the audit
        record alone would not tell the operator why."""
        if caller in self._warned or len(self._warned) >= MAX_WARNED_CALLERS:
            return
        self._warned.add(caller)
        log.warning("ext_authz: a forwarded client certificate was ignored: caller %s is not in "
                    "ext_authz.certificate_forwarders (certificate-bound tokens through it are denied "
                    "token_binding_mismatch); list the Envoys' identities there (needs mTLS)",
                    list(caller) or "without a client certificate")

    def _undecodable(self, request: Undecodable) -> ext.CheckResponse:
        """A request protobuf cannot decode (in Envoy's ``headers`` map a value that is not UTF-8): nothing in
        it can be read, the token included, so it is an audited ``token_invalid`` denial like any unreadable
        credential, not a gRPC error without a decision id or record."""
        check = CheckInput(token="", action="", resource=Resource("", "", ""), api=envoy_convert.API,
                           token_problem=request.problem, dry_run=self._options.dry_run)
        return self._decided(Translated(check, ()))

    def _decided(self, translated: Translated) -> ext.CheckResponse:
        """The one ``decide()``, observed, answered for Envoy."""
        started = time.perf_counter()
        result = self._pdp.decide(translated.check)
        self._observe(envoy_convert.API, result, time.perf_counter() - started)
        return envoy_convert.check_response(result, translated)


def add_to_server(servicer: Any, server: grpc.aio.Server, instrument: Instrument | None = None) -> None:
    """Register Envoy's ``Authorization`` service as xds-protos' ``add_AuthorizationServicer_to_server`` does,
    except that ``Check`` also answers a request protobuf cannot decode (see ``rpc.decoding``); ``instrument``
    as there."""
    add_service(server, SERVICE_NAME, servicer, handles_undecodable={"Check"}, instrument=instrument)
