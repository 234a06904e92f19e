"""``tenantgate.v1.Admin``: what the server is running (policy version, last reload, dependencies)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from tenantgate import __version__
from tenantgate.policy import PolicyStore
from tenantgate.v1 import admin_pb2 as adm
from tenantgate.v1 import admin_pb2_grpc as adm_grpc

REFUSED = "the last reload was refused: the server log and `tenantgate validate` name the problems"
HELD_BACK = ("the last reload applied every change except those of tenants whose files are invalid, held back on "
             "their last valid files: the server log and `tenantgate validate` name the problems")
QUARANTINED = ("{count} tenant(s) quarantined: their files are invalid with no valid ones to fall back on, or their "
               "policies took too long to evaluate, and every decision about their resources is denied "
               "(tenant_policies_unavailable); the server log names them and the problems")


class AdminService(adm_grpc.AdminServicer):
    def __init__(self, policies: PolicyStore, audit_ok: Callable[[], bool], store_ok: Callable[[], bool]) -> None:
        self._policies = policies
        self._audit_ok = audit_ok
        self._store_ok = store_ok

    async def Status(self, request: adm.StatusRequest, context: grpc.aio.ServicerContext) -> adm.StatusResponse:
        engine = self._policies.current()
        compiled = engine.compiled
        last = self._policies.last_result
        audit_ok, store_ok = await asyncio.gather(asyncio.to_thread(self._audit_ok), asyncio.to_thread(self._store_ok))
        return adm.StatusResponse(
            version=__version__, policy_version=compiled.version, policy_count=compiled.total_policies,
            tenant_partitions=len(compiled.tenants), last_reload_ok=last.ok,
            # A refusal in fixed words: its details, even its first line ("not a regular file: tenants/<name>/..."),
            # can name other tenants, their files and entities, and this RPC needs no token (review findings).
            # They are in the server log and from `tenantgate validate`. Success messages are fixed texts.
            last_reload_message=_last_reload(last.ok, last.message, last.held_back, engine.closed_tenants),
            audit_writable=audit_ok, grant_store_reachable=store_ok, quarantined_tenants=len(engine.closed_tenants),
        )


def _last_reload(ok: bool, message: str, held_back: tuple[str, ...], quarantined: frozenset[str]) -> str:
    """What Status says of the last load or reload, in fixed words naming no tenant (or ``message``, a fixed
    text, when it was ok and nothing is quarantined)."""
    parts = [message if ok else REFUSED if not held_back else "" if quarantined.issuperset(held_back) else HELD_BACK]
    if quarantined:
        parts.append(QUARANTINED.format(count=len(quarantined)))
    return "; ".join(part for part in parts if part)
