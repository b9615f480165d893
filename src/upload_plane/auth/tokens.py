"""Signed JWT access tokens (HS256)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int


def issue_access_token(user_id: str, secret: str, ttl: int, now: datetime | None = None) -> AccessToken:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": user_id,
        "typ": "access",
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return AccessToken(jwt.encode(claims, secret, algorithm=ALGORITHM), ttl)


def read_access_token(token: str, secret: str) -> str | None:
    """The user id of a valid, unexpired access token; ``None`` for anything else."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None
