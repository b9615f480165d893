"""Several replicas, crashes and reapers on one MariaDB and one MinIO.

- Fifty concurrent completes of one upload spread over three ``upload-plane serve`` processes: one
  CompleteMultipartUpload at the store (read from the replicas' own ``/metrics``), one file.
- A replica SIGKILLed between the store's complete and the database commit: the next complete heals
  it, and so does the reaper.
- Two reapers started together on 500 expired uploads abort each exactly once.
- 100 starts under random SIGKILLs, each retried with its Idempotency-Key: one upload per start, and
  after one reap every multipart upload open in the store belongs to exactly one ``uploading`` row.

Claims go stale after minutes (``uploads/state.py``); where a test needs a dead worker's claim to be
stale, it moves the claim's time back in the database instead of waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import (
    MIB,
    assert_store_agrees,
    complete,
    download,
    login,
    new_account,
    new_log,
    put_parts,
    sql_rows,
    start_upload,
    store,
)
from tests.conftest import Backend, real_backend
from tests.fakes import CountingStorage
from tests.real.processes import ApiProcess, api_process
from tests.services import MinIO
from upload_plane.db import create_database
from upload_plane.errors import StoredUploadGone
from upload_plane.settings import Settings
from upload_plane.storage import S3Storage
from upload_plane.uploads.context import Uploads
from upload_plane.uploads.reaper import Reaper, ReapReport

pytestmark = pytest.mark.real

DATABASE = "scale_tests"


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A database of this module's own (reaper counts are exact), served in-thread as well."""
    with real_backend(request, DATABASE) as backend:
        yield backend


def query(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (or, for a change, ``[(rows changed,)]``), committed."""
    return sql_rows(settings, sql, *params)


def age_claims(backend: Backend, where: str, *params: Any) -> int:
    """Make the claims of the uploads matching ``where`` look older than any lease; how many."""
    sql = f"UPDATE uploads SET claimed_at = UTC_TIMESTAMP(6) - INTERVAL 1 HOUR WHERE {where}"
    return int(query(backend.settings, sql, *params)[0][0])


def store_calls(replicas: list[ApiProcess], operation: str) -> float:
    """CompleteMultipartUploads (or any operation) sent to the store, summed over the replicas'
    ``/metrics`` and every outcome."""
    total = 0.0
    for replica in replicas:
        text = httpx.get(f"{replica.url}/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "upload_plane_store_call_duration_seconds_count"
                    and sample.labels["operation"] == operation
                ):
                    total += sample.value
    return total


def api_on(replica: ApiProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{replica.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def token_of(backend: Backend) -> str:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        return str(api.headers["Authorization"]).removeprefix("Bearer ")


# -- 1. fifty completes over three replicas ---------------------------------------------------------


def test_fifty_concurrent_completes_over_three_replicas(
    scale: Backend, minio: MinIO, tmp_path: Path, http: httpx.Client
) -> None:
    rounds, callers = 4, 50
    token = token_of(scale)
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(api_process(scale, minio, tmp_path / f"replica-{i}.log")) for i in range(3)
        ]
        apis = [stack.enter_context(api_on(r, token)) for r in replicas]
        log = new_log(apis[0])
        for round_ in range(rounds):
            data = os.urandom(5 * MIB + 1000 + round_)
            # Each call of the upload goes to another replica, as a load balancer spreads them.
            upload = start_upload(apis[round_ % 3], log["id"], data, part_size=5 * MIB)
            put_parts(http, apis[(round_ + 1) % 3], upload, data, [1, 2])
            barrier = threading.Barrier(callers)

            def finish(
                i: int, upload_id: str = upload["id"], gate: threading.Barrier = barrier
            ) -> httpx.Response:
                with api_on(replicas[i % 3], token) as api:
                    assert api.get("/me").status_code == 200  # connected before the gate opens
                    gate.wait()
                    return complete(api, upload_id)

            with ThreadPoolExecutor(max_workers=callers) as pool:
                answers = list(pool.map(finish, range(callers)))
            assert [a.status_code for a in answers] == [200] * callers, {
                a.text for a in answers if a.status_code != 200
            }
            files = {(a.json()["id"], a.json()["status"], a.json()["size"]) for a in answers}
            assert files == {(upload["file_id"], "available", len(data))}
            assert store_calls(replicas, "complete_multipart") == round_ + 1  # one more, from all three
            assert download(http, apis[2], upload["file_id"]) == data
        rows = query(scale.settings, "SELECT COUNT(*) FROM files WHERE log_id = %s", log["id"])
        assert rows == [(rounds,)]


# -- 2. a crash between the store's complete and the commit ---------------------------------------


def crash_mid_complete(
    scale: Backend, minio: MinIO, tmp_path: Path, http: httpx.Client, token: str
) -> tuple[dict[str, Any], bytes]:
    """Upload, then complete on a replica that dies right after the store completed."""
    data = os.urandom(5 * MIB + 4321)
    with (
        api_process(scale, minio, tmp_path / "doomed.log", failpoints="after_store_complete=kill") as doomed,
        api_on(doomed, token) as api,
    ):
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=5 * MIB)
        put_parts(http, api, upload, data, [1, 2])
        with pytest.raises(httpx.TransportError):
            complete(api, upload["id"])
        assert doomed.wait_dead() == -9
    # The store holds the object; the database still says completing (the claim of a dead worker).
    ((status, file_status),) = query(
        scale.settings,
        "SELECT u.status, f.status FROM uploads u JOIN files f ON f.id = u.file_id WHERE u.id = %s",
        upload["id"],
    )
    assert (status, file_status) == ("completing", "uploading")

    async def stored_size() -> int | None:
        async with store(scale) as storage:
            head = await storage.head_object(upload["key"])
            return head.size if head else None

    assert asyncio.run(stored_size()) == len(data)
    return upload, data


def test_a_crash_after_the_store_completed_is_healed_by_the_next_complete(
    scale: Backend, minio: MinIO, tmp_path: Path, http: httpx.Client
) -> None:
    token = token_of(scale)
    upload, data = crash_mid_complete(scale, minio, tmp_path, http, token)
    assert age_claims(scale, "id = %s", upload["id"]) == 1
    with api_process(scale, minio, tmp_path / "healthy.log") as healthy, api_on(healthy, token) as api:
        done = complete(api, upload["id"])
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["size"]) == ("available", len(data))
        assert store_calls([healthy], "complete_multipart") == 0  # found done, not completed again
        assert download(http, api, upload["file_id"]) == data
    assert asyncio.run(assert_store_agrees(scale, upload)) == "completed"


def test_a_crash_after_the_store_completed_is_healed_by_the_reaper(
    scale: Backend, minio: MinIO, tmp_path: Path, http: httpx.Client
) -> None:
    token = token_of(scale)
    upload, data = crash_mid_complete(scale, minio, tmp_path, http, token)
    assert age_claims(scale, "id = %s", upload["id"]) == 1
    report = reap_in_a_process(scale, minio)
    assert report["completed"] >= 1 and report["errors"] == 0, report
    ((size, status),) = query(
        scale.settings, "SELECT size, status FROM files WHERE id = %s", upload["file_id"]
    )
    assert (size, status) == (len(data), "available")
    assert asyncio.run(assert_store_agrees(scale, upload)) == "completed"


def reap_in_a_process(backend: Backend, minio: MinIO) -> dict[str, int]:
    """``upload-plane reap`` as an operator's cron job runs it; what it reported."""
    settings = backend.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")},
        "UPLOAD_PLANE_DATABASE_URL": settings.database_url,
        "UPLOAD_PLANE_S3_ENDPOINT_URL": minio.endpoint,
        "UPLOAD_PLANE_S3_BUCKET": settings.s3_bucket,
        "UPLOAD_PLANE_S3_ACCESS_KEY_ID": minio.access_key,
        "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": minio.secret_key,
    }
    done = subprocess.run(
        [sys.executable, "-m", "upload_plane.cli", "reap"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])["reaper"]
    return report


