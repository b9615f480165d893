"""HTTP routes of cases, logs and files."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_307_TEMPORARY_REDIRECT

from ..auth.middleware import AuthedRequest
from ..errors import problems
from ..models import Case, File, Log
from ..pagination import PageRequest
from ..uploads.service import UploadService
from .schemas import (
    CaseCreate,
    CaseOut,
    CasePage,
    CaseUpdate,
    DownloadOut,
    FileOut,
    FilePage,
    LogCreate,
    LogOut,
    LogPage,
)
from .service import CaseService

PageLimit = Annotated[int | None, QueryParameter(ge=1, le=500, description="Page size (default 50)")]


def case_out(c: Case) -> CaseOut:
    return CaseOut(
        id=c.id,
        title=c.title,
        reference=c.reference,
        description=c.description,
        created_by=c.created_by,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def log_out(lg: Log) -> LogOut:
    return LogOut(
        id=lg.id,
        case_id=lg.case_id,
        name=lg.name,
        description=lg.description,
        created_by=lg.created_by,
        created_at=lg.created_at,
    )


def file_out(f: File) -> FileOut:
    return FileOut(
        id=f.id,
        log_id=f.log_id,
        case_id=f.case_id,
        filename=f.filename,
        content_type=f.content_type,
        size=f.size,
        key=f.key,
        sha256=f.sha256,
        etag=f.etag,
        status=f.status,
        created_by=f.created_by,
        created_at=f.created_at,
        updated_at=f.updated_at,
    )


class CaseController(Controller):
    path = "/cases"
    tags = ["cases"]

    @post("/", summary="Create a case", responses=problems(409))
    async def create(
        self,
        data: JSONBody[CaseCreate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> CaseOut:
        case = await cases.create_case(request.user, data.title, data.reference, data.description)
        return case_out(case)

    @get("/", summary="List the cases the caller can see", responses=problems())
    async def list(
        self,
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> CasePage:
        page = await cases.list_cases(request.user, PageRequest.parse(limit, cursor))
        return CasePage(items=[case_out(c) for c in page.items], next_cursor=page.next_cursor)

    @get("/{case_id:str}", summary="One case", responses=problems())
    async def read(
        self, case_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> CaseOut:
        return case_out(await cases.get_case(request.user, case_id))

    @patch(
        "/{case_id:str}", summary="Change a case's title, reference or description", responses=problems(409)
    )
    async def update(
        self,
        case_id: FromPath[str],
        data: JSONBody[CaseUpdate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> CaseOut:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        return case_out(await cases.update_case(request.user, case_id, changes))

    @post("/{case_id:str}/logs", summary="Create a log in a case", responses=problems(409))
    async def create_log(
        self,
        case_id: FromPath[str],
        data: JSONBody[LogCreate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> LogOut:
        return log_out(await cases.create_log(request.user, case_id, data.name, data.description))

    @get("/{case_id:str}/logs", summary="List a case's logs", responses=problems())
    async def list_logs(
        self,
        case_id: FromPath[str],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> LogPage:
        page = await cases.list_logs(request.user, case_id, PageRequest.parse(limit, cursor))
        return LogPage(items=[log_out(lg) for lg in page.items], next_cursor=page.next_cursor)


class LogController(Controller):
    path = "/logs"
    tags = ["cases"]

    @get("/{log_id:str}", summary="One log", responses=problems())
    async def read(
        self, log_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> LogOut:
        return log_out(await cases.get_log(request.user, log_id))

    @get("/{log_id:str}/files", summary="List a log's files", responses=problems())
    async def list_files(
        self,
        log_id: FromPath[str],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        status: FromQuery[str | None] = None,
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> FilePage:
        page = await cases.list_files(request.user, log_id, status, PageRequest.parse(limit, cursor))
        return FilePage(items=[file_out(f) for f in page.items], next_cursor=page.next_cursor)


class FileController(Controller):
    path = "/files"
    tags = ["files"]

    @get("/{file_id:str}", summary="One file", responses=problems())
    async def read(
        self, file_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> FileOut:
        return file_out(await cases.get_file(request.user, file_id))

    @delete("/{file_id:str}", summary="Delete a file and its object (admin)", responses=problems(403, 502))
    async def delete(
        self, file_id: FromPath[str], request: AuthedRequest, uploads: NamedDependency[UploadService]
    ) -> None:
        await uploads.delete_file(request.user, file_id)

    @get(
        "/{file_id:str}/download",
        summary="Download: 307 to a presigned GET, or {url, expires_at} with ?redirect=false",
        responses={
            **problems(409),
            307: ResponseSpec(data_container=None, description="Redirect to a presigned GET (Location)"),
        },
    )
    async def download(
        self,
        file_id: FromPath[str],
        request: AuthedRequest,
        uploads: NamedDependency[UploadService],
        redirect: FromQuery[bool] = True,
    ) -> Response[DownloadOut]:
        link = await uploads.download_link(request.user, file_id)
        body = DownloadOut(url=link.url, expires_at=link.expires_at)
        if not redirect:
            return Response(body)
        return Response(body, status_code=HTTP_307_TEMPORARY_REDIRECT, headers={"Location": link.url})
