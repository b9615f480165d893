"""Batches at the service level (SQLite, the in-memory store behind a counting wrapper): many small
files started as one conditional PUT each and recorded in a few statements, refusals per file,
idempotent repeats, a batch complete that records every ending in one transaction and keeps each
upload's own compare-and-set. The same properties run over HTTP on both backends in
tests/api/test_batches.py."""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlmodel import func, select, update

from tests.unit.conftest import World
from upload_plane.auth.principal import ClientInfo
from upload_plane.errors import (
    DomainError,
    FileTooLarge,
    IdempotencyKeyReused,
    LinkFilesExhausted,
    ObjectMismatch,
    PartsMissing,
    RateLimited,
)
from upload_plane.links.service import LinkService, resolve
from upload_plane.models import AuditEvent, File, Upload, UploadLink, utcnow
from upload_plane.storage import StoredObject
from upload_plane.uploads.batch import Started, ToComplete, complete_batch, start_batch
from upload_plane.uploads.complete import Claimed, complete_claimed
from upload_plane.uploads.reaper import Reaper
from upload_plane.uploads.start import NewUpload
from upload_plane.uploads.state import UploadStatus, claim_many

pytestmark = pytest.mark.anyio


def small(n: int, size: int = 1000) -> tuple[NewUpload, bytes]:
    data = os.urandom(size)
    return NewUpload(f"photo-{n}.jpg", size, "image/jpeg", sha256=hashlib.sha256(data).hexdigest()), data


@contextmanager
def statements(world: World) -> Iterator[Counter[str]]:
    """Count the hot path's statements (by their first word) while the block runs."""
    seen: Counter[str] = Counter()
    world.db.observe = lambda kind, _seconds, _ok: seen.update([kind.split()[0].upper()])
    try:
        yield seen
    finally:
        world.db.observe = None


async def count(world: World, model: type, *where: object) -> int:
    async with world.db.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(model).where(*where))).one())


async def start_small(world: World, n: int) -> tuple[list[Started], list[bytes]]:
    """``n`` small files started in one batch, and their bytes."""
    wanted = [small(i) for i in range(n)]
    started = await start_batch(world.ctx, world.user, world.log_id, [w for w, _ in wanted])
    assert all(isinstance(a, Started) for a in started), started
    return [a for a in started if isinstance(a, Started)], [d for _, d in wanted]


def put_all(world: World, started: list[Started], datas: list[bytes]) -> None:
    for answer, data in zip(started, datas, strict=True):
        assert answer.put is not None
        assert world.store.put_object(answer.put.url, data, answer.put.headers) == 200


async def test_small_files_go_as_one_put_each_in_a_few_statements_whatever_their_number(
    world: World,
) -> None:
    per_batch = {}
    for n in (2, 100):
        wanted = [small(i) for i in range(n)]
        with statements(world) as seen:
            started = await start_batch(world.ctx, world.user, world.log_id, [w for w, _ in wanted])
        per_batch[n] = seen
        assert all(isinstance(a, Started) and a.upload.kind == "put" for a in started)
        ok = [a for a in started if isinstance(a, Started)]
        put_all(world, ok, [d for _, d in wanted])
        with statements(world) as seen_complete:
            done = await complete_batch(world.ctx, world.user, [ToComplete(a.upload.id) for a in ok])
        per_batch[-n] = seen_complete
        assert [c.error for c in done] == [None] * n
        assert {c.file.status for c in done if c.file} == {"available"}
        assert {c.file.verified_by for c in done if c.file} == {"store"}  # the store checked the SHA-256
    # The same statements for 100 files as for 2: multi-row INSERTs, one UPDATE for every claim, for
    # every ending, for every 100 files (finish.FILE_CHUNK).
    assert per_batch[2] == per_batch[100], per_batch
    assert per_batch[-2] == per_batch[-100], per_batch
    assert per_batch[2]["INSERT"] == 4  # rate counter, files, uploads, events
    # claim, uploads, files; events, processing rows (marked for the relay: processing/outbox.py)
    assert (per_batch[-2]["UPDATE"], per_batch[-2]["INSERT"]) == (3, 2)
    assert world.storage.count("create_multipart") == 0  # no multipart upload at all
    assert world.storage.count("head_object") == 102  # one HEAD per file, nothing else
    assert await count(world, AuditEvent, AuditEvent.action == "upload.started") == 102
    assert await count(world, AuditEvent, AuditEvent.action == "upload.completed") == 102


