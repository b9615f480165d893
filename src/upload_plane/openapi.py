"""What the OpenAPI document must say that Litestar does not derive from a handler by itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
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
