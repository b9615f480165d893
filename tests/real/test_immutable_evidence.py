"""Evidence that cannot be rewritten, on MinIO: once a file is available, nothing the service handed
out (a form POST policy, a part URL) can change or re-create its bytes, and a download returns the
recorded bytes; an admin's delete followed by a replay brings nothing back. With Object Lock on (a
lock-enabled bucket), the recorded version cannot be deleted even with the service's own store
credentials while its hold or retention lasts; an admin's delete lifts a legal hold, bypasses a
governance retention, and is refused under compliance retention — each audited."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlmodel import select

from tests.api.helpers import (
    MIB,
    admin,
    assert_problem,
    backend_db,
    complete,
    download,
    new_log,
    new_user,
    put_parts,
    run_reaper,
    sign,
    start_upload,
    upload_file,
)
from tests.api.test_uppy_contract import anonymous, endpoint, new_link
from tests.conftest import Backend, real_settings, serve
from tests.services import MariaDB, MinIO
from tests.store import s3_client
from upload_plane.models import StorePurge, utcnow

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def evidence(mariadb: MariaDB, minio: MinIO) -> Iterator[Backend]:
    """A server on a bucket of its own, without Object Lock (what every S3 offers)."""
    settings = real_settings(mariadb.create_database("immutable"), minio, s3_bucket="evidence-immutable")
    with serve(settings) as url:
        yield Backend("real", settings, url)


def form_upload(http: httpx.Client, anon: httpx.Client, base: str, data: bytes) -> tuple[dict[str, Any], str]:
    """A form upload through an upload link, settled: the form (to replay) and the file's id."""
    params = anon.get(f"{base}/s3/params", params={"filename": "photo.jpg", "metadata[size]": str(len(data))})
    assert params.status_code == 200, params.text
    form = params.json()
    posted = http.post(form["url"], data=form["fields"], files={"file": ("photo.jpg", data)})
    assert posted.status_code == 204, posted.text
    settled = anon.post(f"{base}/s3/settle", params={"key": form["fields"]["key"]})
    assert settled.status_code == 200 and settled.json()["status"] == "completed", settled.text
    return form, str(settled.json()["file_id"])


def replay(http: httpx.Client, form: dict[str, Any], data: bytes) -> int:
    return http.post(form["url"], data=form["fields"], files={"file": ("photo.jpg", data)}).status_code


def head(backend: Backend, key: str) -> dict[str, Any] | None:
    try:
        return dict(s3_client(backend.settings).head_object(Bucket=backend.settings.s3_bucket, Key=key))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


async def purges_due_now(backend: Backend) -> None:
    """Time passes: the policies handed out have expired."""
    async with backend_db(backend) as session:
        for row in (await session.exec(select(StorePurge))).all():
            row.not_before = utcnow() - timedelta(seconds=1)
            session.add(row)
        await session.commit()


def test_a_replayed_post_policy_never_changes_or_recreates_a_file(
    evidence: Backend, http: httpx.Client
) -> None:
    original, other = os.urandom(4096), os.urandom(4096)
    with new_user(evidence) as manager, anonymous(evidence) as anon, admin(evidence) as adm:
        log = new_log(manager)
        base = endpoint(new_link(manager, log["id"]))
        form, file_id = form_upload(http, anon, base, original)
        file = manager.get(f"/files/{file_id}").json()
        assert form["fields"]["key"] != file["key"]  # the form never writes the file's key

        assert replay(http, form, other) == 204  # the store takes it (it cannot refuse a POST) ...
        assert download(http, manager, file_id) == original  # ... but not at the file's key
        assert head(evidence, file["key"])["ETag"].strip('"') == file["etag"]  # type: ignore[index]

        assert adm.delete(f"/files/{file_id}").status_code == 204
        assert replay(http, form, other) == 204
        assert head(evidence, file["key"]) is None  # the delete stands: nothing came back
        assert head(evidence, form["fields"]["key"]) is not None  # the replay landed on its own key
        asyncio.run(purges_due_now(evidence))
        assert asyncio.run(run_reaper(evidence)).purged >= 1
        assert head(evidence, form["fields"]["key"]) is None  # emptied once the policy is dead
        assert head(evidence, file["key"]) is None


def test_a_replayed_part_url_is_refused_after_complete_and_after_delete(
    evidence: Backend, http: httpx.Client
) -> None:
    data = os.urandom(6 * MIB)
    with new_user(evidence) as api, admin(evidence) as adm:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=5 * MIB)
        urls = sign(api, upload["id"], [1, 2])
        put_parts(http, api, upload, data, [1, 2])
        file = complete(api, upload["id"]).json()
        for when in ("after complete", "after delete"):
            again = http.put(urls[1]["url"], content=os.urandom(5 * MIB), headers=urls[1]["headers"])
            assert again.status_code == 404 and b"NoSuchUpload" in again.content, (when, again.text[:200])
            if when == "after complete":
                assert download(http, api, file["id"]) == data
                assert adm.delete(f"/files/{file['id']}").status_code == 204
        assert head(evidence, file["key"]) is None


