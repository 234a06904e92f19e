"""Policy files on disk: loading, validation, and the reloadable holder of the current compiled set."""

from tenantgate.policy.loader import load_policies
from tenantgate.policy.store import PolicyStore, ReloadResult

__all__ = ["PolicyStore", "ReloadResult", "load_policies"]
