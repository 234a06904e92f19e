import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GrantState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_STATE_UNSPECIFIED: _ClassVar[GrantState]
    PENDING: _ClassVar[GrantState]
    ACTIVE: _ClassVar[GrantState]
    EXPIRED: _ClassVar[GrantState]
    REVOKED: _ClassVar[GrantState]
GRANT_STATE_UNSPECIFIED: GrantState
PENDING: GrantState
ACTIVE: GrantState
EXPIRED: GrantState
REVOKED: GrantState

class Grant(_message.Message):
    __slots__ = ("id", "operator", "operator_tenant", "target_tenant", "actions", "reason", "ticket", "state", "requested_at", "approved_by", "approved_at", "expires_at", "revoked_by", "revoked_at", "duration_seconds", "revoke_reason", "pending_until", "operator_issuer")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_TENANT_FIELD_NUMBER: _ClassVar[int]
    TARGET_TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REVOKE_REASON_FIELD_NUMBER: _ClassVar[int]
    PENDING_UNTIL_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ISSUER_FIELD_NUMBER: _ClassVar[int]
    id: str
    operator: str
    operator_tenant: str
    target_tenant: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    ticket: str
    state: GrantState
    requested_at: _timestamp_pb2.Timestamp
    approved_by: str
    approved_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_by: str
    revoked_at: _timestamp_pb2.Timestamp
    duration_seconds: int
    revoke_reason: str
    pending_until: _timestamp_pb2.Timestamp
    operator_issuer: str
    def __init__(self, id: _Optional[str] = ..., operator: _Optional[str] = ..., operator_tenant: _Optional[str] = ..., target_tenant: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., ticket: _Optional[str] = ..., state: _Optional[_Union[GrantState, str]] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approved_by: _Optional[str] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[int] = ..., revoke_reason: _Optional[str] = ..., pending_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator_issuer: _Optional[str] = ...) -> None: ...

class RequestGrantRequest(_message.Message):
    __slots__ = ("target_tenant", "actions", "reason", "ticket", "duration_seconds")
    TARGET_TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    target_tenant: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    ticket: str
    duration_seconds: int
    def __init__(self, target_tenant: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., ticket: _Optional[str] = ..., duration_seconds: _Optional[int] = ...) -> None: ...

class ApproveGrantRequest(_message.Message):
    __slots__ = ("grant_id",)
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    def __init__(self, grant_id: _Optional[str] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("grant_id", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("tenant", "state")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    state: GrantState
    def __init__(self, tenant: _Optional[str] = ..., state: _Optional[_Union[GrantState, str]] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "truncated")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    truncated: bool
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...
