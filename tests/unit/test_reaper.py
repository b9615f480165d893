"""The reaper and the crash-safe, idempotent start, at the service level (SQLite, the in-memory
store behind a counting wrapper). The same properties run against MariaDB + MinIO, with real crashes,
in tests/real/test_lifecycle.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta

import anyio
import pytest
from sqlmodel import select, update

from tests.fakes import CountingStorage
from tests.unit.conftest import DATA, Ops, World
from upload_plane.errors import IdempotencyKeyReused, StorageOutcomeUnknown, StorageUnavailable
from upload_plane.models import Upload, utcnow
from upload_plane.storage import Storage
from upload_plane.uploads import state
from upload_plane.uploads.queries import UploadRecord
from upload_plane.uploads.reaper import Reaper
from upload_plane.uploads.state import UploadStatus

pytestmark = pytest.mark.anyio


async def set_row(world: World, upload_id: str, **values: object) -> None:
    async with world.db.sessions() as session:
        await session.exec(update(Upload).where(Upload.id == upload_id).values(**values))
        await session.commit()


def long_ago(status: str = "completing") -> object:
    return utcnow() - state.stale_after(status) - timedelta(seconds=1)


async def test_expired_uploads_are_aborted_in_the_store_once(world: World) -> None:
    uploads = [await world.started() for _ in range(12)]
    for u in uploads:
        await set_row(world, u.id, expires_at=utcnow() - timedelta(seconds=1))
    fresh = await world.started()
    reapers = [Reaper(world.ctx) for _ in range(2)]
    reports = await asyncio.gather(*(r.run(batch=5) for r in reapers), *(r.run(batch=5) for r in reapers))
    reports += [await reapers[0].run()]
    assert sum(r.expired for r in reports) == 12
    assert world.storage.count("abort_multipart") == 12  # each exactly once
    for u in uploads:
        row, file = await world.rows(u.id)
        assert row is not None and file is not None
        assert (row.status, file.status, row.claim_token) == ("expired", "failed", None)
    assert set(world.store.uploads) == {fresh.s3_upload_id}  # the unexpired one stays open


async def test_a_dead_completer_is_reconciled_from_the_store(world: World) -> None:
    done, not_done = await world.started(), await world.started()
    parts = await world.store.list_parts(done.key, done.store_upload_id)
    await world.store.complete_multipart(done.key, done.store_upload_id, parts)  # then it died
    for u in (done, not_done):
        await set_row(world, u.id, status="completing", claim_token="dead", claimed_at=long_ago())
    report = await Reaper(world.ctx).run()
    assert (report.completed, report.handed_back) == (1, 1)
    row, file = await world.rows(done.id)
    assert row is not None and file is not None and (row.status, file.status) == ("completed", "available")
    row, file = await world.rows(not_done.id)
    assert row is not None and file is not None and (row.status, file.status) == ("uploading", "uploading")
    assert (await world.call(lambda u, _: u.complete(world.user, not_done.id))).status == "available"


async def test_dead_aborts_and_deletes_are_finished(world: World) -> None:
    aborting, deleting = await world.started(), await world.started()
    await set_row(world, aborting.id, status="aborting", claim_token="dead", claimed_at=long_ago())
    await set_row(world, deleting.id, status="deleting", claim_token=None, claimed_at=None)  # abandoned
    report = await Reaper(world.ctx).run()
    assert (report.aborted, report.deleted) == (1, 1)
    row, _ = await world.rows(aborting.id)
    assert row is not None and row.status == "aborted"
    assert await world.rows(deleting.id) == (None, None)
    assert not world.store.uploads


async def test_a_start_that_died_before_the_store_answered_is_undone(world: World) -> None:
    upload = await world.started()
    # As if the process died after CreateMultipartUpload but before recording it: the row is
    # creating, and the store holds a multipart upload on its key that no row names.
    await set_row(
        world,
        upload.id,
        status="creating",
        s3_upload_id=None,
        claim_token="dead",
        claimed_at=long_ago("creating"),
    )
    report = await Reaper(world.ctx).run()
    assert (report.forgotten, report.swept) == (1, 1)
    assert await world.rows(upload.id) == (None, None)
    assert not world.store.uploads


async def test_the_same_start_sent_again_is_the_same_upload(world: World) -> None:
    def start(key: str, name: str = "e.bin") -> object:
        return world.call(
            lambda u, _: u.start(
                world.user, world.log_id, filename=name, size=len(DATA), content_type=None, sha256=None,
                part_size=None, idempotency_key=key,
            )
        )  # fmt: skip

    results = await asyncio.gather(*(start("k-1") for _ in range(8)))
    assert len({r.id for r in results}) == 1  # type: ignore[attr-defined]
    assert world.storage.count("create_multipart") == 1
    assert (await start("k-1")).id == results[0].id  # type: ignore[attr-defined]
    with pytest.raises(IdempotencyKeyReused):
        await start("k-1", name="other.bin")
    assert (await start("k-2")).id != results[0].id  # type: ignore[attr-defined]


async def test_a_retry_takes_over_a_dead_start_and_the_reaper_sweeps_its_stray(world: World) -> None:
    first = await world.call(
        lambda u, _: u.start(
            world.user, world.log_id, filename="e.bin", size=len(DATA), content_type=None, sha256=None,
            part_size=None, idempotency_key="k",
        )
    )  # fmt: skip
    stray = first.store_upload_id  # the first start made it, then died before recording it
    await set_row(
        world,
        first.id,
        status="creating",
        s3_upload_id=None,
        claim_token="dead",
        claimed_at=long_ago("creating"),
    )
    again = await world.call(
        lambda u, _: u.start(
            world.user, world.log_id, filename="e.bin", size=len(DATA), content_type=None, sha256=None,
            part_size=None, idempotency_key="k",
        )
    )  # fmt: skip
    assert again.id == first.id and again.status == UploadStatus.UPLOADING
    assert again.store_upload_id != stray and again.needs_sweep
    report = await Reaper(world.ctx).run()
    assert report.swept == 1
    assert set(world.store.uploads) == {again.store_upload_id}
    row, _ = await world.rows(first.id)
    assert row is not None and not row.needs_sweep


class AnswerLost(CountingStorage):
    """The store makes the first multipart upload asked for, but its answer never comes back."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.lose = True

    async def create_multipart(self, key: str, content_type: str, crc64nvme: bool = False) -> str:
        upload_id = await super().create_multipart(key, content_type, crc64nvme)
        if self.lose:
            self.lose = False
            raise StorageOutcomeUnknown("the store's answer never came back")
        return upload_id


