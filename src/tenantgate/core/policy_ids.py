"""Which ids a policy file may give its policies (uniqueness aside, which the compiler checks per set).

Decisions and audit records name policies by id, and readers trust ``tenantgate::tenant-guardrail`` as the
built-in guardrail's. A policy file may not use an id that a reader would take for a reserved one: the
comparison is made on a folded form in which case, compatibility forms (the fullwidth colon U+FF1A,
mathematical letters), characters that render as nothing (zero-width spaces and joiners, soft hyphens,
variation selectors, ...) and letters of other scripts that look like the prefix's own (Cyrillic ie U+0435,
Greek alpha U+03B1, RATIO U+2236, ...) make no difference. Ids of Cedar's own ``policyN`` form, and ids with
non-printable characters, quotes or backslashes are refused too. Pure functions over strings.
"""

from __future__ import annotations

import re
import unicodedata

from tenantgate.core.cedar_text import first_unprintable

RESERVED_PREFIX = "tenantgate::"
# cedarpy numbers policies positionally (policy0, ...); user ids of that shape could collide with them.
POSITIONAL = re.compile(r"policy\d+")

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): rendered as nothing.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
# Unicode's confusables (UTS #39 confusables.txt) whose prototype is a character of the reserved prefix, in
# either case, as they are after folding (NFKC and casefold already map fullwidth and mathematical forms).
_LOOKALIKES = {
    "a": "\u0251\u03b1\u0430\u13aa\u15c5\u237a\ua4ee\U000102a0\U00016f40",
    "e": "\u03b5\u0435\u04bd\u13ac\u212e\u22ff\u2d39\ua4f0\uab32\U00010286\U000118c6\U000118ce",
    "g": "\u018d\u0261\u050d\u0581\u13c0\u13f3\u1d83\ua4d6",
    "n": "\u03bd\u0578\u057c\u2c9b\ua4e0\U00010513",
    "t": "\u03c4\u0442\u13a2\u22a4\u27d9\u2ca7\ua4d4\U00010297\U000102b1\U00010315\U000118dc\U00016f0a"
         "\U0001f768",
    # Review finding: the Ethiopic wordspace U+1361 and the Mongolian colon U+1804 were missing.
    ":": "\u02d0\u02f8\u0589\u05c3\u0703\u0704\u0903\u0a83\u1361\u16ec\u1803\u1804\u1809\u205a\u2236"
         "\ua4fd\ua789\ufe30",
}
_LEADING_BLANKS = re.compile(r"^[\s\u2800]+")  # whitespace, and the blank braille pattern
_TO_PROTOTYPE = str.maketrans({ch: proto for proto, chars in _LOOKALIKES.items() for ch in chars})


def id_problem(policy_id: str, other: str | None = None) -> str | None:
    """Why a policy file may not use ``policy_id``, or None. ``other`` is the policy's other problem, if
    any: it is reported instead, unless the id holds a non-printable character."""
    if is_reserved_id(policy_id):
        # INVARIANT: no policy file's id reads as the built-in guardrail's (or any reserved one) in decisions
        # and audit records: case, fullwidth colons, zero-width characters and look-alike letters included.
        return other or (f"policy ids starting with {RESERVED_PREFIX!r} are reserved (compared ignoring case, "
                         "invisible characters and look-alike letters); rename it")
    hidden = first_unprintable(policy_id)
    if hidden:
        # Ids are printed to terminals (validate, test --coverage, explain) and logs: an ESC or CR in one could
        # rewrite or hide diagnostics. Shown escaped wherever they are printed.
        return (f"policy ids may hold printable characters only; this one holds {hidden} (a control or other "
                "non-printable character)")
    if POSITIONAL.fullmatch(policy_id):
        return other or "policy ids of the form policyN are reserved for Cedar's own numbering"
    if '"' in policy_id or "\\" in policy_id:
        return other or "policy ids may not contain quotes or backslashes"
    return other


def is_reserved_id(policy_id: str) -> bool:
    """True when ``policy_id`` reads as one under ``RESERVED_PREFIX`` (see ``folded``), blanks before it
    included (a leading space is easily missed in a decision or an audit record)."""
    return _LEADING_BLANKS.sub("", folded(policy_id)).startswith(RESERVED_PREFIX)


def folded(text: str) -> str:
    """``text`` as compared with reserved ids: characters that render as nothing (Unicode's default-ignorable
    code points and format characters) removed, NFKC-casefolded (NFKC, casefold, NFKC again, as Unicode's
    NFKC_Casefold), and the prefix's look-alikes from other scripts replaced by the prefix's characters."""
    if text.isascii():
        # No ASCII character is invisible, changed by NFKC or a look-alike, and casefold() is lower() on ASCII: the
        # same result, without a Unicode lookup per character (reloads fold every tenant policy's id).
        return text.lower()
    visible = "".join(ch for ch in text if not _invisible(ch))
    normal = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
    # Folding can produce ignorable characters again (compatibility decompositions); drop those too.
    return "".join(ch for ch in normal if not _invisible(ch)).translate(_TO_PROTOTYPE)


def _invisible(ch: str) -> bool:
    code = ord(ch)
    return unicodedata.category(ch) == "Cf" or any(low <= code <= high for low, high in _IGNORABLE_RANGES)
