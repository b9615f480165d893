"""HTTP routes of auth: sign in and out, refresh, the current user, tokens, user administration."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from sqlmodel.ext.asyncio.session import AsyncSession

from ..cases.controller import PageLimit
from ..errors import CrossSiteRequest, UnsupportedMediaType
from ..models import AuthSession, PersonalAccessToken, User
from ..openapi import OptionalBody, sent_fields
from ..pagination import PageRequest
from ..problems import problems
from .guards import admin_only
from .middleware import (
    SESSION_COOKIE,
    AuthedRequest,
    client_info,
    from_this_site,
    optional_principal,
)
from .schemas import (
    CredentialsRevoked,
    LoginRequest,
    LogoutRequest,
    PasswordSet,
    RefreshRequest,
    SessionOut,
    SessionPage,
    TokenCreate,
    TokenCreated,
    TokenOut,
    TokenPage,
    TokenResponse,
    UserCreate,
    UserOut,
    UserPage,
    UserUpdate,
)
from .service import AuthService, SignIn


def provide_auth_service(db_session: NamedDependency[AsyncSession], state: State) -> AuthService:
    return AuthService(db_session, state.settings, state.hashing, state.db)


DEPENDENCIES = {"auth": Provide(provide_auth_service, sync_to_thread=False)}


def user_out(user: User) -> UserOut:
    return msgspec.convert(user, UserOut, from_attributes=True)


def token_out(row: PersonalAccessToken) -> TokenOut:
    return msgspec.convert(row, TokenOut, from_attributes=True)


def session_out(row: AuthSession) -> SessionOut:
    return msgspec.convert(row, SessionOut, from_attributes=True)


def json_from_this_site(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Sign-in takes JSON only, and not from another site: a cross-site HTML form (whose body is
    ``text/plain``, urlencoded or multipart) cannot sign the browser in as someone else (login
    CSRF). Checked before the body is read, so a refused sign-in sets no cookie."""
    if not from_this_site(connection, if_unsaid=True):
        raise CrossSiteRequest("sign-in is refused from another site")
    media_type = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("send the sign-in as JSON (Content-Type: application/json)")


def session_cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    """HttpOnly, SameSite=Lax, Secure outside development; cleared with an empty value and age 0."""
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.secure_cookies,
    )


def signed_in(
    request: Request[Any, Any, Any], sign_in: SignIn, *, set_cookie: bool
) -> Response[TokenResponse]:
    body = TokenResponse(sign_in.access_token, "bearer", sign_in.expires_in, sign_in.refresh_token)
    cookies = [session_cookie(request, sign_in.session_cookie, sign_in.session_ttl)] if set_cookie else []
    return Response(body, cookies=cookies, headers={"Cache-Control": "no-store"})


class LoginController(Controller):
    """Public: no credentials needed (logout revokes whatever it is given)."""

    path = "/auth"
    tags = ["auth"]
    dependencies = DEPENDENCIES

    @post(
        "/login",
        summary="Sign in: access token, refresh token and the session cookie",
        description=(
            "JSON only (else 415 UNSUPPORTED_MEDIA_TYPE); from a browser, only from this site or a "
            "configured origin (else 403 CROSS_SITE_REQUEST). Failed sign-ins are counted per account "
            "and client address, and per account (429 RATE_LIMITED)."
        ),
        status_code=200,
        responses=problems(401, 403, 415, 429, public=True),
        guards=[json_from_this_site],
    )
    async def login(
        self,
        data: JSONBody[LoginRequest],
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
    ) -> Response[TokenResponse]:
        sign_in = await auth.login(data.username, data.password, client_info(request))
        return signed_in(request, sign_in, set_cookie=True)

    @post(
        "/refresh",
        summary="Rotate a refresh token: new access and refresh tokens (the old one stops working)",
        status_code=200,
        responses=problems(401, public=True),
    )
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
    ) -> Response[TokenResponse]:
        sign_in = await auth.refresh(data.refresh_token, client_info(request))
        return signed_in(request, sign_in, set_cookie=False)

    @post(
        "/logout",
        summary="End the sign-in of the credentials sent (and of refresh_token); clears the cookie",
        status_code=204,
        responses={
            **problems(403, public=True),
            204: ResponseSpec(data_container=None, description="Signed out; the session cookie is cleared"),
        },
        operation_class=OptionalBody,
    )
    async def logout(
        self,
        request: Request[Any, Any, Any],
        auth: NamedDependency[AuthService],
        data: JSONBody[LogoutRequest | None] = None,
    ) -> Response[None]:
        who = await optional_principal(request)
        await auth.logout(who, data.refresh_token if data else None)
        return Response(None, status_code=204, cookies=[session_cookie(request, "", 0)])


