"""HTTP routes of auth: login, the current user, user administration."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from ..errors import NotFound
from ..models import User
from ..problems import problems
from .middleware import AuthedRequest
from .schemas import LoginRequest, TokenResponse, UserCreate, UserOut
from .service import AuthService


def provide_auth_service(db_session: NamedDependency[Any], request: Request[Any, Any, Any]) -> AuthService:
    settings = request.app.state.settings
    return AuthService(db_session, settings.jwt_secret, settings.access_token_ttl)


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        disabled=user.disabled,
        created_at=user.created_at,
    )


def require_admin(user: User) -> None:
    if user.role != "admin":
        raise NotFound("No such resource")


class LoginController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = {"auth": Provide(provide_auth_service, sync_to_thread=False)}

    @post(
        "/login",
        summary="Exchange username and password for a bearer token",
        status_code=200,
        responses=problems(public=True),
    )
    async def login(self, data: JSONBody[LoginRequest], auth: NamedDependency[AuthService]) -> TokenResponse:
        token = await auth.login(data.username, data.password)
        return TokenResponse(access_token=token.token, token_type="bearer", expires_in=token.expires_in)


class UserController(Controller):
    path = "/"
    tags = ["auth"]
    dependencies = {"auth": Provide(provide_auth_service, sync_to_thread=False)}

    @get("/me", summary="The signed-in user", responses=problems())
    async def me(self, request: AuthedRequest) -> UserOut:
        return user_out(request.user)

    @post("/users", summary="Create a user (admin)", responses=problems(409))
    async def create_user(
        self, data: JSONBody[UserCreate], request: AuthedRequest, auth: NamedDependency[AuthService]
    ) -> UserOut:
        require_admin(request.user)
        return user_out(await auth.create_user(data.username, data.password, data.role))

    @get("/users", summary="List users (admin)", responses=problems())
    async def list_users(self, request: AuthedRequest, auth: NamedDependency[AuthService]) -> list[UserOut]:
        require_admin(request.user)
        return [user_out(u) for u in await auth.list_users()]
