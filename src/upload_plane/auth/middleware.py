"""Authentication for everything under /api/v1 but the login routes.

A request proves who it is with one of:
- ``Authorization: Bearer <access token>`` (a JWT from login or refresh) or ``Bearer uppat_...``
  (a personal access token);
- the HttpOnly session cookie set at login, for same-origin pages (the web demo, Uppy). A request
  that changes state (not GET/HEAD/OPTIONS, or a GET route marked ``CHANGES_STATE``: one that
  records something, such as Uppy's ``/s3/params`` or a download's audit event) and is
  authenticated by the cookie alone must come from this site: its ``Origin`` is ours or a
  configured CORS origin, or, without ``Origin``, its ``Sec-Fetch-Site`` is ``same-origin`` (or
  ``none``: the user typed or bookmarked it). Otherwise it is refused (403) before anything
  happens, so a cross-site form, link or image cannot create, abort, delete or record anything.
  Bearer tokens are not sent by browsers on their own, so they need no such check.

A credential longer than any this service issues is refused (401) before it is parsed or cached.

The user is loaded on every request (one query, ``credentials.py``), so a disabled account and a
revoked sign-in lose access at once.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from ..errors import CrossSiteRequest, DomainError, Unauthenticated
from . import credentials, tokens
from .principal import ClientInfo, Principal

#: A request that passed authentication: ``request.user`` is who is acting.
AuthedRequest: TypeAlias = Request[Principal, Any, Any]

SESSION_COOKIE = "upload_plane_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``opt`` of a GET route that records something (``opt={CHANGES_STATE: True}``): the session
#: cookie alone is then refused from another site, as for a POST.
CHANGES_STATE = "changes_state"


def client_info(connection: ASGIConnection[Any, Any, Any, Any]) -> ClientInfo:
    address = connection.client.host if connection.client else None
    return ClientInfo(address=address, user_agent=connection.headers.get("user-agent"))


def from_this_site(connection: ASGIConnection[Any, Any, Any, Any], *, if_unsaid: bool = False) -> bool:
    """The browser says the request comes from this site or a configured origin (``Origin``, or
    ``Sec-Fetch-Site`` ``same-origin``/``none``). ``if_unsaid`` is the answer when the client sends
    neither header: not a browser (a script, an app). Requests authenticated by the cookie (which
    a browser adds by itself) need the browser's word; a login, which carries no such credential,
    only must not come from another site."""
    origin = connection.headers.get("origin")
    if origin is not None:
        return _our_origin(connection, origin)
    site = connection.headers.get("sec-fetch-site")
    return if_unsaid if site is None else site in ("same-origin", "none")


def _our_origin(connection: ASGIConnection[Any, Any, Any, Any], origin: str) -> bool:
    own = f"{connection.url.scheme}://{connection.url.netloc}"
    return origin == own or origin in connection.app.state.settings.cors_origins


def changes_state(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    if connection.scope.get("method", "GET") not in SAFE_METHODS:
        return True
    handler = connection.scope.get("route_handler")
    return handler is not None and bool(handler.opt.get(CHANGES_STATE))


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    state = connection.app.state
    secret = state.settings.jwt_secret
    client = client_info(connection)
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if len(token) > tokens.MAX_CREDENTIAL_LENGTH:  # longer headers never get here (oversize.py)
            raise Unauthenticated("The token is longer than any this service issues")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Send Authorization: Bearer <token>")
        async with state.db.connect() as conn:
            if token.startswith(tokens.PAT_PREFIX):
                return await credentials.from_personal_token(conn, token, client)
            return await credentials.from_jwt(conn, token, tokens.ACCESS, secret, client)
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("Sign in, or send Authorization: Bearer <token>")
    if len(cookie) > tokens.MAX_CREDENTIAL_LENGTH:
        raise Unauthenticated("The session cookie is longer than any this service issues")
    if changes_state(connection) and not from_this_site(connection):
        raise CrossSiteRequest("a request authenticated by the session cookie must come from this site")
    async with state.db.connect() as conn:
        return await credentials.from_jwt(conn, cookie, tokens.SESSION, secret, client)


async def optional_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """Who the request is, if it carries valid credentials (public routes such as logout)."""
    try:
        return await authenticate(connection)
    except CrossSiteRequest:
        raise
    except DomainError:
        return None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        return AuthenticationResult(user=await authenticate(connection), auth=None)
