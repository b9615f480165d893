"""HTTP route of processing results: a file's preview."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ..auth.middleware import AuthedRequest
from ..files.controller import REDIRECT, redirect_or_body
from ..files.schemas import DownloadOut
from ..problems import problems
from .service import ProcessingService


class PreviewController(Controller):
    path = "/"
    tags = ["files"]

    @get(
        "/files/{file_id:str}/preview",
        summary="The file's preview (a JPEG at most 512 px): 307 to a presigned GET, or {url, expires_at}",
        description="404 PREVIEW_NOT_AVAILABLE when the file has none (not processed yet, or no decoder).",
        responses={**problems(), 307: REDIRECT},
    )
    async def preview(
        self,
        file_id: FromPath[str],
        request: AuthedRequest,
        processing: NamedDependency[ProcessingService],
        redirect: FromQuery[bool] = True,
    ) -> Response[DownloadOut]:
        return redirect_or_body(await processing.preview_link(request.user, file_id), redirect)
