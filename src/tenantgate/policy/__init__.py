"""Policy files on disk: loading, validation and the holder of the current compiled set."""

from tenantgate.policy.loader import PolicyStore, load_policies

__all__ = ["PolicyStore", "load_policies"]
