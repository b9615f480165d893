"""The client's batches of small files on both backends, through a transport that loses or alters
answers of the batch routes: a start whose answer never arrived (retried, or the client died) names
the same uploads, a file the store was away for is completed in the next round, and a refused file
is reported alone while the others are done."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import login, new_account, new_log
from tests.cli_helpers import personal_token, random_file, sha256_of
from tests.conftest import Backend
from upload_plane.client.api import Api, Retry
from upload_plane.client.state import ResumeStore
from upload_plane.client.upload import FilesFailed, UploadResult, collect, upload_files

Rewrite = Callable[[httpx.Request, dict[str, Any]], dict[str, Any] | Exception | None]


class Died(Exception):
    """The client process ended here (as a SIGKILL would end it)."""


class Altered(httpx.AsyncBaseTransport):
    """Every request reaches the API; ``rewrite`` may replace an answer's JSON document, or raise
    instead of answering (once it returned something, it is asked no more)."""

    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite: Rewrite | None = rewrite
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.rewrite is None or request.method != "POST" or "/batch" not in request.url.path:
            return response
        await response.aread()
        changed = self.rewrite(request, json.loads(response.content))
        if changed is None:
            return response
        self.rewrite = None
        if isinstance(changed, Exception):
            raise changed
        return httpx.Response(response.status_code, json=changed, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def run(
    backend: Backend,
    token: str,
    log_id: str,
    paths: list[Path],
    state: Path,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[UploadResult]:
    async def go() -> list[UploadResult]:
        async with Api(backend.base_url, token, retry=Retry(attempts=5, base=0.01, cap=0.05)) as api:
            if transport is not None:
                await api.http.aclose()
                api.http = httpx.AsyncClient(
                    base_url=api.http.base_url, headers=api.http.headers, transport=transport
                )
            return await upload_files(api, log_id, collect(paths), resume=ResumeStore(state))

    return asyncio.run(go())


def photos(tmp_path: Path, n: int = 5) -> list[Path]:
    return [random_file(tmp_path / "dcim" / f"IMG_{i}.jpg", 500 + i) for i in range(n)]


@pytest.mark.parametrize("how", ["lost", "died"])
def test_a_batch_start_whose_answer_never_arrived_names_the_same_uploads(
    backend: Backend, tmp_path: Path, how: str
) -> None:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        token, log_id = personal_token(api), new_log(api)["id"]
        sources = photos(tmp_path)
        started: list[list[str]] = []

        def lose(request: httpx.Request, answer: dict[str, Any]) -> Exception | None:
            if not request.url.path.endswith("/uploads/batch"):
                return None
            started.append([i["upload"]["id"] for i in answer["items"]])
            return Died("killed") if how == "died" else httpx.ReadError("reset", request=request)

        if how == "died":
            with pytest.raises(Died):
                run(backend, token, log_id, [tmp_path / "dcim"], tmp_path / "state", Altered(lose))
            results = run(backend, token, log_id, [tmp_path / "dcim"], tmp_path / "state")
        else:
            results = run(backend, token, log_id, [tmp_path / "dcim"], tmp_path / "state", Altered(lose))
        assert sorted(r.upload_id for r in results) == sorted(started[0])
        uploads = api.get("/uploads", params={"log_id": log_id}).json()["items"]
        assert sorted((u["id"], u["status"]) for u in uploads) == sorted((i, "completed") for i in started[0])
        assert {r.filename: r.sha256 for r in results} == {f"dcim/{s.name}": sha256_of(s) for s in sources}
        assert all(r.parts_uploaded == 1 for r in results)


def test_a_file_the_store_was_away_for_is_completed_in_the_next_round(
    backend: Backend, tmp_path: Path
) -> None:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        token, log_id = personal_token(api), new_log(api)["id"]
        photos(tmp_path)

        def store_away(request: httpx.Request, answer: dict[str, Any]) -> dict[str, Any] | None:
            if not request.url.path.endswith("/batch/complete"):
                return None
            first = answer["items"][0]
            away = {
                "status": 503,
                "code": "STORAGE_UNAVAILABLE",
                "detail": "Object storage failed",
                "extra": {},
            }
            answer["items"][0] = {"id": first["id"], "status": "refused", "error": away}
            return answer

        results = run(backend, token, log_id, [tmp_path / "dcim"], tmp_path / "state", Altered(store_away))
        assert len(results) == 5
        files = api.get(f"/logs/{log_id}/files").json()["items"]
        assert sorted(f["id"] for f in files) == sorted(r.file_id for r in results)


def test_a_refused_file_is_reported_alone_and_the_others_are_done(backend: Backend, tmp_path: Path) -> None:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        token, log_id = personal_token(api), new_log(api)["id"]
        sources = photos(tmp_path)

        def refuse_one(request: httpx.Request, answer: dict[str, Any]) -> dict[str, Any] | None:
            if not request.url.path.endswith("/uploads/batch"):
                return None
            no = {"status": 415, "code": "CONTENT_TYPE_NOT_ALLOWED", "detail": "not allowed", "extra": {}}
            answer["items"][2] = {"index": 2, "status": "refused", "error": no}
            return answer

        reported: list[list[UploadResult]] = []

        async def go() -> None:
            async with Api(backend.base_url, token) as client:
                await client.http.aclose()
                client.http = httpx.AsyncClient(
                    base_url=client.http.base_url, headers=client.http.headers, transport=Altered(refuse_one)
                )
                await upload_files(
                    client, log_id, collect([tmp_path / "dcim"]), resume=ResumeStore(tmp_path / "state"),
                    report=reported.append,
                )  # fmt: skip

        with pytest.raises(FilesFailed) as failed:
            asyncio.run(go())
        assert [(item.name, error.code) for item, error in failed.value.failed] == [
            (f"dcim/{sources[2].name}", "CONTENT_TYPE_NOT_ALLOWED")
        ]
        assert failed.value.code == "CONTENT_TYPE_NOT_ALLOWED"
        assert sorted(r.filename for r in reported[0]) == sorted(
            f"dcim/{s.name}" for s in sources if s != sources[2]
        )
        assert not list((tmp_path / "state").glob("batch-*.json")), "a batch state outlived its report"
