"""Route guards: role checks live on the route, not inside handlers."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ..errors import NotFound


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Administration routes do not exist for anyone else (404, like everything one may not see)."""
    if not connection.user.is_admin:
        raise NotFound("No such resource")
