"""Registering unary services so that a request protobuf cannot decode still reaches our code.

protobuf refuses a string field that is not UTF-8 (and any corrupt wire data) in the request deserializer,
before a servicer runs; grpc then answers a bare UNKNOWN ("Exception deserializing request!") and logs a
traceback: no decision id, no audit record, no clear reason. Registered through ``add_service``, a method
receives an ``Undecodable`` instead. A method named in ``handles_undecodable`` answers it itself (Check: an
audited denial; BreakGlass changes: an audited ``grant.refused``); every other method is answered
INVALID_ARGUMENT with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from tenantgate.errors import InvalidRequest
from tenantgate.rpc.status import abort_with

# (full service name, servicer) -> the servicer to register, e.g. with its methods measured.
Instrument = Callable[[str, Any], Any]


class Undecodable:
    """A request protobuf could not decode; ``problem`` says what (it quotes no request bytes)."""

    __slots__ = ("problem",)

    def __init__(self, message_type: str, error: DecodeError) -> None:
        detail = "a string field that is not UTF-8" if "UTF-8" in str(error) else "corrupt wire data"
        self.problem = f"the {message_type} cannot be decoded ({detail})"

    def refusal(self) -> InvalidRequest:
        return InvalidRequest(self.problem)


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.name

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as err:
            return Undecodable(name, err)

    return decode


def _refusing(behaviour: Callable[[Any, grpc.aio.ServicerContext], Any]) -> Callable[..., Any]:
    async def refuse_undecodable(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await abort_with(context, request.refusal())
        return await behaviour(request, context)

    return refuse_undecodable


def add_service(server: grpc.aio.Server, service: str, servicer: Any, handles_undecodable: Collection[str] = (),
                instrument: Instrument | None = None) -> None:
    """Register ``servicer``'s unary-unary methods of ``service`` (a full name whose proto is loaded), as the
    generated ``add_*Servicer_to_server`` would, except for undecodable requests (see the module).
    ``instrument(service, servicer)`` (metrics) wraps the methods as registered, refusals included, so a
    refused undecodable call is counted like any other call."""
    descriptor = descriptor_pool.Default().FindServiceByName(service)
    behaviours: dict[str, Any] = {}
    for method in descriptor.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{service}/{method.name} streams; add_service registers unary methods only")
        behaviour = getattr(servicer, method.name)
        behaviours[method.name] = behaviour if method.name in handles_undecodable else _refusing(behaviour)
    registered = SimpleNamespace(**behaviours)
    measured = registered if instrument is None else instrument(service, registered)
    handlers = {method.name: grpc.unary_unary_rpc_method_handler(
        getattr(measured, method.name), request_deserializer=_tolerant(GetMessageClass(method.input_type)),
        response_serializer=GetMessageClass(method.output_type).SerializeToString) for method in descriptor.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
