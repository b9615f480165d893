"""A small blocking facade over the async client, for scripts:

    from upload_plane.client import Client

    client = Client("https://evidence.example.org", token="uppat_...")
    [result] = client.upload("bodycam.mp4", log_id="...")
    client.download(result.file_id, "copy.mp4")

Each call runs its own event loop (so do not call it from inside one; use :class:`Api` there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .api import DEFAULT_API_URL, Api, Case, FileInfo, Log, Retry

if TYPE_CHECKING:
    from .download import DownloadResult
    from .transfer import Progress
    from .upload import UploadResult

T = TypeVar("T")


class Client:
    def __init__(
        self, api_url: str = DEFAULT_API_URL, token: str | None = None, *, retry: Retry | None = None
    ) -> None:
        self.api_url = api_url
        self.token = token
        self.retry = retry or Retry()

    def _run(self, work: Callable[[Api], Awaitable[T]]) -> T:
        async def main() -> T:
            async with Api(self.api_url, self.token, retry=self.retry) as api:
                return await work(api)

        return asyncio.run(main())

    def upload(
        self,
        *paths: str | Path,
        log_id: str,
        parallel: int = 4,
        part_size: int | None = None,
        progress: Progress | None = None,
    ) -> list[UploadResult]:
        """Upload files and directories into a log (resuming earlier attempts); one result per file."""
        from .upload import upload_paths

        return self._run(
            lambda api: upload_paths(
                api, log_id, paths, parallel=parallel, part_size=part_size, progress=progress
            )
        )

    def download(self, file_id: str, dest: str | Path | None = None) -> DownloadResult:
        """Download and verify a file; ``dest`` is a path or a directory (default: the current one)."""
        from .download import download_file

        return self._run(lambda api: download_file(api, file_id, dest))

    def cases(self) -> list[Case]:
        return self._run(lambda api: api.cases())

    def logs(self, case_id: str) -> list[Log]:
        return self._run(lambda api: api.logs(case_id))

    def files(self, log_id: str) -> list[FileInfo]:
        return self._run(lambda api: api.files(log_id))

    def file(self, file_id: str) -> FileInfo:
        return self._run(lambda api: api.file(file_id))

    def create_case(self, title: str, reference: str | None = None) -> Case:
        return self._run(lambda api: api.create_case(title, reference))

    def create_log(self, case_id: str, name: str) -> Log:
        return self._run(lambda api: api.create_log(case_id, name))
