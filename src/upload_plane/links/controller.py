"""HTTP routes of upload links: issue, list and revoke (managers, under /api/v1), and what a link's
holder may read about it (public, ``GET /links/{token}``)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlmodel.ext.asyncio.session import AsyncSession

from ..auth.middleware import AuthedRequest, client_info
from ..cases.controller import PageLimit
from ..models import UploadLink
from ..pagination import PageRequest
from ..problems import problems
from .schemas import LinkCreate, LinkCreated, LinkInfo, LinkOut, LinkPage
from .service import LinkService, link_status


def provide_links(db_session: NamedDependency[AsyncSession], state: State) -> LinkService:
    return LinkService(db_session, state.settings, state.uppy.grants)


def link_out(link: UploadLink) -> LinkOut:
    fields = {n: getattr(link, n) for n in LinkOut.__struct_fields__ if n != "status"}
    return LinkOut(**fields, status=link_status(link))


def base_url(request: Request[Any, Any, Any]) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


class UploadLinkController(Controller):
    path = "/"
    tags = ["upload links"]
    dependencies = {"links": Provide(provide_links, sync_to_thread=False)}

    @post(
        "/logs/{log_id:str}/upload-links",
        summary="Issue an upload link into a log (managers); the token is shown once",
        responses=problems(403),
    )
    async def create(
        self,
        log_id: FromPath[str],
        data: JSONBody[LinkCreate],
        request: AuthedRequest,
        links: NamedDependency[LinkService],
    ) -> LinkCreated:
        issued = await links.create(request.user, log_id, data.expires_in, data.max_files, data.max_bytes)
        base = base_url(request)
        fields = msgspec.structs.asdict(link_out(issued.row))
        return LinkCreated(
            **fields,
            token=issued.token,
            url=f"{base}/u/{issued.token}",
            companion_endpoint=f"{base}/links/{issued.token}",
        )

    @get(
        "/logs/{log_id:str}/upload-links", summary="A log's upload links (managers)", responses=problems(403)
    )
    async def list_links(
        self,
        log_id: FromPath[str],
        request: AuthedRequest,
        links: NamedDependency[LinkService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> LinkPage:
        page = await links.list_for_log(request.user, log_id, PageRequest.parse(limit, cursor))
        return LinkPage(items=[link_out(lk) for lk in page.items], next_cursor=page.next_cursor)

    @delete(
        "/upload-links/{link_id:str}",
        summary="Revoke an upload link (managers); its holders are refused within seconds",
        status_code=200,
        responses=problems(403),
    )
    async def revoke(
        self, link_id: FromPath[str], request: AuthedRequest, links: NamedDependency[LinkService]
    ) -> LinkOut:
        return link_out(await links.revoke(request.user, link_id))


@get(
    "/links/{token:str}",
    tags=["upload links"],
    summary="For a link's holder: the log it uploads into, until when, and what is left",
    responses=problems(404, 410, public=True),
)
async def link_info(token: FromPath[str], request: Request[Any, Any, Any], state: State) -> LinkInfo:
    grant, log_name = await state.uppy.link_info(token, client_info(request))
    files_left = None if grant.max_files is None else max(0, grant.max_files - grant.files_used)
    return LinkInfo(log_name, grant.expires_at, files_left, grant.bytes_left)
