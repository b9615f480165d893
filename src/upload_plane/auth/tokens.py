"""The credentials this service issues, and how each is recognised. Pure functions, no I/O.

- **Access tokens** and the **session cookie** are HS256 JWTs naming the user (``sub``) and the
  sign-in they belong to (``sid``); ``typ`` tells them apart (a cookie is not a bearer token and
  the other way round). Both die with their sign-in (logout, refresh-token reuse) and their user.
- **Refresh tokens** are opaque random strings (``uprt_...``); only their SHA-256 is stored.
- **Upload link tokens** (``uplnk_...``) have the same shape as personal access tokens.
- **Personal access tokens** are opaque (``uppat_`` + 30 random base62 + a 6-character CRC32
  checksum, GitHub-style), so secret scanners can recognise a leaked one and tell a real token from a
  typo without asking the database. Only their SHA-256 is stored.

No credential this service issues is longer than a few hundred characters: anything longer than
``MAX_CREDENTIAL_LENGTH`` is refused before it is parsed, hashed or cached.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from ..lru import SizedCache

ALGORITHM = "HS256"
ACCESS, SESSION = "access", "session"
PAT_PREFIX = "uppat_"
LINK_PREFIX = "uplnk_"
REFRESH_PREFIX = "uprt_"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PAT_RANDOM, _PAT_CHECK = 30, 6
#: The longest bearer token, cookie, link token or Uppy capability looked at (ours are < 600).
MAX_CREDENTIAL_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class SignedToken:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: str
    session_id: str


#: Verified JWTs kept (successes only), bounded by bytes: a few thousand clients' tokens.
_VERIFIED: SizedCache[tuple[str, str], tuple[str, TokenClaims, float]] = SizedCache(4 * 1024 * 1024)
_ENTRY_OVERHEAD = 400  # bytes an entry costs besides its token (key tuple, claims, value tuple)


def issue_jwt(
    user_id: str, session_id: str, kind: str, secret: str, ttl: int, now: datetime | None = None
) -> SignedToken:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": user_id,
        "sid": session_id,
        "typ": kind,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return SignedToken(jwt.encode(claims, secret, algorithm=ALGORITHM), ttl)


def read_jwt(token: str, kind: str, secret: str, now: float | None = None) -> TokenClaims | None:
    """The claims of a valid, unexpired token of ``kind``; ``None`` for anything else (another
    algorithm, ``alg=none``, another key, another kind, a missing claim)."""
    if len(token) > MAX_CREDENTIAL_LENGTH:
        return None
    verified = _VERIFIED.get((secret, token))
    if verified is None:
        verified = _verify(token, secret)
        if verified is not None:
            _VERIFIED.put((secret, token), verified, len(token) + _ENTRY_OVERHEAD)
    if verified is None:
        return None
    claims_kind, claims, expires = verified
    if claims_kind != kind or expires <= (time.time() if now is None else now):
        return None
    return claims


def _verify(token: str, secret: str) -> tuple[str, TokenClaims, float] | None:
    """A token's signature and claims, checked once per token string (``read_jwt`` keeps what
    verified): a client sends the same token with many requests, and the same string always has
    the same (immutable) claims. Expiry is checked on every use."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "sid", "typ"], "verify_exp": False},
        )
    except jwt.PyJWTError:
        return None
    sub, sid, kind, exp = claims.get("sub"), claims.get("sid"), claims.get("typ"), claims.get("exp")
    if not (isinstance(sub, str) and isinstance(sid, str) and isinstance(kind, str)):
        return None
    if not isinstance(exp, int | float):
        return None
    return kind, TokenClaims(sub, sid), float(exp)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out))


def _new_checked(prefix: str) -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_PAT_RANDOM))
    return f"{prefix}{body}{_base62(zlib.crc32(body.encode()), _PAT_CHECK)}"


def _looks_checked(prefix: str, token: str) -> bool:
    """The prefix, the length and the checksum are right (cheap: no database)."""
    if not token.startswith(prefix) or len(token) != len(prefix) + _PAT_RANDOM + _PAT_CHECK:
        return False
    body, check = token[len(prefix) : -_PAT_CHECK], token[-_PAT_CHECK:]
    return all(c in _BASE62 for c in body) and _base62(zlib.crc32(body.encode()), _PAT_CHECK) == check


def new_personal_access_token() -> str:
    return _new_checked(PAT_PREFIX)


def looks_like_personal_access_token(token: str) -> bool:
    return _looks_checked(PAT_PREFIX, token)


def new_upload_link_token() -> str:
    """An upload link's token (``uplnk_`` + 30 base62 + a checksum, like personal access tokens)."""
    return _new_checked(LINK_PREFIX)


def looks_like_upload_link_token(token: str) -> bool:
    return _looks_checked(LINK_PREFIX, token)
