"""Users and logins. Free of HTTP: the controller and the CLI both use it."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..errors import Conflict, Unauthenticated, ValidationFailed
from ..models import User
from .passwords import hash_password, verify_password
from .tokens import AccessToken, issue_access_token
from .usernames import normalize_username, valid_new_username

ROLES = ("admin", "user")
MIN_PASSWORD_LENGTH = 8


class AuthService:
    def __init__(self, session: AsyncSession, jwt_secret: str, access_token_ttl: int) -> None:
        self.session = session
        self.jwt_secret = jwt_secret
        self.access_token_ttl = access_token_ttl

    async def login(self, username: str, password: str) -> AccessToken:
        user = await self.find(username)
        ok = verify_password(user.password_hash if user else None, password)
        if not user or not ok or user.disabled:
            raise Unauthenticated("Unknown username or wrong password")
        return issue_access_token(user.id, self.jwt_secret, self.access_token_ttl)

    async def create_user(self, username: str, password: str, role: str = "user") -> User:
        if role not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationFailed(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        username = valid_new_username(username)
        if await self.find(username):
            raise Conflict(f"user {username!r} already exists")
        user = User(username=username, password_hash=hash_password(password), role=role)
        self.session.add(user)
        await self.session.flush()
        return user

    async def set_password(self, username: str, password: str) -> User | None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationFailed(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        user = await self.find(username)
        if user:
            user.password_hash = hash_password(password)
            self.session.add(user)
            await self.session.flush()
        return user

    async def find(self, username: str) -> User | None:
        name = normalize_username(username)
        return (await self.session.exec(select(User).where(User.username == name))).first()

    async def list_users(self) -> list[User]:
        return list((await self.session.exec(select(User).order_by(User.username))).all())