class AccountController(Controller):
    path = "/"
    tags = ["auth"]
    dependencies = DEPENDENCIES

    @get("/me", summary="The signed-in user", responses=problems())
    async def me(self, request: AuthedRequest, auth: NamedDependency[AuthService]) -> UserOut:
        return user_out(await auth.get_user(request.user.id))

    @post(
        "/tokens",
        summary="Issue a personal access token (shown once)",
        description="Not with a personal access token: 403 CREDENTIAL_NOT_ALLOWED.",
        responses=problems(403),
    )
    async def create_token(
        self, data: JSONBody[TokenCreate], request: AuthedRequest, auth: NamedDependency[AuthService]
    ) -> Response[TokenCreated]:
        issued = await auth.issue_personal_token(request.user, data.name, data.expires_in_days)
        body = TokenCreated(issued.row.id, issued.row.name, issued.token, issued.row.expires_at)
        return Response(body, status_code=201, headers={"Cache-Control": "no-store"})

    @get("/tokens", summary="The caller's personal access tokens (without the secrets)", responses=problems())
    async def list_tokens(
        self,
        request: AuthedRequest,
        auth: NamedDependency[AuthService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> TokenPage:
        page = await auth.list_personal_tokens(request.user.id, PageRequest.parse(limit, cursor))
        return TokenPage(items=[token_out(t) for t in page.items], next_cursor=page.next_cursor)

    @delete("/tokens/{token_id:str}", summary="Revoke a personal access token", responses=problems(403))
    async def revoke_token(
        self, token_id: FromPath[str], request: AuthedRequest, auth: NamedDependency[AuthService]
    ) -> None:
        await auth.revoke_personal_token(request.user, token_id)


class UserAdminController(Controller):
    """Administrators only; for anyone else these routes do not exist (404)."""

    path = "/users"
    tags = ["users"]
    dependencies = DEPENDENCIES
    guards = [admin_only]

    @post("/", summary="Create a user (admin)", responses=problems(403, 409))
    async def create_user(
        self, data: JSONBody[UserCreate], request: AuthedRequest, auth: NamedDependency[AuthService]
    ) -> UserOut:
        return user_out(await auth.create_user(request.user, data.username, data.password, data.role))

    @get("/", summary="List users (admin)", responses=problems())
    async def list_users(
        self,
        auth: NamedDependency[AuthService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> UserPage:
        page = await auth.list_users(PageRequest.parse(limit, cursor))
        return UserPage(items=[user_out(u) for u in page.items], next_cursor=page.next_cursor)

    @patch(
        "/{user_id:str}",
        summary="Change a user's role or disable them (admin); disabling ends every sign-in and token",
        responses=problems(403, 409),
    )
    async def update_user(
        self,
        user_id: FromPath[str],
        data: JSONBody[UserUpdate],
        request: AuthedRequest,
        auth: NamedDependency[AuthService],
    ) -> UserOut:
        user = await auth.get_user(user_id)
        return user_out(await auth.update_user(request.user, user, sent_fields(data)))

    @put(
        "/{user_id:str}/password",
        summary="Set a user's password (admin); ends every sign-in and token of the user",
        status_code=204,
        responses=problems(403),
    )
    async def set_password(
        self,
        user_id: FromPath[str],
        data: JSONBody[PasswordSet],
        request: AuthedRequest,
        auth: NamedDependency[AuthService],
    ) -> None:
        await auth.set_password(request.user, await auth.get_user(user_id), data.password)

    @get("/{user_id:str}/sessions", summary="A user's sign-ins, newest first (admin)", responses=problems())
    async def list_sessions(
        self,
        user_id: FromPath[str],
        auth: NamedDependency[AuthService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> SessionPage:
        user = await auth.get_user(user_id)
        page = await auth.list_sessions(user.id, PageRequest.parse(limit, cursor))
        return SessionPage(items=[session_out(s) for s in page.items], next_cursor=page.next_cursor)

    @delete(
        "/{user_id:str}/sessions/{session_id:str}",
        summary="End one sign-in of a user: its access tokens, cookie and refresh tokens (admin)",
        responses=problems(403),
    )
    async def revoke_session(
        self,
        user_id: FromPath[str],
        session_id: FromPath[str],
        request: AuthedRequest,
        auth: NamedDependency[AuthService],
    ) -> None:
        await auth.revoke_session(request.user, user_id, session_id)

    @get(
        "/{user_id:str}/tokens",
        summary="A user's personal access tokens, without the secrets (admin)",
        responses=problems(),
    )
    async def list_user_tokens(
        self,
        user_id: FromPath[str],
        auth: NamedDependency[AuthService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> TokenPage:
        user = await auth.get_user(user_id)
        page = await auth.list_personal_tokens(user.id, PageRequest.parse(limit, cursor))
        return TokenPage(items=[token_out(t) for t in page.items], next_cursor=page.next_cursor)

    @delete(
        "/{user_id:str}/tokens/{token_id:str}",
        summary="Revoke a personal access token of a user (admin)",
        responses=problems(403),
    )
    async def revoke_user_token(
        self,
        user_id: FromPath[str],
        token_id: FromPath[str],
        request: AuthedRequest,
        auth: NamedDependency[AuthService],
    ) -> None:
        await auth.revoke_personal_token(request.user, token_id, user_id)

    @post(
        "/{user_id:str}/revoke",
        summary="End every sign-in and personal access token of a user (admin)",
        status_code=200,
        responses=problems(403),
    )
    async def revoke_all(
        self, user_id: FromPath[str], request: AuthedRequest, auth: NamedDependency[AuthService]
    ) -> CredentialsRevoked:
        ended = await auth.end_credentials(request.user, await auth.get_user(user_id), "admin")
        return CredentialsRevoked(ended.sessions, ended.tokens)
