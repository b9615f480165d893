"""Who is acting, with which credential, from where: what services authorise and audit against."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import User


@dataclass(frozen=True, slots=True)
class ClientInfo:
    address: str | None = None
    user_agent: str | None = None


#: The credential of an upload link: the principal acts for the link, with the authority of the user
#: who issued it (``id``), confined by the link to one log, write-only.
LINK_CREDENTIAL = "upload_link"
#: The credential of a request made with a personal access token (which may not create tokens).
PAT_CREDENTIAL = "pat"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    username: str
    role: str  # "admin" | "user"
    credential: str  # "access" | "session" | "pat" | "system" | "upload_link"
    credential_id: str | None = None  # the sign-in (access, session), the token (pat) or the link
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
