"""Filesystem helpers shared by the adapters that keep state on disk (audit log, grant store, dev issuer)."""

from __future__ import annotations

from pathlib import Path


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700; existing ones are left as they are.

    ``mkdir(parents=True)`` creates the parents with the default 0755 whatever ``mode`` says, so anyone on the
    host could list a state directory (the default ``.tenantgate``). Raises ``OSError``.
    """
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
