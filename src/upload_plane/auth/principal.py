"""Who is acting, with which credential, from where: what services authorise and audit against."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import User


@dataclass(frozen=True, slots=True)
class ClientInfo:
    address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    username: str
    role: str  # "admin" | "user"
    credential: str  # "access" | "session" | "pat" | "system"
    credential_id: str | None = None  # the sign-in (access, session) or the token (pat)
    client: ClientInfo = ClientInfo()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(
        cls,
        user: User,
        credential: str = "system",
        credential_id: str | None = None,
        client: ClientInfo | None = None,
    ) -> Principal:
        return cls(user.id, user.username, user.role, credential, credential_id, client or ClientInfo())
