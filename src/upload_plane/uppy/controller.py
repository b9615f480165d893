"""HTTP routes of the Uppy Companion S3 contract, served twice: ``/s3/...`` for signed-in pages (the
session cookie; a bearer token works too) and ``/links/{token}/s3/...`` for upload links.

The same controller is registered on both routers; each router provides ``caller`` (a ``Scope``:
who calls, for the cold routes) and ``credential`` (what the part-signing route checks without a
query). They are typed ``Any`` for Litestar, which would otherwise re-validate them per request.
Answers are Companion's shapes (what ``@uppy/aws-s3`` reads); errors are problem+json like the rest.
Every route documents 410: through a link that expired or was revoked, that is the answer, whatever
the request.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Annotated, Any
from urllib.parse import parse_qs

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Send
from litestar.types import Scope as Scope_

from ..auth.middleware import CHANGES_STATE, SESSION_COOKIE, authenticate, client_info
from ..auth.principal import ClientInfo
from ..problems import problems
from ..uploads.schemas import MEDIA_TYPE, whole
from .service import Credential, LinkToken, Scope, SessionCookie, UppyService

# Query parameters take their bounds from ``QueryParameter`` (Litestar neither enforces nor documents
# a msgspec ``Meta`` on a query parameter).
Key = Annotated[str, QueryParameter(min_length=1, max_length=1024)]
#: Uppy sends the browser's ``file.type``: a media type, or "" when the browser does not know it. It
#: becomes the object's Content-Type in the store, so it is held to the API's media-type grammar.
_MEDIA_TYPE = whole(f"({MEDIA_TYPE})?")
MediaType = Annotated[str, msgspec.Meta(max_length=255, pattern=_MEDIA_TYPE)]
MediaTypeQuery = Annotated[str, QueryParameter(max_length=255, pattern=_MEDIA_TYPE)]
# What ``GET /s3/params`` reads of the ``metadata[name]=value`` query parameters Uppy sends (the
# file's metadata: a page adds ``size``, and ``log_id`` for users). Declared, so that the document
# says so; the service says what is missing. (Litestar leaves a bound of 0 out of the document.)
MetadataSize = Annotated[
    int | None,
    QueryParameter(
        name="metadata[size]",
        ge=0,
        schema_extra={"minimum": 0},
        description="the file's size in bytes (required)",
    ),
]
MetadataLogId = Annotated[
    str | None,
    QueryParameter(
        name="metadata[log_id]",
        description="the log to upload into (required for users; a link uploads into its own)",
    ),
]


class CreateMultipart(msgspec.Struct):
    filename: Annotated[str, msgspec.Meta(min_length=1, max_length=16_000)]
    type: MediaType = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class CreatedMultipart(msgspec.Struct, rename="camel"):
    upload_id: str
    key: str


class UppySignedPart(msgspec.Struct):
    url: str
    expires: int


class StoredPartOut(msgspec.Struct, rename="pascal"):
    part_number: int
    e_tag: str = msgspec.field(name="ETag")
    size: int


class UppyPart(msgspec.Struct, rename="pascal"):
    part_number: int
    e_tag: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = msgspec.field(name="ETag")


class CompleteMultipart(msgspec.Struct):
    parts: Annotated[list[UppyPart], msgspec.Meta(max_length=10_000)] = msgspec.field(default_factory=list)


class Completed(msgspec.Struct):
    location: str
    key: str


class FormUpload(msgspec.Struct):
    method: str
    url: str
    fields: dict[str, str]
    expires: int


class SettledOut(msgspec.Struct):
    status: str
    file_id: str


def provide_uppy(state: State) -> UppyService:
    return state.uppy  # type: ignore[no-any-return]


async def user_scope(request: Request[Any, Any, Any]) -> Scope:
    return Scope.of_user(await authenticate(request))


async def user_credential(request: Request[Any, Any, Any]) -> Credential:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and "authorization" not in request.headers:
        return SessionCookie(cookie, client_info(request))
    return Scope.of_user(await authenticate(request))  # a bearer token: the full check every time


async def link_scope(token: FromPath[str], request: Request[Any, Any, Any], state: State) -> Scope:
    return await state.uppy.link_scope(token, client_info(request))  # type: ignore[no-any-return]


def link_credential(token: FromPath[str], request: Request[Any, Any, Any]) -> Credential:
    return LinkToken(token, client_info(request))


USER_DEPENDENCIES = {
    "uppy": Provide(provide_uppy, sync_to_thread=False),
    "caller": Provide(user_scope),
    "credential": Provide(user_credential),
}
LINK_DEPENDENCIES = {
    "uppy": Provide(provide_uppy, sync_to_thread=False),
    "caller": Provide(link_scope),
    "credential": Provide(link_credential, sync_to_thread=False),
}


class SignPartFastPath(ASGIMiddleware):
    """Uppy's part-signing route answered without the framework's per-request work (signature
    model, dependency injection, response pipeline), which is most of its cost: the route is called
    once per part and is the one Companion must be beaten on (SPEC §9).

    It does exactly what the handler below does, through the same ``UppyService.sign_part``. On any
    failure it steps aside and the request goes through the handler, which answers the error the
    usual way (problem+json from the one error mapping)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope_, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        try:
            body = await self._sign(scope)
        except Exception:  # the handler redoes the request and maps the error
            await next_app(scope, receive, send)
            return
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_FAST_HEADERS, (b"content-length", str(len(body)).encode())],
        }
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
        await send(start)
        await send(end)

    @staticmethod
    async def _sign(scope: Scope_) -> bytes:
        params = scope["path_params"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=8)
        keys = query.get("key")
        if not keys or len(keys) != 1:
            raise ValueError("no key")
        uppy: UppyService = scope["litestar_app"].state.uppy
        peer = scope.get("client")
        client = ClientInfo(peer[0] if peer else None, None)
        credential: Credential
        if "token" in params:
            credential = LinkToken(params["token"], client)
        else:
            headers = dict(scope["headers"])
            cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1")).get(SESSION_COOKIE)
            if cookie is None or b"authorization" in headers:
                raise ValueError("not a session cookie")
            credential = SessionCookie(cookie.value, client)
        signed = await uppy.sign_part(params["upload_id"], int(params["part_number"]), keys[0], credential)
        return _encode(UppySignedPart(signed.url, signed.expires_in))


