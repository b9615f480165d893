"""Usernames are normalised once — NFKC, trimmed, lower-case — at creation and at login, and then
compared exactly (the column's collation is binary). So ``Admin``, ``ADMIN`` and ``admin `` are the
same user everywhere, on every database, and ``ﬁona`` (a ligature) is ``fiona``.

A new username may hold letters, marks and digits of any script, and ``. _ @ -``; no spaces, symbols,
emoji or invisible characters, so that names are readable in an audit trail.
"""

from __future__ import annotations

import unicodedata

from ..errors import ValidationFailed

MAX_LENGTH = 150
_PUNCTUATION = frozenset("._@-")
_ALLOWED_CATEGORIES = ("L", "M", "N")


def normalize_username(raw: str) -> str:
    return unicodedata.normalize("NFKC", raw).strip().lower()


def valid_new_username(raw: str) -> str:
    """The normalised form of a username chosen for a new account; ``ValidationFailed`` if unfit."""
    name = normalize_username(raw)
    if not 1 <= len(name) <= MAX_LENGTH:
        raise ValidationFailed(f"a username has 1 to {MAX_LENGTH} characters")
    bad = sorted(
        {
            ch
            for ch in name
            if ch not in _PUNCTUATION and not unicodedata.category(ch).startswith(_ALLOWED_CATEGORIES)
        }
    )
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X}" for ch in bad[:10])
        raise ValidationFailed(
            f"a username may hold letters, digits and . _ @ - only (found {shown})", field="username"
        )
    return name
