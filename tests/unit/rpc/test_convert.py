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


def test_the_check_response_carries_every_field_of_the_audit_record():
    # check_response sets the record's fields one by one (cheaper than building and copying an AuditRecord): a
    # field of the proto or of the record it forgets would go out empty.
    import dataclasses

    from tenantgate.core.model import AuditEvent, Decision, DecisionResult, Reason

    values = {f.name: ("p-1", "p-2") if f.name == "policy_ids" else True if f.name == "dry_run" else f"v-{f.name}"
              for f in dataclasses.fields(AuditEvent)}
    event = AuditEvent(**values)
    result = DecisionResult(Decision.DENY, Reason.POLICY_FORBID, "m", ("p-1", "p-2"), "d-1", event)
    response = convert.check_response(result)
    proto_fields = {f.name for f in pb.AuditRecord.DESCRIPTOR.fields}
    assert proto_fields == set(values)
    record = response.audit
    assert {name: getattr(record, name) for name in proto_fields} == {**values, "policy_ids": ["p-1", "p-2"]}
    assert (response.decision, response.reason, list(response.policy_ids), response.decision_id, response.message) == (
        pb.DENY, "policy_forbid", ["p-1", "p-2"], "d-1", "m")