async def test_a_refused_file_is_refused_alone_and_leaves_nothing(world: World) -> None:
    world.settings = world.settings.with_(max_file_size=10_000)
    good, _ = small(0)
    files: list[NewUpload | DomainError] = [
        good,
        NewUpload("too-big.bin", 10_001),
        IdempotencyKeyReused("refused by the caller"),  # an entry the route refused stays refused
        NewUpload("later.bin", 9_000, checksum_algorithm="CRC64NVME"),  # its CRC64NVME comes at complete
    ]
    started = await start_batch(world.ctx, world.user, world.log_id, files)
    assert isinstance(started[0], Started) and started[0].put is not None
    assert isinstance(started[1], FileTooLarge)
    assert isinstance(started[2], IdempotencyKeyReused)
    # A file whose CRC64NVME the store is to check at complete must go multipart (a PUT signs its
    # checksum when it starts).
    assert isinstance(started[3], Started) and started[3].upload.kind == "multipart"
    assert await count(world, Upload) == 2
    assert await count(world, File) == 2


async def test_the_same_batch_sent_again_answers_the_same_uploads_and_creates_nothing(world: World) -> None:
    wanted = [small(i) for i in range(5)]
    files = [w for w, _ in wanted]
    first = await start_batch(world.ctx, world.user, world.log_id, files, idempotency_key="batch-1")
    put_all(world, [a for a in first if isinstance(a, Started)][:2], [d for _, d in wanted][:2])
    await complete_batch(
        world.ctx, world.user, [ToComplete(a.upload.id) for a in first[:2] if isinstance(a, Started)]
    )
    changed = [*files[:4], NewUpload("another.jpg", 10)]
    again = await start_batch(world.ctx, world.user, world.log_id, changed, idempotency_key="batch-1")
    ids = [a.upload.id if isinstance(a, Started) else None for a in first]
    assert [a.upload.id if isinstance(a, Started) else None for a in again[:4]] == ids[:4]
    assert isinstance(again[4], IdempotencyKeyReused)  # not the file the key started there
    statuses = [a.upload.status for a in again[:4] if isinstance(a, Started)]
    assert statuses == ["completed", "completed", "uploading", "uploading"]
    puts = [a.put is not None for a in again[:4] if isinstance(a, Started)]
    assert puts == [False, False, True, True]  # fresh URLs for the open ones only
    assert await count(world, Upload) == 5
    other_key = await start_batch(world.ctx, world.user, world.log_id, files[:1], idempotency_key="batch-2")
    assert isinstance(other_key[0], Started) and other_key[0].upload.id not in ids


async def test_a_file_not_yet_in_the_store_is_missing_and_handed_back(world: World) -> None:
    started, datas = await start_small(world, 3)
    put_all(world, started[:2], datas[:2])
    done = await complete_batch(world.ctx, world.user, [ToComplete(a.upload.id) for a in started])
    assert [c.file is not None for c in done] == [True, True, False]
    assert isinstance(done[2].error, PartsMissing) and done[2].error.extra["missing_parts"] == [1]
    row, file = await world.rows(started[2].upload.id)
    assert row is not None and file is not None
    assert (row.status, row.claim_token, file.status) == ("uploading", None, "uploading")
    put_all(world, started[2:], datas[2:])
    heads = world.storage.count("head_object")
    again = await complete_batch(world.ctx, world.user, [ToComplete(a.upload.id) for a in started])
    assert [c.file.id if c.file else None for c in again] == [a.upload.file_id for a in started]
    assert world.storage.count("head_object") == heads + 1  # the completed ones answer from the rows


async def test_an_object_that_is_not_the_declared_file_never_becomes_one(world: World) -> None:
    wanted, _ = small(0)
    [started] = await start_batch(world.ctx, world.user, world.log_id, [wanted])
    assert isinstance(started, Started)
    # Other bytes of the planned size at the key, written past the URL's checks (a store that checks
    # nothing); the store reports their own SHA-256.
    other = b"x" * wanted.size
    world.store.objects[started.upload.key] = other
    world.store._heads[started.upload.key] = StoredObject(
        len(other),
        "etag",
        "image/jpeg",
        checksum_sha256=base64.b64encode(hashlib.sha256(other).digest()).decode(),
    )
    [done] = await complete_batch(world.ctx, world.user, [ToComplete(started.upload.id)])
    assert isinstance(done.error, ObjectMismatch)
    row, file = await world.rows(started.upload.id)
    assert row is not None and file is not None and (row.status, file.status) == ("aborted", "failed")
    assert started.upload.key not in world.store.objects  # it belongs to no file


