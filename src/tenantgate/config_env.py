"""``TENANTGATE_*`` environment variables read into the raw settings, before they are built and validated
(``config.load``); and what a refused value looks like in a message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, get_origin, get_type_hints

from tenantgate.errors import ConfigError
from tenantgate.numerals import DIGITS, INT_SPELLING, NUMBER_SPELLING, read_int, read_number


def apply_env(raw: dict[str, Any], env: Mapping[str, str], sections_by_name: Mapping[str, type],
              is_table: Callable[[Any], bool]) -> None:
    """Set in ``raw`` (the parsed file, by section) what ``TENANTGATE_<SECTION>_<KEY>`` variables of ``env`` say.
    ``sections_by_name`` maps each section to its settings class; ``is_table(hint)`` tells the structured keys
    the environment cannot set. Raises ``ConfigError`` for an unknown name or a value of the wrong type."""
    prefix = "TENANTGATE_"
    # Longest section names first so DEV_ISSUER wins over a hypothetical DEV.
    sections = sorted(sections_by_name, key=len, reverse=True)
    for name, value in env.items():
        if not name.startswith(prefix) or name.startswith("TENANTGATE_TEST_") or name == "TENANTGATE_TOKEN":
            continue
        rest = name[len(prefix):].lower()
        for section in sections:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                table = raw.setdefault(section, {})
                hints = get_type_hints(sections_by_name[section])
                # A nested table (server.tls): TENANTGATE_SERVER_TLS_CERT_FILE sets server.tls.cert_file.
                for sub, sub_hint in hints.items():
                    if dataclasses.is_dataclass(sub_hint) and key.startswith(sub + "_"):
                        if not isinstance(table, dict) or not isinstance(table.setdefault(sub, {}), dict):
                            raise ConfigError(f"environment variable {name}: [{section}.{sub}] must be a table")
                        section, table, key = f"{section}.{sub}", table[sub], key[len(sub) + 1:]
                        hints = get_type_hints(sub_hint)
                        break
                if key not in hints or is_table(hints[key]) or not isinstance(table, dict):
                    if not _is_service_link(name, value):
                        raise ConfigError(f"environment variable {name}: unknown key {section}.{key}")
                else:
                    table[key] = _from_env(name, value, hints[key], f"{section}.{key}")
                break
        else:
            if rest not in ("config",) and not _is_service_link(name, value):
                raise ConfigError(f"environment variable {name}: unknown section")


# What Kubernetes puts in every pod's environment for each Service of its namespace (unless the pod sets
# enableServiceLinks: false): for a Service named `tenantgate` (or `tenantgate-<x>`), TENANTGATE_SERVICE_HOST,
# TENANTGATE_SERVICE_PORT[_<PORT NAME>], TENANTGATE_PORT and TENANTGATE_PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR].
# Names of this shape that are no setting are skipped instead of refused (review finding: every central pod
# created after its Service crash-looped on "unknown section"); any other unknown TENANTGATE_* name is refused.
_SERVICE_LINK = re.compile(r"TENANTGATE_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|"
                           r"PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)")
# ... and only with the value Kubernetes gives it, so a typo such as TENANTGATE_SERVER_PORT=9000 is still refused
# (review finding): an address, a port number, a protocol, or protocol://address:port.
_ADDRESS = r"[0-9A-Fa-f:.]+"
_LINK_VALUES = ((("_SERVICE_HOST", "_ADDR"), re.compile(_ADDRESS)),
                (("_PROTO",), re.compile(r"tcp|udp|sctp")),
                (("_TCP_PORT", "_UDP_PORT", "_SCTP_PORT"), DIGITS))
_LINK_URL = re.compile(rf"(?:tcp|udp|sctp)://(?:{_ADDRESS}|\[{_ADDRESS}\]):[0-9]+")


def _is_service_link(name: str, value: str) -> bool:
    if not _SERVICE_LINK.fullmatch(name):
        return False
    for suffixes, shape in _LINK_VALUES:
        if name.endswith(suffixes):
            return shape.fullmatch(value) is not None
    if "_SERVICE_PORT" in name:
        return DIGITS.fullmatch(value) is not None  # not str.isdigit(): it takes other scripts' digits
    return _LINK_URL.fullmatch(value) is not None  # <SERVICE>_PORT, <SERVICE>_PORT_<n>_<PROTO>


_TYPE_WORDS = {bool: "true or false (or 1/0, yes/no, on/off)", int: "an integer", float: "a number"}
_SPELLINGS = {int: f" ({INT_SPELLING})", float: f" ({NUMBER_SPELLING})"}


def _from_env(name: str, value: str, hint: Any, key: str) -> Any:
    """The value of variable ``name`` (setting ``key``) as type ``hint``. Numbers are plain ASCII decimal
    (``numerals``): ``int()`` alone took ``1_0``, ``+5``, `` 7 `` and Arabic-Indic digits. Raises
    ``ConfigError`` naming both."""
    try:
        if hint is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            return read_int(value)
        if hint is float:
            return read_number(value)
        if get_origin(hint) is tuple:
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
    except ValueError as err:
        raise ConfigError(f"{name} ({key}) must be {_TYPE_WORDS[hint]}, got {shown(value)}"
                          f"{_SPELLINGS.get(hint, '')}") from err


def shown(value: object, limit: int = 60) -> str:
    """A value for a one-line message: strings quoted, anything longer than ``limit`` characters cut short."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
