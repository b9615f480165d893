"""The upload state machine at the service level: SQLite, the in-memory store, real asyncio
concurrency, and gates that force the interleavings the races need. Every test also counts what
reached the store. (The same properties are tested over HTTP on MariaDB + MinIO in tests/real.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import pytest
from sqlmodel import select, update

from tests.unit.conftest import DATA, World
from upload_plane.errors import (
    PartsChanged,
    StorageUnavailable,
    UploadNotUploading,
)
from upload_plane.models import AuditEvent, Upload, utcnow
from upload_plane.uploads import state
from upload_plane.uploads.finish import Ending, finish
from upload_plane.uploads.queries import FileRecord
from upload_plane.uploads.state import FileStatus, UploadStatus

T = TypeVar("T")


pytestmark = pytest.mark.anyio


async def gather(*calls: Awaitable[T]) -> list[T | BaseException]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def wait_for_gate(gate: Any) -> None:
    await anyio.to_thread.run_sync(gate.wait_reached)


async def test_concurrent_and_repeated_completes_reach_the_store_once(world: World) -> None:
    upload = await world.started()
    first = await gather(*(world.call(lambda u, _: u.complete(world.user, upload.id)) for _ in range(30)))
    again = await gather(*(world.call(lambda u, _: u.complete(world.user, upload.id)) for _ in range(30)))
    results = first + again
    assert all(isinstance(r, FileRecord) for r in results), [
        r for r in results if not isinstance(r, FileRecord)
    ]
    assert {r.id for r in results if isinstance(r, FileRecord)} == {upload.file_id}
    assert world.storage.count("complete_multipart") == 1
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, file.status, row.claim_token) == ("completed", "available", None)


async def test_abort_waits_for_a_running_complete_and_then_loses(world: World) -> None:
    upload = await world.started()
    gate = world.storage.hold("complete_multipart")
    completing = asyncio.create_task(world.call(lambda u, _: u.complete(world.user, upload.id)))
    await wait_for_gate(gate)
    aborting = asyncio.create_task(world.call(lambda u, _: u.abort(world.user, upload.id)))
    await asyncio.sleep(0.2)
    assert not aborting.done()  # it waits for the claim instead of overwriting it
    gate.release()
    assert (await completing).status == "available"
    with pytest.raises(UploadNotUploading) as lost:
        await aborting
    assert lost.value.extra["upload_status"] == "completed"
    assert world.storage.count("abort_multipart") == 0
    assert world.store.objects == {upload.key: DATA}  # the object stands


async def test_complete_waits_for_a_running_abort_and_then_loses(world: World) -> None:
    upload = await world.started()
    gate = world.storage.hold("abort_multipart")
    aborting = asyncio.create_task(world.call(lambda u, _: u.abort(world.user, upload.id)))
    await wait_for_gate(gate)
    completing = asyncio.create_task(world.call(lambda u, _: u.complete(world.user, upload.id)))
    await asyncio.sleep(0.2)
    assert not completing.done()
    gate.release()
    await aborting
    with pytest.raises(UploadNotUploading) as lost:
        await completing
    assert lost.value.extra["upload_status"] == "aborted"
    assert world.storage.count("complete_multipart") == 0
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, file.status) == ("aborted", "failed")
    assert not world.store.objects and not world.store.uploads


async def test_abort_after_a_complete_whose_answer_was_lost_leaves_the_file_available(world: World) -> None:
    upload = await world.started()
    parts = await world.store.list_parts(upload.key, upload.s3_upload_id)
    await world.store.complete_multipart(upload.key, upload.s3_upload_id, parts)
    with pytest.raises(UploadNotUploading) as lost:
        await world.call(lambda u, _: u.abort(world.user, upload.id))
    assert lost.value.extra["upload_status"] == "completed"
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, file.status) == ("completed", "available")
    stored = await world.store.head_object(upload.key)
    assert stored is not None and file.etag == stored.etag  # the object the store assembled
    # The abort reached the store (which no longer knew the upload) and removed nothing.
    assert world.storage.count("abort_multipart") == 1
    assert world.storage.count("delete_object") == 0 and world.store.objects == {upload.key: DATA}


async def test_a_taken_over_completer_that_wakes_up_late_changes_nothing(world: World) -> None:
    upload = await world.started()
    gate = world.storage.hold("complete_multipart")
    late = asyncio.create_task(world.call(lambda u, _: u.complete(world.user, upload.id)))
    await wait_for_gate(gate)
    async with world.db.sessions() as session:  # the late completer's claim goes stale
        stale = utcnow() - state.CLAIM_STALE_AFTER - timedelta(seconds=1)
        await session.exec(update(Upload).where(Upload.id == upload.id).values(claimed_at=stale))
        await session.commit()
    winner = await world.call(lambda u, _: u.complete(world.user, upload.id))
    assert winner.status == "available"
    before = await world.rows(upload.id)
    gate.release()
    result = await late  # its store call finds the upload gone, its finish finds the claim gone
    assert result.id == winner.id
    after = await world.rows(upload.id)
    assert [r.model_dump() if r else None for r in after] == [r.model_dump() if r else None for r in before]
    assert world.storage.count("complete_multipart") == 2  # the winner's, and the late one's refusal


async def test_parts_changing_during_complete_is_a_retryable_conflict(world: World) -> None:
    upload = await world.started()
    gate = world.storage.hold("complete_multipart")
    completing = asyncio.create_task(world.call(lambda u, _: u.complete(world.user, upload.id)))
    await wait_for_gate(gate)
    world.store.put_part(upload.s3_upload_id, 1, DATA[::-1])  # sent again, other bytes
    gate.release()
    with pytest.raises(PartsChanged):
        await completing
    row, _ = await world.rows(upload.id)
    assert row is not None and (row.status, row.claim_token) == ("uploading", None)
    file = await world.call(lambda u, _: u.complete(world.user, upload.id))
    assert file.status == "available"
    assert world.store.objects[upload.key] == DATA[::-1]
    assert world.storage.count("complete_multipart") == 2  # the refused one, and the retry


async def test_delete_waits_for_complete_then_removes_rows_and_object(world: World) -> None:
    upload = await world.started()
    gate = world.storage.hold("complete_multipart")
    completing = asyncio.create_task(world.call(lambda u, _: u.complete(world.user, upload.id)))
    await wait_for_gate(gate)
    deleting = asyncio.create_task(world.call(lambda _, f: f.delete(world.admin, upload.file_id)))
    await asyncio.sleep(0.2)
    assert not deleting.done()
    gate.release()
    assert (await completing).status == "available"
    await deleting
    assert await world.rows(upload.id) == (None, None)
    assert not world.store.objects and not world.store.uploads
    # one complete; deletes of the object and of the preview processing may have made of it
    assert (world.storage.count("complete_multipart"), world.storage.count("delete_object")) == (1, 2)


async def test_an_outage_during_abort_hands_the_upload_back(world: World) -> None:
    upload = await world.started()
    world.store.down = True
    with pytest.raises(StorageUnavailable):
        await world.call(lambda u, _: u.abort(world.user, upload.id))
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, row.claim_token, file.status) == ("uploading", None, "uploading")
    world.store.down = False
    await world.call(lambda u, _: u.abort(world.user, upload.id))
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, file.status) == ("aborted", "failed")


async def test_a_finish_with_another_claims_token_changes_nothing(world: World) -> None:
    upload = await world.started()
    async with world.db.connect() as conn:
        held = await state.claim(conn, upload.id, [UploadStatus.UPLOADING], UploadStatus.COMPLETING, utcnow())
    assert held is not None
    before = await world.rows(upload.id), await audit_events(world)
    forged = state.Claim(upload.id, UploadStatus.COMPLETING, state.new_claim_token())
    async with world.db.connect() as conn:
        done = await finish(conn, forged, upload, Ending(UploadStatus.COMPLETED, etag="e"), world.user)
    assert done is False
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, row.claim_token, file.status) == ("completing", held.token, FileStatus.UPLOADING)
    # Nothing else was written either: no column of the rows, no audit event.
    assert (await world.rows(upload.id), await audit_events(world)) == before
    async with world.db.connect() as conn:  # the real claim still finishes it
        assert await finish(conn, held, upload, Ending(UploadStatus.COMPLETED, etag="e"), world.user)
    row, file = await world.rows(upload.id)
    assert row is not None and file is not None
    assert (row.status, row.claim_token, file.status, file.etag) == ("completed", None, "available", "e")
    assert len(await audit_events(world)) == len(before[1]) + 1


async def audit_events(world: World) -> list[dict[str, Any]]:
    async with world.db.sessions() as session:
        return [e.model_dump() for e in (await session.exec(select(AuditEvent))).all()]


def test_the_transition_table_is_closed_and_held_states_can_be_taken_over() -> None:
    table = state.UPLOAD_TRANSITIONS
    # Closed: every state has its row (so every target has one too), every state is reachable from
    # a start, and from every state an upload can end (a final state, or its rows removed).
    assert set(table) == set(UploadStatus), set(UploadStatus) - set(table)
    assert reachable(table, {UploadStatus.CREATING}) == set(UploadStatus)
    for source in UploadStatus:
        ends = reachable(table, {source}) & (state.FINAL | state.REMOVED_FROM)
        assert ends, f"an upload {source} can never end"
    assert set(state.FILE_STATUS_FOR) == state.FINAL
    for held in state.HELD:
        assert held in state.UPLOAD_TRANSITIONS[held], f"{held} cannot be taken over"
    for final in state.FINAL:
        assert state.UPLOAD_TRANSITIONS[final] == {UploadStatus.DELETING}
    with pytest.raises(state.TransitionError):
        state.check_upload_transition(UploadStatus.ABORTED, UploadStatus.UPLOADING)
    with pytest.raises(state.TransitionError):
        state.check_upload_transition(UploadStatus.COMPLETED, UploadStatus.ABORTING)


def test_the_package_docstring_draws_the_transition_table() -> None:
    """The table in ``uploads/__init__.py`` is the code's table: same states, same moves."""
    import upload_plane.uploads as package

    drawn: dict[str, set[str]] = {}
    for line in (package.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in set(UploadStatus):
            drawn[cells[0]] = {t.strip().rstrip("*") for t in cells[1].split(",")}
    code = {
        str(s): {str(t) for t in targets} | ({"(removed)"} if s in state.REMOVED_FROM else set())
        for s, targets in state.UPLOAD_TRANSITIONS.items()
    }
    assert drawn == code


def reachable(
    table: dict[UploadStatus, frozenset[UploadStatus]], start: set[UploadStatus]
) -> set[UploadStatus]:
    """Every state the table leads to from ``start`` (``start`` included)."""
    seen, todo = set(start), list(start)
    while todo:
        for target in table[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen
