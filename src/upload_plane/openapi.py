"""What the OpenAPI document must say that Litestar does not derive from a handler by itself."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Operation, RequestBody


@dataclass
class OptionalBody(Operation):
    """The operation of a handler whose JSON body may be left out (``data: JSONBody[X | None] = None``).

    Litestar documents every request body as ``required``, which is wrong for these: a client
    generated from the document would have to send one, and the server accepts none.
    """

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


def sent_fields(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body set (``UNSET`` marks those the client left out)."""
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


class SwaggerPage(SwaggerRenderPlugin):
    """``/docs`` (Swagger UI) that works under the service's Content-Security-Policy: no inline
    script or style. Litestar's page starts Swagger UI from an inline script with the document
    inlined; this one loads the same assets and ``/assets/docs.js``, which starts it with the
    document's URL (and without the online validator, which would load an image from elsewhere)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
<link rel="stylesheet" href="/assets/docs.css">
<script src="{self.js_url}"></script>
<script src="{self.standalone_preset_js_url}"></script>
<script src="/assets/docs.js" defer></script>
</head>
<body><div id="swagger-container"></div></body>
</html>
""".encode()
