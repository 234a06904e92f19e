from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "policy_version", "policy_count", "tenant_partitions", "last_reload_ok", "last_reload_message", "audit_writable", "grant_store_reachable", "quarantined_tenants")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_COUNT_FIELD_NUMBER: _ClassVar[int]
    TENANT_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_OK_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_WRITABLE_FIELD_NUMBER: _ClassVar[int]
    GRANT_STORE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_TENANTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    policy_version: str
    policy_count: int
    tenant_partitions: int
    last_reload_ok: bool
    last_reload_message: str
    audit_writable: bool
    grant_store_reachable: bool
    quarantined_tenants: int
    def __init__(self, version: _Optional[str] = ..., policy_version: _Optional[str] = ..., policy_count: _Optional[int] = ..., tenant_partitions: _Optional[int] = ..., last_reload_ok: _Optional[bool] = ..., last_reload_message: _Optional[str] = ..., audit_writable: _Optional[bool] = ..., grant_store_reachable: _Optional[bool] = ..., quarantined_tenants: _Optional[int] = ...) -> None: ...
