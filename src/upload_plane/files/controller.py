"""HTTP routes of files: read, list a log's files, download, delete."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, delete, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_307_TEMPORARY_REDIRECT

from ..auth.middleware import CHANGES_STATE, AuthedRequest
from ..cases.controller import PageLimit
from ..models import File
from ..pagination import PageRequest
from ..problems import problems
from ..processing.service import ProcessingService
from ..uploads.queries import FileRecord
from .schemas import DownloadOut, FileOut, FilePage
from .service import FileService, ListedFile


def file_out(f: File | FileRecord) -> FileOut:
    return msgspec.convert(f, FileOut, from_attributes=True)


#: The 307 of a route that answers with a presigned GET (``redirect_or_body``).
REDIRECT = ResponseSpec(data_container=None, description="Redirect to a presigned GET (Location)")


def redirect_or_body(body: DownloadOut, redirect: bool) -> Response[DownloadOut]:
    """307 to ``body.url``, or ``body`` itself (``?redirect=false``)."""
    if not redirect:
        return Response(body)
    return Response(body, status_code=HTTP_307_TEMPORARY_REDIRECT, headers={"Location": body.url})


def listed_out(listed: ListedFile) -> FileOut:
    out = file_out(listed.file)
    out.uploaded_by, out.upload_link_id = listed.uploaded_by, listed.upload_link_id
    return out


class FileController(Controller):
    path = "/"
    tags = ["files"]

    @get("/logs/{log_id:str}/files", summary="List a log's files", responses=problems())
    async def list_in_log(
        self,
        log_id: FromPath[str],
        request: AuthedRequest,
        files: NamedDependency[FileService],
        processing: NamedDependency[ProcessingService],
        status: FromQuery[str | None] = None,
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> FilePage:
        page = await files.list_in_log(request.user, log_id, status, PageRequest.parse(limit, cursor))
        items = await processing.decorate([listed_out(f) for f in page.items])
        return FilePage(items=items, next_cursor=page.next_cursor)

    @get("/files/{file_id:str}", summary="One file", responses=problems())
    async def read(
        self,
        file_id: FromPath[str],
        request: AuthedRequest,
        files: NamedDependency[FileService],
        processing: NamedDependency[ProcessingService],
    ) -> FileOut:
        return (await processing.decorate([file_out(await files.get(request.user, file_id))]))[0]

    @delete(
        "/files/{file_id:str}",
        summary="Delete a file and its object (admin)",
        responses=problems(403, 409, 502),
    )
    async def delete(
        self, file_id: FromPath[str], request: AuthedRequest, files: NamedDependency[FileService]
    ) -> None:
        await files.delete(request.user, file_id)

    @get(
        "/files/{file_id:str}/download",
        summary="Download: 307 to a presigned GET, or {url, expires_at} with ?redirect=false",
        description=(
            "Records a download event, so with the session cookie alone it must come from this site "
            "(a link on the web demo, or typed: Sec-Fetch-Site same-origin or none): a link or "
            "image on another site gets 403 CROSS_SITE_REQUEST and records nothing."
        ),
        opt={CHANGES_STATE: True},
        responses={**problems(403, 409), 307: REDIRECT},
    )
    async def download(
        self,
        file_id: FromPath[str],
        request: AuthedRequest,
        files: NamedDependency[FileService],
        redirect: FromQuery[bool] = True,
    ) -> Response[DownloadOut]:
        link = await files.download_link(request.user, file_id)
        return redirect_or_body(DownloadOut(url=link.url, expires_at=link.expires_at), redirect)
