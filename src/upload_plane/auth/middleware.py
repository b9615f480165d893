"""Bearer-token authentication for everything under /api/v1 except login."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from ..db import request_session
from ..errors import Unauthenticated
from ..models import User
from .tokens import read_access_token

#: A request that passed authentication: ``request.user`` is the signed-in user.
AuthedRequest: TypeAlias = Request[User, Any, Any]


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Send Authorization: Bearer <token>")
        state = connection.app.state
        user_id = read_access_token(token.strip(), state.settings.jwt_secret)
        if user_id is None:
            raise Unauthenticated("The token is invalid or has expired")
        user = await request_session(connection.scope, state.db).get(User, user_id)  # type: ignore[arg-type]
        if user is None or user.disabled:
            raise Unauthenticated("The token's user no longer exists or is disabled")
        return AuthenticationResult(user=user, auth=token)
