"""The two-person rule's question: may two subjects name one person?

Stricter than equality on purpose (see ``same_person``): subjects that differ only in case, compatibility
forms or characters that render blank count as one person, so nobody approves their own break-glass grant
under a second spelling of their name.
"""

from __future__ import annotations

import re
import unicodedata


def same_person(a: str, b: str) -> bool:
    """Whether two subjects may name one person, for the two-person rule: equal after NFKC normalisation and
    case folding, with every character that can render blank dropped: Unicode's default-ignorable characters
    (zero-width spaces and joiners, variation selectors, Hangul fillers, ...), every character of the
    categories ``_BLANK_CATEGORIES`` (spaces and separators, format, control, private-use, surrogate and
    unassigned code points) and the visible-category blanks in ``_BLANK`` (U+2800 BRAILLE PATTERN BLANK,
    U+1D159 MUSICAL SYMBOL NULL NOTEHEAD, U+16FE4 KHITAN SMALL SCRIPT FILLER). Stricter than equality on
    purpose: ``Oscar``, ``OSCAR``, ``oscar\u200b``, ``os car`` and ``oscar\u2800`` cannot approve ``oscar``'s
    grant (two subjects merged by mistake only mean that someone else must approve). Look-alikes from other
    scripts (a Cyrillic o) are not folded: that needs a confusables table."""
    return _person_key(a) == _person_key(b)


def _person_key(subject: str) -> str:
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", subject).casefold())
    return "".join(ch for ch in _IGNORABLE.sub("", folded)
                   if ch not in _BLANK and unicodedata.category(ch) not in _BLANK_CATEGORIES)


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible in display.
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
                        "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


# Characters that may render as nothing, or as blank space, by category: Zs (spaces, U+0020, U+00A0, U+2000-
# U+200A, U+205F, U+3000, ...), Zl, Zp (line and paragraph separators), Cf (format: U+180E, U+200B-U+200F,
# bidi controls, tags, ...), Cc (controls), Co (private use: a font's choice), Cs (lone surrogates) and Cn
# (unassigned in this Python's Unicode version: no glyph yet).
_BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cf", "Cc", "Co", "Cs", "Cn"})
# Blank-rendering characters of other categories that are not default-ignorable (those are in _IGNORABLE,
# which also holds U+115F, U+1160, U+17B4, U+17B5, U+3164 and U+FFA0).
_BLANK = frozenset("\u2800\U0001d159\U00016fe4")
