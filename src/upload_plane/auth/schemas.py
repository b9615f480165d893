"""Wire types of the auth API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=150)]  # rules: auth/usernames.py
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password


class TokenResponse(msgspec.Struct):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
    role: Literal["admin", "user"] = "user"


class UserOut(msgspec.Struct):
    id: str
    username: str
    role: str
    disabled: bool
    created_at: datetime
