"""HTTP routes of uploads: start, sign parts, status, list, complete, abort; and batches of them,
for signed-in users (under ``/api/v1``) and for upload links (``/links/{token}/uploads/batch``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody

from ..auth.middleware import AuthedRequest, client_info
from ..cases.controller import PageLimit
from ..errors import DomainError, PartsMissing, ValidationFailed
from ..files.controller import file_out
from ..files.schemas import FileOut
from ..links import service as links
from ..links.service import LinkGrant
from ..openapi import OptionalBody
from ..pagination import PageRequest
from ..problems import problems, status_of
from .abort import abort_upload
from .batch import Completion, StartAnswer, ToComplete, complete_batch, start_batch
from .complete import complete_upload
from .context import Uploads
from .kinds import PartState
from .queries import UploadRecord
from .read import get_upload, list_mine
from .schemas import (
    BatchComplete,
    BatchCompleted,
    BatchCompletedItem,
    BatchFile,
    BatchStart,
    BatchStarted,
    BatchStartedItem,
    CompleteRequest,
    ItemProblem,
    PartStateOut,
    PutUrl,
    SignedPartOut,
    SignRequest,
    SignResponse,
    UploadCreate,
    UploadedPart,
    UploadOut,
    UploadPage,
    UploadStatusOut,
    whole,
)
from .sign import part_state, sign_parts
from .start import NewUpload, start_upload


def upload_out(u: UploadRecord) -> UploadOut:
    return msgspec.convert(u, UploadOut, from_attributes=True)


IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=200,
        pattern=whole(r"[\x21-\x7e]+"),
        description="send the same key again (an answer was lost) to get the same upload(s) back",
    ),
]


def part_state_out(state: PartState) -> PartStateOut:
    return PartStateOut(
        uploaded=[UploadedPart(p.part_number, p.size, p.etag, p.checksum_crc64nvme) for p in state.uploaded],
        missing=state.missing,
        bytes_uploaded=state.bytes_uploaded,
    )


class LogUploadController(Controller):
    path = "/logs/{log_id:str}/uploads"
    tags = ["uploads"]

    @post(
        "/",
        summary="Start a multipart upload into a log (Idempotency-Key makes a retry safe)",
        responses=problems(403, 409, 413, 415, 422, 429, 502),
    )
    async def start(
        self,
        log_id: FromPath[str],
        data: JSONBody[UploadCreate],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
        idempotency_key: IdempotencyKey = None,
    ) -> UploadOut:
        return upload_out(
            await start_upload(
                uploads, request.user, log_id, new_upload(data), idempotency_key=idempotency_key
            )
        )

    @post(
        "/batch",
        summary="Start up to 1,000 uploads into a log at once (each answered alone; Idempotency-Key "
        "makes a retry safe)",
        description="A file of at most one part gets one PUT URL to its final key (no multipart upload); "
        "a larger one a multipart upload, its plan and (when its parts need no checksum of their own) its "
        "first part URLs. Each file is held to the rules of a single start; a refused file does not stop "
        "the others.",
        status_code=200,
        responses=problems(403, 429, 503),
    )
    async def start_batch(
        self,
        log_id: FromPath[str],
        data: JSONBody[BatchStart],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
        idempotency_key: IdempotencyKey = None,
    ) -> BatchStarted:
        files = [batch_file(f) for f in data.files]
        return batch_started(
            await start_batch(uploads, request.user, log_id, files, idempotency_key=idempotency_key)
        )


class UploadController(Controller):
    path = "/uploads"
    tags = ["uploads"]

    @post(
        "/batch/complete",
        summary="Complete up to 1,000 uploads at once (each answered alone: done, missing, refused)",
        status_code=200,
        responses=problems(403, 503),
    )
    async def complete_batch(
        self, data: JSONBody[BatchComplete], request: AuthedRequest, uploads: NamedDependency[Uploads]
    ) -> BatchCompleted:
        return batch_completed(await complete_batch(uploads, request.user, to_complete(data)))

    @get("/", summary="The caller's uploads, e.g. ?status=uploading to resume", responses=problems())
    async def list_uploads(
        self,
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
        status: FromQuery[str | None] = None,
        log_id: FromQuery[str | None] = None,
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> UploadPage:
        page = await list_mine(uploads, request.user, status, log_id, PageRequest.parse(limit, cursor))
        return UploadPage(items=[upload_out(u) for u in page.items], next_cursor=page.next_cursor)

    @get(
        "/{upload_id:str}",
        summary="The upload with live part state from the store",
        responses=problems(410, 502),
    )
    async def read(
        self,
        upload_id: FromPath[str],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
    ) -> UploadStatusOut:
        upload = await get_upload(uploads, request.user, upload_id)
        state = await part_state(uploads, upload)
        fields = msgspec.structs.asdict(upload_out(upload))
        return UploadStatusOut(**fields, parts=part_state_out(state))

    @post(
        "/{upload_id:str}/parts",
        summary="Presigned PUT URLs for parts",
        status_code=200,
        responses=problems(403, 409, 410),
    )
    async def sign(
        self,
        upload_id: FromPath[str],
        data: JSONBody[SignRequest],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
    ) -> SignResponse:
        signed = await sign_parts(
            uploads,
            request.user,
            upload_id,
            data.part_numbers,
            data.checksums_sha256,
            data.checksums_crc64nvme,
        )
        return SignResponse(
            parts=[SignedPartOut(p.part_number, p.url, "PUT", p.headers, p.size) for p in signed.parts],
            expires_at=signed.expires_at,
        )

    @post(
        "/{upload_id:str}/complete",
        summary="Verify parts and finish the file",
        status_code=200,
        responses=problems(403, 409, 410, 502),
        operation_class=OptionalBody,
    )
    async def complete(
        self,
        upload_id: FromPath[str],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
        data: JSONBody[CompleteRequest | None] = None,
    ) -> FileOut:
        hint = [(p.part_number, p.etag) for p in data.parts] if data and data.parts else None
        sha256 = data.sha256.lower() if data and data.sha256 else None
        crc64nvme = data.crc64nvme if data else None
        return file_out(
            await complete_upload(uploads, request.user, upload_id, hint, sha256=sha256, crc64nvme=crc64nvme)
        )

    @delete(
        "/{upload_id:str}",
        summary="Abort the upload; the file becomes failed",
        responses=problems(403, 409, 502),
    )
    async def abort(
        self,
        upload_id: FromPath[str],
        request: AuthedRequest,
        uploads: NamedDependency[Uploads],
    ) -> None:
        await abort_upload(uploads, request.user, upload_id)


async def resolve_link(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The link of ``/links/{token}/...``, resolved before anything else of the request is read (an
    unknown token is 404, a revoked or expired link 410, whatever the body), for ``link_grant``.
    (Litestar's automatic OPTIONS answer runs guards too: it answers as on every other path.)"""
    if isinstance(connection, Request) and connection.method == "OPTIONS":
        return
    uploads: Uploads = connection.app.state.uploads
    async with uploads.db.connect() as conn:
        grant = await links.resolve(conn, connection.path_params["token"], client_info(connection))
    connection.state.link_grant = grant