def start_with_key(world: World, key: str) -> Awaitable[UploadRecord]:
    return world.call(
        lambda u, _: u.start(
            world.user, world.log_id, filename="e.bin", size=len(DATA), content_type=None, sha256=None,
            part_size=None, idempotency_key=key,
        )
    )  # fmt: skip


async def row_of_key(world: World, key: str) -> Upload:
    async with world.db.sessions() as session:
        return (await session.exec(select(Upload).where(Upload.idempotency_key == key))).one()


@pytest.mark.parametrize("retried", [True, False], ids=["retried", "abandoned"])
async def test_a_start_whose_store_answer_was_lost_leaves_its_key_to_the_reaper(
    world: World, retried: bool
) -> None:
    world.storage = AnswerLost(world.store)
    with pytest.raises(StorageUnavailable):  # 503 to the client
        await start_with_key(world, "k")
    [stray] = world.store.uploads  # the store made one that no row names
    row = await row_of_key(world, "k")
    assert (row.status, row.s3_upload_id, row.needs_sweep, row.claim_token) == ("creating", None, True, None)
    if retried:  # the client sends the start again with its key: the same upload, its own in the store
        again = await start_with_key(world, "k")
        assert again.id == row.id and again.status == UploadStatus.UPLOADING
        report = await Reaper(world.ctx).run()
        assert (report.swept, report.forgotten) == (1, 0)
        assert set(world.store.uploads) == {again.store_upload_id} != {stray}
    else:  # the client never comes back: the reaper aborts what the key holds and removes the rows
        report = await Reaper(world.ctx).run()
        assert (report.swept, report.forgotten) == (1, 1)
        assert not world.store.uploads
        assert await world.rows(row.id) == (None, None)


async def test_a_retry_whose_own_start_fails_leaves_the_dead_starts_stray_to_the_reaper(world: World) -> None:
    first = await start_with_key(world, "k")  # the store made it; the worker died before recording it
    await set_row(
        world, first.id, status="creating", s3_upload_id=None, claim_token="dead",
        claimed_at=long_ago("creating"),
    )  # fmt: skip
    world.store.down = True
    with pytest.raises(StorageUnavailable):  # the retry takes the dead start over, the store is down
        await start_with_key(world, "k")
    world.store.down = False
    row, _ = await world.rows(first.id)
    assert row is not None and (row.status, row.needs_sweep, row.claim_token) == ("creating", True, None)
    report = await Reaper(world.ctx).run()
    assert (report.swept, report.forgotten) == (1, 1)
    assert not world.store.uploads  # the dead start's multipart upload did not outlive its key


async def test_a_retry_waiting_on_a_start_that_fails_and_is_removed_starts_afresh(world: World) -> None:
    """Chaos found it: the first start's create was refused (store down: 503, its rows removed) while
    its retry waited on the ``creating`` row; the retry answered 404 "No such upload". It now starts
    the upload afresh with the same key."""
    gate = world.storage.hold("create_multipart")
    first = asyncio.create_task(start_with_key(world, "k"))
    await anyio.to_thread.run_sync(gate.wait_reached)
    waiters = world.waiters
    uploads = Ops(world.ctx)
    retry = asyncio.create_task(
        uploads.start(
            world.user, world.log_id, filename="e.bin", size=len(DATA), content_type=None, sha256=None,
            part_size=None, idempotency_key="k",
        )
    )  # fmt: skip
    with anyio.fail_after(10):
        while not waiters._events:  # noqa: ASYNC110 (polls until the retry waits on the first claim)
            await asyncio.sleep(0.01)
    world.store.down = True
    gate.release()
    with pytest.raises(StorageUnavailable):
        await first
    world.store.down = False
    upload = await retry
    assert upload.status == UploadStatus.UPLOADING and upload.idempotency_key == "k"
    assert (await row_of_key(world, "k")).id == upload.id
    assert world.storage.count("create_multipart") == 2 and len(world.store.uploads) == 1