async def test_a_lost_claim_in_a_batch_records_the_others_each_on_its_own(world: World) -> None:
    started, datas = await start_small(world, 3)
    put_all(world, started, datas)
    async with world.db.connect() as conn:
        claims = await claim_many(
            conn, [a.upload.id for a in started], UploadStatus.UPLOADING, UploadStatus.COMPLETING, utcnow()
        )
    assert len(claims) == 3 and len({c.token for c in claims}) == 1  # one token for the batch
    taken = started[1].upload.id  # its claim went stale and another worker took it over
    async with world.db.sessions() as session:
        await session.exec(update(Upload).where(Upload.id == taken).values(claim_token="another worker"))
        await session.commit()
    by_id = {a.upload.id: a.upload for a in started}
    outcomes = await complete_claimed(world.ctx, world.user, [Claimed(c, by_id[c.upload_id]) for c in claims])
    assert {o.upload.id for o in outcomes if o.file is not None} == {
        started[0].upload.id,
        started[2].upload.id,
    }
    row, file = await world.rows(taken)
    assert row is not None and file is not None
    assert (row.status, row.claim_token, file.status) == ("completing", "another worker", "uploading")
    assert await count(world, AuditEvent, AuditEvent.action == "upload.completed") == 2


async def test_rate_limits_and_link_budgets_count_each_file(world: World) -> None:
    world.settings = world.settings.with_(upload_start_rate=5)
    wanted = [small(i)[0] for i in range(8)]
    started = await start_batch(world.ctx, world.user, world.log_id, wanted)
    assert [type(a).__name__ for a in started] == ["Started"] * 5 + ["RateLimited"] * 3
    assert isinstance(started[7], RateLimited) and started[7].extra["retry_after"] >= 1

    world.settings = world.settings.with_(upload_start_rate=1000)
    async with world.db.sessions() as session:
        issued = await LinkService(session, world.settings).create(world.user, world.log_id, 3600, 3, None)
        await session.commit()
    async with world.db.connect() as conn:
        grant = await resolve(conn, issued.token, ClientInfo(None, None))
    started = await start_batch(world.ctx, grant.principal, grant.log_id, wanted[:5], link=grant)
    assert [type(a).__name__ for a in started] == ["Started"] * 3 + ["LinkFilesExhausted"] * 2
    assert isinstance(started[4], LinkFilesExhausted)
    async with world.db.sessions() as session:
        link = await session.get(UploadLink, issued.row.id)
        assert link is not None and (link.files_used, link.bytes_used) == (3, 3000)
    # Through the link, only what came through it is found.
    mine = await start_batch(world.ctx, world.user, world.log_id, wanted[:1])
    assert isinstance(mine[0], Started)
    done = await complete_batch(world.ctx, grant.principal, [ToComplete(mine[0].upload.id)], link=grant)
    assert done[0].error is not None and done[0].error.code == "NOT_FOUND"


async def test_the_reaper_ends_put_uploads_like_any_other(world: World) -> None:
    started, datas = await start_small(world, 2)
    put_all(world, started[:1], datas[:1])  # the first landed, its client never completed
    async with world.db.sessions() as session:
        await session.exec(
            update(Upload)
            .where(Upload.id.in_([a.upload.id for a in started]))  # type: ignore[attr-defined]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    report = await Reaper(world.ctx).run()
    assert (report.completed, report.expired) == (1, 1)
    assert [(await world.rows(a.upload.id))[0].status for a in started] == ["completed", "expired"]  # type: ignore[union-attr]
    assert world.storage.count("abort_multipart") == 0  # nothing was open in the store


async def test_each_file_of_a_large_batch_records_its_own_values(world: World) -> None:
    """250 files: three statements of files (100, 100 and 50 padded with its last file), each row
    with its own ETag and checksums."""
    started, datas = await start_small(world, 250)
    put_all(world, started, datas)
    done = await complete_batch(world.ctx, world.user, [ToComplete(a.upload.id) for a in started])
    assert [c.error for c in done] == [None] * 250
    async with world.db.sessions() as session:
        files = {f.id: f for f in (await session.exec(select(File))).all()}
    for answer, data in zip(started, datas, strict=True):
        file = files[answer.upload.file_id]
        expected = (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), "available", "store")
        assert (file.etag, file.sha256, file.status, file.verified_by) == expected


def test_the_batch_inserts_go_to_mariadb_as_one_statement_each() -> None:
    """asyncmy sends an ``executemany`` as one multi-row INSERT only when the statement has the
    shape it recognises; another shape would silently become one round trip per row."""
    from asyncmy.cursors import RE_INSERT_VALUES
    from sqlalchemy.dialects.mysql import asyncmy

    from upload_plane.audit.service import INSERT_EVENT
    from upload_plane.uploads.queries import INSERT_FILE, INSERT_UPLOAD

    dialect = asyncmy.dialect()
    for statement in (INSERT_FILE, INSERT_UPLOAD, INSERT_EVENT):
        assert RE_INSERT_VALUES.match(statement.compiled(dialect).sql), statement.compiled(dialect).sql
