"""Shared fixtures of the configuration tests: a config file written from TOML text, and a trusted issuer's table."""

from collections.abc import Callable
from pathlib import Path

import pytest

# The keys of one [[tokens.issuers]] table, as TOML values: a config file must trust an issuer to load.
ISSUER_KEYS = {"issuer": '"https://login.example.com/"', "audiences": '["tenantgate"]', "algorithms": '["RS256"]',
               "jwks_file": '"keys/jwks.json"'}


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to ``tenantgate.toml`` in the test's directory; returns its path."""
    def write(text: str) -> Path:
        path = tmp_path / "tenantgate.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def issuer_table() -> Callable[..., str]:
    """One ``[[tokens.issuers]]`` table; a keyword argument replaces a key's TOML value, or drops the key (None)."""
    def table(**changes: str | None) -> str:
        keys = {**ISSUER_KEYS, **changes}
        lines = [f"{key} = {value}\n" for key, value in keys.items() if value is not None]
        return "[[tokens.issuers]]\n" + "".join(lines)

    return table