# -- 3. two reapers, 500 expired uploads ---------------------------------------------------------------


def test_two_reapers_started_together_abort_each_expired_upload_once(scale: Backend) -> None:
    count = 500
    token = token_of(scale)
    with httpx.Client(
        base_url=f"{scale.base_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        log = new_log(api)

        def begin(i: int) -> dict[str, Any]:
            return start_upload(api, log["id"], b"x" * (i + 1))

        with ThreadPoolExecutor(max_workers=8) as pool:
            uploads = list(pool.map(begin, range(count)))
    sql = "UPDATE uploads SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE WHERE log_id = %s"
    assert query(scale.settings, sql, log["id"]) == [(count,)]
    ids = {
        row[0]: row[1]
        for row in query(scale.settings, "SELECT id, s3_upload_id FROM uploads WHERE log_id = %s", log["id"])
    }
    assert len(ids) == count

    reports: list[list[ReapReport]] = [[], []]
    storages = [CountingStorage(S3Storage(scale.settings)) for _ in range(2)]
    gate = threading.Barrier(2)

    def left() -> int:
        sql = "SELECT COUNT(*) FROM uploads WHERE log_id = %s AND status <> 'expired'"
        return int(query(scale.settings, sql, log["id"])[0][0])

    failures: list[BaseException] = []

    def reaper(i: int) -> None:
        async def run() -> None:
            db = create_database(scale.settings)
            try:
                reaper = Reaper(Uploads(db, storages[i], scale.settings))
                gate.wait()
                while True:
                    report = await reaper.run(batch=50)
                    reports[i].append(report)
                    # A reaper that finds every row taken by the other keeps going until none is left
                    # to reap, so both stay in the contest for the whole run.
                    if report.total() == 0 and report.errors == 0 and not await asyncio.to_thread(left):
                        return
            finally:
                await storages[i].aclose()
                await db.dispose()

        try:
            asyncio.run(run())
        except BaseException as exc:  # named by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=reaper, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(not t.is_alive() for t in threads)
    assert not failures, failures

    expired = [sum(r.expired for r in rs) for rs in reports]
    assert sum(expired) == count and all(r.errors == 0 for rs in reports for r in rs), (expired, reports)
    aborted = storages[0].aborted + storages[1].aborted
    assert set(aborted) == set(ids.values()) and set(aborted.values()) == {1}, "each aborted exactly once"
    rows = query(
        scale.settings,
        "SELECT u.status, f.status, u.claim_token FROM uploads u JOIN files f ON f.id = u.file_id "
        "WHERE u.log_id = %s",
        log["id"],
    )
    assert set(rows) == {("expired", "failed", None)}

    async def still_open() -> list[str]:
        async with store(scale) as storage:
            found = []
            for upload in uploads:
                try:
                    await storage.list_parts(upload["key"], ids[upload["id"]])
                    found.append(upload["id"])
                except StoredUploadGone:
                    pass
                found += await storage.list_multipart_uploads(upload["key"])
            return found

    assert asyncio.run(still_open()) == []


# -- 4. starts under random SIGKILLs, retried with their keys --------------------------------------


def test_starts_under_random_kills_each_make_one_upload(scale: Backend, minio: MinIO, tmp_path: Path) -> None:
    starts, workers = 100, 6
    rng = random.Random(20261123)
    token = token_of(scale)
    server = ApiProcess(
        scale,
        minio,
        tmp_path / "crashing.log",
        failpoints="after_start_row=kill:0.04,after_store_create=kill:0.04",
    )
    server.start()
    restart_lock = threading.Lock()
    kills = {"random": 0, "failpoint": 0}

    def ensure_up() -> None:
        with restart_lock:
            if not server.running:
                kills["failpoint"] += 1
                server.start()

    with api_on(server, token) as api:
        log = new_log(api)
    sizes = [rng.randrange(1, 40 * MIB) for _ in range(starts)]
    keys = [f"start-{i}-{rng.getrandbits(64):016x}" for i in range(starts)]
    answers: dict[int, list[str]] = {i: [] for i in range(starts)}
    done = threading.Event()

    def start(i: int) -> None:
        body = {
            "filename": f"clip-{i}.mp4",
            "size": sizes[i],
            "sha256": hashlib.sha256(keys[i].encode()).hexdigest(),
        }
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"start {i} never answered"
            ensure_up()
            try:
                with api_on(server, token) as api:
                    resp = api.post(
                        f"/logs/{log['id']}/uploads", json=body, headers={"Idempotency-Key": keys[i]}
                    )
            except httpx.TransportError:
                continue  # the server died under us: retry with the same key, as clients do
            if resp.status_code in (200, 201):
                answers[i].append(resp.json()["id"])
                return
            assert resp.status_code == 409 and resp.json()["code"] == "UPLOAD_COMPLETING", resp.text

    def killer() -> None:
        while not done.wait(rng.uniform(0.3, 1.2)):  # random moments, not a wait for a condition
            with restart_lock:
                if server.running:
                    server.kill()
                    kills["random"] += 1
                    server.start()

    chaos = threading.Thread(target=killer)
    chaos.start()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(start, range(starts)))
    finally:
        done.set()
        chaos.join(60)
    ensure_up()
    try:
        assert kills["random"] >= 5, kills
        # Every start answered one upload; asked again (its answer lost), it answers the same one.
        with api_on(server, token) as api:
            for i in rng.sample(range(starts), 10):
                body = {
                    "filename": f"clip-{i}.mp4",
                    "size": sizes[i],
                    "sha256": hashlib.sha256(keys[i].encode()).hexdigest(),
                }
                again = api.post(
                    f"/logs/{log['id']}/uploads", json=body, headers={"Idempotency-Key": keys[i]}
                )
                assert again.status_code == 201 and again.json()["id"] == answers[i][0], again.text
    finally:
        server.stop()
    upload_ids = [a[0] for a in answers.values()]
    assert len(set(upload_ids)) == starts

    # A start whose worker died in `creating` is stale after its lease; move it there, then one reap.
    age_claims(scale, "log_id = %s AND status = 'creating'", log["id"])
    report = reap_in_a_process(scale, minio)
    assert report["errors"] == 0, (report, kills)

    rows = query(
        scale.settings,
        "SELECT id, `key`, status, s3_upload_id, idempotency_key FROM uploads WHERE log_id = %s",
        log["id"],
    )
    assert sorted(r[0] for r in rows) == sorted(upload_ids)  # one row per start, none left over
    assert {r[2] for r in rows} == {"uploading"}
    assert sorted(r[4] for r in rows) == sorted(keys)

    async def open_in_store() -> dict[str, list[str]]:
        async with store(scale) as storage:
            return {r[1]: await storage.list_multipart_uploads(r[1]) for r in rows}

    open_uploads = asyncio.run(open_in_store())
    for row in rows:
        assert open_uploads[row[1]] == [row[3]], (row, open_uploads[row[1]], report, kills)
