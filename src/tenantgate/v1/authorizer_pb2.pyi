from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    ALLOW: _ClassVar[Decision]
    DENY: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
ALLOW: Decision
DENY: Decision

class Resource(_message.Message):
    __slots__ = ("type", "id", "tenant", "attributes")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    tenant: str
    attributes: _struct_pb2.Struct
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ..., tenant: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("token", "action", "resource", "intent", "context")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    token: str
    action: str
    resource: Resource
    intent: str
    context: _struct_pb2.Struct
    def __init__(self, token: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., intent: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("decision_id", "time", "decision", "reason", "subject", "principal_type", "principal_tenant", "resource_type", "resource_id", "resource_tenant", "action", "intent", "policy_ids", "grant_id", "policy_version", "issuer", "token_id", "message", "api", "actor", "dry_run", "stated_subject")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_TENANT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    POLICY_IDS_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    STATED_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    time: str
    decision: str
    reason: str
    subject: str
    principal_type: str
    principal_tenant: str
    resource_type: str
    resource_id: str
    resource_tenant: str
    action: str
    intent: str
    policy_ids: _containers.RepeatedScalarFieldContainer[str]
    grant_id: str
    policy_version: str
    issuer: str
    token_id: str
    message: str
    api: str
    actor: str
    dry_run: bool
    stated_subject: str
    def __init__(self, decision_id: _Optional[str] = ..., time: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., subject: _Optional[str] = ..., principal_type: _Optional[str] = ..., principal_tenant: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., resource_tenant: _Optional[str] = ..., action: _Optional[str] = ..., intent: _Optional[str] = ..., policy_ids: _Optional[_Iterable[str]] = ..., grant_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., issuer: _Optional[str] = ..., token_id: _Optional[str] = ..., message: _Optional[str] = ..., api: _Optional[str] = ..., actor: _Optional[str] = ..., dry_run: _Optional[bool] = ..., stated_subject: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "reason", "policy_ids", "decision_id", "audit", "message")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_IDS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reason: str
    policy_ids: _containers.RepeatedScalarFieldContainer[str]
    decision_id: str
    audit: AuditRecord
    message: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., policy_ids: _Optional[_Iterable[str]] = ..., decision_id: _Optional[str] = ..., audit: _Optional[_Union[AuditRecord, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class BatchCheckRequest(_message.Message):
    __slots__ = ("token", "items")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    token: str
    items: _containers.RepeatedCompositeFieldContainer[CheckRequest]
    def __init__(self, token: _Optional[str] = ..., items: _Optional[_Iterable[_Union[CheckRequest, _Mapping]]] = ...) -> None: ...

class BatchCheckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResponse, _Mapping]]] = ...) -> None: ...
