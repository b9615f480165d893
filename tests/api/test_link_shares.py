"""An upload link's budget: every way an upload through a link ends without a file gives the link its
share back, exactly once; a completed upload keeps it. (The completion step does it, whoever ends
the upload: the link's holder, its issuer through the API, a settle or complete that finds it
expired, the reaper.) Both backends; the real one is MariaDB + MinIO."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.api.helpers import (
    MIB,
    assert_problem,
    expire_upload,
    new_log,
    new_user,
    run_reaper,
    store,
    upload_row,
)
from tests.api.test_uppy_contract import anonymous, endpoint, new_link, upload_id_of_key
from tests.conftest import Backend


def budget(api: httpx.Client, log_id: str) -> tuple[int, int]:
    [link] = api.get(f"/logs/{log_id}/upload-links").json()["items"]
    return link["files_used"], link["bytes_used"]


def start_multipart(anon: httpx.Client, base: str, size: int = 6 * MIB) -> dict[str, Any]:
    created = anon.post(f"{base}/s3/multipart", json={"filename": "a.bin", "metadata": {"size": size}})
    assert created.status_code == 200, created.text
    return dict(created.json())


async def abort_in_the_store(backend: Backend, key: str, upload_id: str) -> None:
    row = await upload_row(backend, upload_id)
    assert row.s3_upload_id is not None
    async with store(backend) as storage:
        await storage.abort_multipart(key, row.s3_upload_id)


ENDINGS = [
    "issuer_aborts",
    "holder_aborts",
    "settle_finds_it_expired",
    "complete_finds_it_gone",
    "reaper_expires",
]


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_upload_that_ends_without_a_file_gives_the_links_share_back_once(
    backend: Backend, ending: str
) -> None:
    with new_user(backend) as issuer, anonymous(backend) as anon:
        log = new_log(issuer)
        link = new_link(issuer, log["id"], max_files=1)
        base = endpoint(link)
        if ending == "settle_finds_it_expired":  # a form upload whose POST never came
            params = anon.get(f"{base}/s3/params", params={"filename": "a.bin", "metadata[size]": "10"})
            assert params.status_code == 200, params.text
            key, capability = params.json()["fields"]["key"], None
        else:
            created = start_multipart(anon, base)
            key, capability = created["key"], quote(created["uploadId"], safe="")
        upload_id = asyncio.run(upload_id_of_key(backend, key))
        assert budget(issuer, log["id"]) == (1, 6 * MIB if capability else 10)
        assert_problem(start_multipart_response(anon, base), 409, "LINK_FILES_EXHAUSTED")

        if ending == "issuer_aborts":
            assert issuer.delete(f"/uploads/{upload_id}").status_code == 204
            assert issuer.delete(f"/uploads/{upload_id}").status_code == 204  # again: nothing more
        elif ending == "holder_aborts":
            for _ in range(2):
                assert (
                    anon.delete(f"{base}/s3/multipart/{capability}", params={"key": key}).status_code == 200
                )
        elif ending == "settle_finds_it_expired":
            asyncio.run(expire_upload(backend, upload_id))
            for _ in range(2):
                settled = anon.post(f"{base}/s3/settle", params={"key": key})
                assert settled.status_code == 200 and settled.json()["status"] == "expired", settled.text
        elif ending == "complete_finds_it_gone":
            asyncio.run(abort_in_the_store(backend, key, upload_id))  # the store purged it
            for _ in range(2):
                done = anon.post(
                    f"{base}/s3/multipart/{capability}/complete", params={"key": key}, json={"parts": []}
                )
                assert done.status_code in (409, 410), done.text
            assert issuer.get(f"/uploads/{upload_id}").json()["status"] == "expired"
        else:
            asyncio.run(expire_upload(backend, upload_id))
            assert asyncio.run(run_reaper(backend)).expired == 1
            assert asyncio.run(run_reaper(backend)).expired == 0

        assert budget(issuer, log["id"]) == (0, 0)  # given back, once
        again = start_multipart_response(anon, base)
        assert again.status_code == 200, again.text
        assert budget(issuer, log["id"]) == (1, 6 * MIB)


def start_multipart_response(anon: httpx.Client, base: str) -> httpx.Response:
    return anon.post(f"{base}/s3/multipart", json={"filename": "b.bin", "metadata": {"size": 6 * MIB}})


def test_a_completed_upload_keeps_its_share(backend: Backend, http: httpx.Client) -> None:
    from tests.api.test_uppy_contract import uppy_post

    with new_user(backend) as issuer, anonymous(backend) as anon:
        log = new_log(issuer)
        link = new_link(issuer, log["id"], max_files=1)
        uppy_post(http, anon, endpoint(link), b"evidence")
        asyncio.run(run_reaper(backend))
        assert budget(issuer, log["id"]) == (1, len(b"evidence"))
        assert_problem(start_multipart_response(anon, endpoint(link)), 409, "LINK_FILES_EXHAUSTED")
