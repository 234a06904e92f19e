"""Policy versions: content hashes of the files a set, or a tenant's decisions, depend on.

The whole set's version (``CompiledPolicies.version``) changes with any file, any tenant's included: it is
what operators compare (status, reload logs, metrics, ``tenantgate validate``). A decision's record and
answer carry its tenant's version instead: a hash of the schema, the global files (policies and entity
data) and that tenant's own files only. So no caller of one tenant can watch another tenant's policy changes
through the versions it is shown (review finding: one hash over every tenant's files did exactly that).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hashlib import _Hash


class Source(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def text(self) -> str: ...


def policy_version(schema_source: Source, sources: Sequence[Source]) -> str:
    """``sha256:<16 hex>`` over the schema and policy texts (and their paths), order-independent."""
    return _spelled(_digest(schema_source, sources))


def partition_versions(schema_source: Source, global_sources: Sequence[Source],
                       tenant_files: Mapping[str, Sequence[Source]]) -> tuple[str, dict[str, str]]:
    """(the global version, tenant -> its version) for tenants with files of their own (policies or entity
    data); a tenant without any carries the global version. Each is ``sha256:<16 hex>`` like the set's."""
    base = _digest(schema_source, global_sources)
    versions = {}
    for tenant, files in tenant_files.items():
        digest = base.copy()
        _feed(digest, sorted(files, key=lambda s: s.path))
        versions[tenant] = _spelled(digest)
    return _spelled(base), versions


def _digest(schema_source: Source, sources: Sequence[Source]) -> _Hash:
    digest = hashlib.sha256()
    _feed(digest, [schema_source, *sorted(sources, key=lambda s: s.path)])
    return digest


def _feed(digest: _Hash, sources: Iterable[Source]) -> None:
    for src in sources:
        for part in (src.path, src.text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big") + data)


def _spelled(digest: _Hash) -> str:
    return "sha256:" + digest.hexdigest()[:16]
