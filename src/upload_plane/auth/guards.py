"""Route guards: role checks live on the route, not inside handlers."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ..errors import NotFound


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Administration routes do not exist for anyone else (404, like everything one may not see).

    Litestar's automatic OPTIONS handler (204 with the path's ``Allow`` header) runs the controller's
    guards too, but OPTIONS requests are not authenticated (``AuthMiddleware`` leaves them alone), so
    there is no user to check: it answers as on every other path.
    """
    if isinstance(connection, Request) and connection.method == "OPTIONS":
        return
    if not connection.user.is_admin:
        raise NotFound("No such resource")
