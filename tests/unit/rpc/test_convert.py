"""Check/BatchCheck request conversion: the cost of converting a request's Structs is bounded."""

from google.protobuf import struct_pb2

from tenantgate.core.request import MAX_NODES
from tenantgate.rpc import convert
from tenantgate.v1 import authorizer_pb2 as pb


def _request(context: struct_pb2.Struct | None = None, attributes: struct_pb2.Struct | None = None) -> pb.CheckRequest:
    request = pb.CheckRequest(action="read", resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme"))
    if context is not None:
        request.context.CopyFrom(context)
    if attributes is not None:
        request.resource.attributes.CopyFrom(attributes)
    return request


def _struct(values: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def test_a_huge_context_is_refused_without_converting_it(monkeypatch):
    # Review finding: a 1 MB context with no token cost 0.36 s of the event loop shared with every other call.
    calls = []
    original = convert.value_to_python

    def counted(value, budget):
        calls.append(1)
        return original(value, budget)

    monkeypatch.setattr(convert, "value_to_python", counted)
    check = convert.check_input(_request(context=_struct({f"k{i}": "v" for i in range(50_000)})))
    assert check.request_problem == f"attributes or context: too many values (limit {MAX_NODES})"
    assert calls == []  # refused by its size before one value was converted
    listed = convert.check_input(_request(attributes=_struct({"a": list(range(50_000))})))
    assert "too many values" in listed.request_problem
    assert len(calls) <= 1


def test_nested_values_count_towards_the_bound():
    nested = {f"k{i}": {f"n{j}": [1, 2, 3] for j in range(100)} for i in range(100)}  # 40,000+ values
    assert "too many values" in convert.check_input(_request(context=_struct(nested))).request_problem


def test_requests_within_the_core_limit_convert_as_before():
    check = convert.check_input(_request(context=_struct({f"k{i}": "v" for i in range(MAX_NODES - 10)}),
                                         attributes=_struct({"status": "draft", "n": [1, {"x": True}]})))
    assert check.request_problem == ""
    assert len(check.context) == MAX_NODES - 10
    assert check.resource.attributes == {"status": "draft", "n": [1.0, {"x": True}]}
