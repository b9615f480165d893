"""Recognising the credential of each request: one query on a hot-path connection (``db.py``).

The user is loaded on every request, so a disabled account and a revoked sign-in lose access at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..db import Connection
from ..errors import Unauthenticated
from ..models import AuthSession, PersonalAccessToken, User, utcnow
from ..statements import Query, Statement
from . import tokens
from .principal import PAT_CREDENTIAL, ClientInfo, Principal

#: ``last_used_at`` of a personal access token is written at most this often (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)

_USERS: sa.Table = User.__table__  # type: ignore[attr-defined]
_SESSIONS: sa.Table = AuthSession.__table__  # type: ignore[attr-defined]
_PATS: sa.Table = PersonalAccessToken.__table__  # type: ignore[attr-defined]
_USER = (_USERS.c.id, _USERS.c.username, _USERS.c.role, _USERS.c.disabled)

SIGN_IN: Query[dict[str, Any]] = Query(
    sa.select(*_USER, _SESSIONS.c.revoked_at, _SESSIONS.c.expires_at)
    .join(_SESSIONS, _SESSIONS.c.user_id == _USERS.c.id)
    .where(_USERS.c.id == sa.bindparam("user_id"), _SESSIONS.c.id == sa.bindparam("session_id")),
    dict,
)
PERSONAL_TOKEN: Query[dict[str, Any]] = Query(
    sa.select(
        *_USER, _PATS.c.id.label("token_id"), _PATS.c.revoked_at, _PATS.c.expires_at, _PATS.c.last_used_at
    )
    .join(_USERS, _USERS.c.id == _PATS.c.user_id)
    .where(_PATS.c.token_hash == sa.bindparam("token_hash")),
    dict,
)
TOKEN_USED = Statement(
    sa.update(_PATS)
    .where(_PATS.c.id == sa.bindparam("token_id"))
    .values(last_used_at=sa.bindparam("now", type_=_PATS.c.last_used_at.type))
)


async def from_jwt(conn: Connection, token: str, kind: str, secret: str, client: ClientInfo) -> Principal:
    """An access token or the session cookie (``kind``): valid signature and expiry, a sign-in that
    is neither revoked nor over, an enabled user."""
    claims = tokens.read_jwt(token, kind, secret)
    if claims is None:
        raise Unauthenticated("The token is invalid or has expired")
    row = await conn.one(SIGN_IN, user_id=claims.user_id, session_id=claims.session_id)
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= utcnow():
        raise Unauthenticated("The sign-in has ended; sign in again")
    if row["disabled"]:
        raise Unauthenticated("The account is disabled")
    return Principal(row["id"], row["username"], row["role"], kind, claims.session_id, client)


async def from_personal_token(conn: Connection, token: str, client: ClientInfo) -> Principal:
    if not tokens.looks_like_personal_access_token(token):
        raise Unauthenticated("The token is invalid")
    now = utcnow()
    row = await conn.one(PERSONAL_TOKEN, token_hash=tokens.token_hash(token))
    if row is None:
        raise Unauthenticated("The token is invalid")
    if row["revoked_at"] is not None or row["expires_at"] <= now:
        raise Unauthenticated("The token has expired or was revoked")
    if row["disabled"]:
        raise Unauthenticated("The account is disabled")
    last_used = row["last_used_at"]
    if last_used is None or last_used < now - LAST_USED_RESOLUTION:
        await conn.run(TOKEN_USED, token_id=row["token_id"], now=now)
    return Principal(row["id"], row["username"], row["role"], PAT_CREDENTIAL, row["token_id"], client)