_encode = msgspec.json.Encoder().encode
_FAST_HEADERS = [(b"content-type", b"application/json")]  # and the security headers: observe.py


#: What ending an upload (complete, abort) may answer besides its success.
ENDINGS = problems(403, 409, 410, 502)


class UppyController(Controller):
    path = "/s3"
    tags = ["uppy"]

    @get(
        "/params",
        summary="Uppy: a presigned form POST for a small file (exactly metadata[size] bytes)",
        description=(
            "Records a pending upload, so with the session cookie alone it must come from this site "
            "(Sec-Fetch-Site same-origin or none, or an Origin of this site): else 403 CROSS_SITE_REQUEST."
        ),
        responses=problems(403, 409, 410, 413, 415, 429),
        opt={CHANGES_STATE: True},
    )
    async def params(
        self,
        filename: Key,
        caller: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
        type: MediaTypeQuery = "",
        size: MetadataSize = None,
        log_id: MetadataLogId = None,
    ) -> FormUpload:
        metadata = {name: value for name, value in (("size", size), ("log_id", log_id)) if value is not None}
        post_ = await uppy.presign_post(caller, filename, type or None, metadata)
        return FormUpload("POST", post_.url, post_.fields, uppy.settings.part_url_ttl)

    @post(
        "/settle",
        summary="Uppy: a form upload was reported done; promote it once its object exists",
        status_code=200,
        responses=problems(403, 410, 502),
    )
    async def settle(
        self, key: Key, caller: NamedDependency[Any], uppy: NamedDependency[UppyService]
    ) -> SettledOut:
        settled = await uppy.settle(caller, key)
        return SettledOut(settled.status, settled.file_id)

    @post(
        "/multipart",
        summary="Uppy: start a multipart upload (metadata.size required; metadata.log_id for users)",
        status_code=200,
        responses=problems(403, 409, 410, 413, 415, 429, 502),
    )
    async def create(
        self,
        data: JSONBody[CreateMultipart],
        caller: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
    ) -> CreatedMultipart:
        started = await uppy.create_multipart(caller, data.filename, data.type or None, data.metadata)
        return CreatedMultipart(started.upload_id, started.key)

    @get(
        "/multipart/{upload_id:str}/{part_number:int}",
        summary="Uppy: a presigned PUT URL for one part (signs that part's exact size)",
        responses=problems(403, 409, 410),
        middleware=[SignPartFastPath()],
    )
    async def sign_part(
        self,
        upload_id: FromPath[str],
        part_number: FromPath[int],
        key: Key,
        credential: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
    ) -> UppySignedPart:
        signed = await uppy.sign_part(upload_id, part_number, key, credential)
        return UppySignedPart(signed.url, signed.expires_in)

    @get(
        "/multipart/{upload_id:str}",
        summary="Uppy: the parts the store holds",
        responses=problems(403, 410, 502),
    )
    async def list_parts(
        self,
        upload_id: FromPath[str],
        key: Key,
        caller: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
    ) -> list[StoredPartOut]:
        parts = await uppy.list_parts(caller, upload_id, key)
        return [StoredPartOut(p.part_number, p.etag, p.size) for p in parts]

    @post(
        "/multipart/{upload_id:str}/complete",
        summary="Uppy: complete (every planned part is checked in the store)",
        status_code=200,
        responses=ENDINGS,
    )
    async def complete(
        self,
        upload_id: FromPath[str],
        key: Key,
        data: JSONBody[CompleteMultipart],
        caller: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
    ) -> Completed:
        parts = [(p.part_number, p.e_tag) for p in data.parts]
        return Completed(await uppy.complete(caller, upload_id, key, parts), key)

    @delete("/multipart/{upload_id:str}", summary="Uppy: abort", status_code=200, responses=ENDINGS)
    async def abort(
        self,
        upload_id: FromPath[str],
        key: Key,
        caller: NamedDependency[Any],
        uppy: NamedDependency[UppyService],
    ) -> dict[str, Any]:
        await uppy.abort(caller, upload_id, key)
        return {}
