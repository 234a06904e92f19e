"""Reading the bearer token from gRPC call metadata, refusing ambiguous or malformed credentials."""

from __future__ import annotations

from collections.abc import Iterable


def bearer_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str, str]:
    """Return ``(token, problem)``. ``problem`` is non-empty when the metadata must not be trusted.

    Two ``authorization`` entries, a binary value, or a scheme other than ``Bearer`` are problems: such
    ambiguity has been a bypass class in proxies. No ``authorization`` entry is ``("", "")``.
    """
    values = [v for k, v in (metadata or ()) if k.lower() in ("authorization", "authorization-bin")]
    if not values:
        return "", ""
    if len(values) > 1:
        return "", "more than one authorization metadata entry"
    value = values[0]
    if not isinstance(value, str):
        return "", "authorization metadata must be text"
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "", "authorization metadata must be 'Bearer <token>'"
    return token.strip(), ""
