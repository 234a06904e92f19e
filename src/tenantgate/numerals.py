"""Numbers written as text (environment values, ports in addresses, command-line options): plain ASCII decimal
only.

Python's ``int()`` and ``float()`` read more than a person means by a number: ``1_0`` (10), ``+5``, `` 7 ``
(surrounding whitespace) and digits of any script (Arabic-Indic U+0661 U+0660 is 10, and so is full-width
U+FF11 U+FF10); ``float()`` also ``nan`` and ``inf``. A setting spelled any of those ways is refused instead
of becoming a value nobody wrote (review finding). An exponent (``1e-3``) stays a way to write a number.
TOML files are not read here: their numbers are typed by TOML's own grammar.
"""

from __future__ import annotations

import argparse
import math
import re

# str patterns: [0-9] is the ten ASCII digits (unlike \d or str.isdigit(), which take digits of every script).
DIGITS = re.compile(r"[0-9]+")  # one or more ASCII digits, for a caller matching a shape (a port) with fullmatch
_SIGNED = re.compile(r"-?[0-9]+")
# Digits on at least one side of the '.': ".5" and "5." were always read (float()) and mean one number each.
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

# How a refusal says what is accepted (short: messages quote the refused value too).
INT_SPELLING = "ASCII digits, optionally after a '-'"
NUMBER_SPELLING = "ASCII digits, e.g. 2, 2.5, .5 or 1e-3"


def read_int(text: str) -> int:
    """``text`` as an int when it is ASCII decimal digits, optionally after one ``-``. Raises ``ValueError``
    otherwise, and for more digits than Python converts (4300). Ranges are the caller's."""
    if not _SIGNED.fullmatch(text):
        raise ValueError(f"not a plain decimal integer: {text[:40]!r}")
    return int(text)


def read_number(text: str) -> float:
    """``text`` as a float when it is ASCII decimal digits with an optional ``.`` fraction (``2.5``, ``.5``,
    ``5.``) and exponent (after one ``-``): never ``nan`` or ``inf``. Raises ``ValueError`` otherwise, and for
    a number too large for a float (``1e999``, 400 digits: float() makes them ``inf``). Ranges are the
    caller's."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a plain decimal number: {text[:40]!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text[:40]!r}")
    return value


def int_option(text: str) -> int:
    """argparse ``type=`` for an integer option (``read_int``; each command checks its own range, so a ``-``
    is left to it): anything else is a usage error that says what was given."""
    try:
        return read_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r} ({INT_SPELLING})") from None
