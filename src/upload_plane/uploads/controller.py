"""HTTP routes of uploads: start, sign parts, status, list, complete, abort."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody

from ..auth.middleware import AuthedRequest
from ..cases.controller import PageLimit
from ..files.controller import file_out
from ..files.schemas import FileOut
from ..openapi import OptionalBody
from ..pagination import PageRequest
from ..problems import problems
from .abort import abort_upload
from .complete import complete_upload
from .context import Uploads
from .kinds import PartState
from .queries import UploadRecord
from .read import get_upload, list_mine
from .schemas import (
    CompleteRequest,
    PartStateOut,
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
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                required=False,
                max_length=200,
                pattern=whole(r"[\x21-\x7e]+"),
                description="send the same key again (an answer was lost) to get the same upload back",
            ),
        ] = None,
    ) -> UploadOut:
        wanted = NewUpload(
            filename=data.filename,
            size=data.size,
            content_type=data.content_type,
            sha256=data.sha256.lower() if data.sha256 else None,
            crc64nvme=data.crc64nvme,
            checksum_algorithm=data.checksum_algorithm,
            part_size=data.part_size,
        )
        return upload_out(
            await start_upload(uploads, request.user, log_id, wanted, idempotency_key=idempotency_key)
        )


class UploadController(Controller):
    path = "/uploads"
    tags = ["uploads"]

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
