"""Requests larger than any this service needs are refused before the framework parses them.

Litestar keeps what it parses of a request in caches of 1,024 entries keyed by what the client sent
(the cookie header, the query string, the path's route and parameters). An entry is as large as the
client made it, so 1,024 cookies of 256 KiB would pin half a gigabyte. Bounding what reaches the
framework bounds those caches in bytes; this service's own caches keep successes only
(``lru.SizedCache``). Refused here, at once:

- an ``Authorization`` header longer than any token this service issues, or ``Cookie`` headers
  longer than ``MAX_COOKIES``: 401 ``UNAUTHENTICATED``;
- a path longer than ``MAX_PATH`` or a query string longer than ``MAX_QUERY``: 414
  ``URI_TOO_LONG`` (a capability in the path that is merely longer than any issued is a 401 of its
  route, ``uppy/capability.py``).
"""

from __future__ import annotations

from typing import Any

from .auth.tokens import MAX_CREDENTIAL_LENGTH
from .errors import DomainError, Unauthenticated, UriTooLong

MAX_AUTHORIZATION = MAX_CREDENTIAL_LENGTH + len("Bearer ") + 16
MAX_COOKIES = 8192  # every cookie of the request together (browsers keep each under 4 KiB)
MAX_PATH = 8192
MAX_QUERY = 16384  # Uppy's /s3/params: a 1,024-character file name, percent-encoded


def refusal(scope: dict[str, Any]) -> DomainError | None:
    """Why the request is refused before anything reads it; ``None`` when it is not."""
    if len(scope["path"]) > MAX_PATH or len(scope.get("query_string", b"")) > MAX_QUERY:
        return UriTooLong(f"paths are limited to {MAX_PATH} characters, query strings to {MAX_QUERY}")
    cookies = 0
    for name, value in scope["headers"]:
        if name == b"authorization" and len(value) > MAX_AUTHORIZATION:
            return Unauthenticated("The Authorization header is longer than any token this service issues")
        if name == b"cookie":
            cookies += len(value)
            if cookies > MAX_COOKIES:
                return Unauthenticated(f"The cookies are longer than {MAX_COOKIES} bytes together")
    return None
