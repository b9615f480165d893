"""Recognising the credential of each request: one query on the hot path's connections (``sql.py``).

The user is loaded on every request, so a disabled account and a revoked sign-in lose access at once.
"""

from __future__ import annotations

from datetime import timedelta

from ..errors import Unauthenticated
from ..models import utcnow
from ..sql import Connection, utc
from . import tokens
from .principal import ClientInfo, Principal

#: ``last_used_at`` of a personal access token is written at most this often (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def from_jwt(conn: Connection, token: str, kind: str, secret: str, client: ClientInfo) -> Principal:
    """An access token or the session cookie (``kind``): valid signature and expiry, a sign-in that
    is neither revoked nor over, an enabled user."""
    claims = tokens.read_jwt(token, kind, secret)
    if claims is None:
        raise Unauthenticated("The token is invalid or has expired")
    row = await conn.one(
        "SELECT u.id, u.username, u.role, u.disabled, s.revoked_at, s.expires_at FROM users u "
        "JOIN auth_sessions s ON s.user_id = u.id WHERE u.id = %s AND s.id = %s",
        claims.user_id,
        claims.session_id,
    )
    if row is None or row[4] is not None or utc(row[5]) <= utcnow():  # type: ignore[operator]
        raise Unauthenticated("The sign-in has ended; sign in again")
    if row[3]:
        raise Unauthenticated("The account is disabled")
    return Principal(row[0], row[1], row[2], kind, claims.session_id, client)


async def from_personal_token(conn: Connection, token: str, client: ClientInfo) -> Principal:
    if not tokens.looks_like_personal_access_token(token):
        raise Unauthenticated("The token is invalid")
    now = utcnow()
    row = await conn.one(
        "SELECT u.id, u.username, u.role, u.disabled, t.id, t.revoked_at, t.expires_at, t.last_used_at "
        "FROM personal_access_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s",
        tokens.token_hash(token),
    )
    if row is None:
        raise Unauthenticated("The token is invalid")
    if row[5] is not None or utc(row[6]) <= now:  # type: ignore[operator]
        raise Unauthenticated("The token has expired or was revoked")
    if row[3]:
        raise Unauthenticated("The account is disabled")
    last_used = utc(row[7])
    if last_used is None or last_used < now - LAST_USED_RESOLUTION:
        await conn.run("UPDATE personal_access_tokens SET last_used_at = %s WHERE id = %s", now, row[4])
    return Principal(row[0], row[1], row[2], "pat", row[4], client)
