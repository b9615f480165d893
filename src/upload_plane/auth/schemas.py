"""Wire types of the auth API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=150)]  # rules: auth/usernames.py
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
NewPassword = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
OpaqueToken = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: OpaqueToken


class LogoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: OpaqueToken | None = None


class TokenResponse(msgspec.Struct):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: NewPassword
    role: Literal["admin", "user"] = "user"


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["admin", "user"] | msgspec.UnsetType = msgspec.UNSET
    disabled: bool | msgspec.UnsetType = msgspec.UNSET


class PasswordSet(msgspec.Struct, forbid_unknown_fields=True):
    password: NewPassword


class UserOut(msgspec.Struct):
    id: str
    username: str
    role: str
    disabled: bool
    created_at: datetime


class UserPage(msgspec.Struct):
    items: list[UserOut]
    next_cursor: str | None


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 90


class TokenCreated(msgspec.Struct):
    id: str
    name: str
    token: str
    expires_at: datetime


class TokenOut(msgspec.Struct):
    id: str
    name: str
    hint: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenPage(msgspec.Struct):
    items: list[TokenOut]
    next_cursor: str | None


class SessionOut(msgspec.Struct):
    """A sign-in (a password login): its access tokens, cookie and refresh tokens live and die
    with it."""

    id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    address: str | None
    user_agent: str | None


class SessionPage(msgspec.Struct):
    items: list[SessionOut]
    next_cursor: str | None


class CredentialsRevoked(msgspec.Struct):
    sessions_revoked: int
    tokens_revoked: int