def locked(mariadb: MariaDB, minio: MinIO, mode: str) -> Iterator[Backend]:
    name = mode.replace(":", "-")
    settings = real_settings(
        mariadb.create_database(f"locked_{name.replace('-', '_')}"), minio,
        s3_bucket=f"evidence-locked-{name}", object_lock=mode,
    )  # fmt: skip
    with serve(settings) as url:
        yield Backend("real", settings, url)


@pytest.fixture(scope="module", params=["legal-hold", "governance:1", "compliance:1"])
def lock_backend(request: pytest.FixtureRequest, mariadb: MariaDB, minio: MinIO) -> Iterator[Backend]:
    yield from locked(mariadb, minio, request.param)


def batch_upload(http: httpx.Client, api: httpx.Client, log_id: str, data: bytes) -> dict[str, Any]:
    """A small file in a batch: one conditional PUT, completed by the batch complete."""
    entry = {"filename": "frame.jpg", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    [item] = api.post(f"/logs/{log_id}/uploads/batch", json={"files": [entry]}).json()["items"]
    assert http.put(item["put"]["url"], content=data, headers=item["put"]["headers"]).status_code == 200
    [done] = api.post("/uploads/batch/complete", json={"uploads": [{"id": item["upload"]["id"]}]}).json()[
        "items"
    ]
    assert done["status"] == "done", done
    return dict(done["file"])


def delete_version(backend: Backend, key: str, version: str, bypass: bool) -> str:
    """Delete one version straight from the store with the service's own credentials."""
    client = s3_client(backend.settings)
    try:
        client.delete_object(
            Bucket=backend.settings.s3_bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass
        )
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "deleted"


def test_a_locked_version_outlives_the_stores_own_credentials(
    lock_backend: Backend, http: httpx.Client
) -> None:
    backend, mode = lock_backend, lock_backend.settings.lock.mode
    data, small = os.urandom(6 * MIB), os.urandom(2048)
    with new_user(backend) as api, anonymous(backend) as anon, admin(backend) as adm:
        log = new_log(api)
        files = [upload_file(http, api, log["id"], data, part_size=5 * MIB)]
        _, form_id = form_upload(http, anon, endpoint(new_link(api, log["id"])), small)
        files.append(api.get(f"/files/{form_id}").json())
        files.append(batch_upload(http, api, log["id"], small))  # its PUT signs the lock itself
        for file in files:
            assert file["version_id"], file
            refused = delete_version(backend, file["key"], file["version_id"], bypass=False)
            assert refused in ("InvalidRequest", "AccessDenied"), (mode, refused)
            if mode != "governance":  # governance yields to credentials allowed to bypass it
                assert delete_version(backend, file["key"], file["version_id"], bypass=True) != "deleted"
            assert head(backend, file["key"])["VersionId"] == file["version_id"]  # type: ignore[index]
            assert download(http, api, file["id"]) == (data if file["size"] == len(data) else small)

        deleted = adm.delete(f"/files/{files[0]['id']}")
        if mode == "compliance":
            assert_problem(deleted, 409, "FILE_RETAINED")
            assert download(http, api, files[0]["id"]) == data  # nothing changed
            return
        assert deleted.status_code == 204, deleted.text
        assert head(backend, files[0]["key"]) is None
        events = adm.get(f"/cases/{log['case_id']}/audit", params={"limit": 100}).json()["items"]
        [event] = [e for e in events if e["action"] == "file.deleted"]
        lifted = {"legal-hold": "legal hold lifted", "governance": "governance retention bypassed"}[mode]
        assert event["details"]["object_lock"] == lifted


def test_a_single_put_url_replayed_after_an_admin_delete_brings_nothing_back(
    evidence: Backend, http: httpx.Client
) -> None:
    """A single PUT's URL writes only where nothing is (If-None-Match): after an admin's delete an
    empty tombstone holds the key until the URL is dead, then the reaper empties the key."""
    from tests.api.test_batches import complete as complete_batch
    from tests.api.test_batches import put, small_files
    from tests.api.test_batches import start as start_batch

    [(entry, data)] = small_files(1)
    with new_user(evidence) as api, admin(evidence) as adm:
        log = new_log(api)
        [item] = start_batch(api, f"/logs/{log['id']}/uploads/batch", [entry])["items"]
        assert put(http, item, data) == 200
        [done] = complete_batch(api, [item["upload"]["id"]])["items"]
        key = item["upload"]["key"]
        assert adm.delete(f"/files/{done['file']['id']}").status_code == 204
        for replay in (os.urandom(len(data)), data):
            assert put(http, item, replay) == 412  # the tombstone is there
        tomb = head(evidence, key)
        assert tomb is not None and tomb["ContentLength"] == 0
        asyncio.run(purges_due_now(evidence))
        assert asyncio.run(run_reaper(evidence)).purged >= 1
        assert head(evidence, key) is None
        assert api.get(f"/files/{done['file']['id']}").status_code == 404