def link_grant(request: Request[Any, Any, Any]) -> LinkGrant:
    grant: LinkGrant = request.state.link_grant
    return grant


class LinkBatchController(Controller):
    """The batch routes for an upload link's holder (under ``/links/{token}``): into the link's log,
    within its budget (counted per file), completing only what came through the link."""

    path = "/uploads/batch"
    tags = ["upload links"]
    guards = [resolve_link]
    dependencies = {"link": Provide(link_grant, sync_to_thread=False)}

    @post(
        "/",
        summary="Start up to 1,000 uploads through an upload link (as the signed-in batch start)",
        status_code=200,
        responses=problems(404, 410, 429, 503, public=True),
    )
    async def start_batch(
        self,
        data: JSONBody[BatchStart],
        link: NamedDependency[Any],  # a LinkGrant (as Any: Litestar would validate a model per request)
        uploads: NamedDependency[Uploads],
        idempotency_key: IdempotencyKey = None,
    ) -> BatchStarted:
        files = [batch_file(f) for f in data.files]
        started = await start_batch(
            uploads, link.principal, link.log_id, files, idempotency_key=idempotency_key, link=link
        )
        return batch_started(started)

    @post(
        "/complete",
        summary="Complete up to 1,000 uploads started through an upload link",
        status_code=200,
        responses=problems(404, 410, 503, public=True),
    )
    async def complete_batch(
        self, data: JSONBody[BatchComplete], link: NamedDependency[Any], uploads: NamedDependency[Uploads]
    ) -> BatchCompleted:
        return batch_completed(await complete_batch(uploads, link.principal, to_complete(data), link=link))


def new_upload(data: UploadCreate) -> NewUpload:
    return NewUpload(
        filename=data.filename,
        size=data.size,
        content_type=data.content_type,
        sha256=data.sha256.lower() if data.sha256 else None,
        crc64nvme=data.crc64nvme,
        checksum_algorithm=data.checksum_algorithm,
        part_size=data.part_size,
    )


def batch_file(f: BatchFile) -> NewUpload | DomainError:
    """A file of a batch held to the rules of a single start's body (``UploadCreate``)."""
    try:
        checked = msgspec.convert(msgspec.structs.asdict(f), UploadCreate)
    except msgspec.ValidationError as exc:
        return ValidationFailed(str(exc))
    return new_upload(checked)


def item_problem(exc: DomainError) -> ItemProblem:
    return ItemProblem(status_of(exc), exc.code, exc.detail, dict(exc.extra))


def batch_started(answers: list[StartAnswer]) -> BatchStarted:
    items = []
    for index, answer in enumerate(answers):
        if isinstance(answer, DomainError):
            items.append(BatchStartedItem(index, "refused", error=item_problem(answer)))
            continue
        put = answer.put
        items.append(
            BatchStartedItem(
                index,
                "started",
                upload=upload_out(answer.upload),
                put=PutUrl(put.url, "PUT", put.headers, answer.expires_at)
                if put and answer.expires_at
                else None,
                parts=[SignedPartOut(p.part_number, p.url, "PUT", p.headers, p.size) for p in answer.parts]
                or None,
                parts_expire_at=answer.expires_at if answer.parts else None,
            )
        )
    refused = sum(1 for item in items if item.status == "refused")
    return BatchStarted(items=items, started=len(items) - refused, refused=refused)


def to_complete(data: BatchComplete) -> list[ToComplete]:
    return [ToComplete(u.id, u.sha256.lower() if u.sha256 else None, u.crc64nvme) for u in data.uploads]


def batch_completed(completions: list[Completion]) -> BatchCompleted:
    items = []
    for c in completions:
        if c.file is not None:
            items.append(BatchCompletedItem(c.upload_id, "done", file=file_out(c.file)))
        elif isinstance(c.error, PartsMissing):
            missing = list(c.error.extra.get("missing_parts", []))
            items.append(
                BatchCompletedItem(c.upload_id, "missing", missing_parts=missing, error=item_problem(c.error))
            )
        else:
            assert c.error is not None
            items.append(BatchCompletedItem(c.upload_id, "refused", error=item_problem(c.error)))
    counts = {s: sum(1 for i in items if i.status == s) for s in ("done", "missing", "refused")}
    return BatchCompleted(items=items, **counts)
