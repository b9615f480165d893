"""The completion step on MariaDB, where one upload's ending moves its upload row and its file row in
one multiple-table UPDATE (``uploads/finish.END_WITH_FILE``): both compare-and-sets still hold —
a claim that is not the upload's records nothing, a file that is not ``uploading`` refuses the
whole step — and the common case is one statement, not two."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.helpers import new_log, new_user, sql_rows, start_upload
from tests.conftest import Backend
from upload_plane.db import create_database
from upload_plane.models import utcnow
from upload_plane.uploads import state
from upload_plane.uploads.finish import Ending, finish
from upload_plane.uploads.queries import UPLOAD_BY_ID
from upload_plane.uploads.state import TransitionError, UploadStatus

pytestmark = pytest.mark.real


def rows(backend: Backend, upload_id: str, file_id: str) -> tuple[Any, ...]:
    settings = backend.settings
    upload = sql_rows(settings, "SELECT status, claim_token FROM uploads WHERE id = %s", upload_id)
    file = sql_rows(settings, "SELECT status, etag, version_id FROM files WHERE id = %s", file_id)
    events = sql_rows(settings, "SELECT action FROM audit_events WHERE subject_id = %s", upload_id)
    asked = sql_rows(settings, "SELECT status FROM file_processing WHERE file_id = %s", file_id)
    return upload, file, sorted(events), asked


def test_one_ending_moves_both_rows_in_one_statement_and_keeps_both_compare_and_sets(real: Backend) -> None:
    with new_user(real) as api:
        started = start_upload(api, new_log(api)["id"], b"evidence")
    upload_id, file_id = started["id"], started["file_id"]
    kinds: list[str] = []

    def on_database(step: Any) -> Any:
        async def run() -> Any:
            db = create_database(real.settings)
            db.observe = lambda kind, _seconds, _ok: kinds.append(kind)
            try:
                async with db.connect() as conn:
                    return await step(conn)
            finally:
                await db.dispose()

        return asyncio.run(run())

    upload = on_database(lambda conn: conn.one(UPLOAD_BY_ID, upload_id=upload_id))
    held = on_database(
        lambda conn: state.claim(conn, upload_id, [UploadStatus.UPLOADING], UploadStatus.COMPLETING, utcnow())
    )
    assert upload is not None and held is not None
    done = Ending(UploadStatus.COMPLETED, etag="e", version_id="v")
    before = rows(real, upload_id, file_id)

    forged = state.Claim(upload_id, UploadStatus.COMPLETING, state.new_claim_token())
    assert on_database(lambda conn: finish(conn, forged, upload, done, None)) is False
    assert rows(real, upload_id, file_id) == before  # nothing written, no event

    sql_rows(real.settings, "UPDATE files SET status = 'failed' WHERE id = %s", file_id)
    with pytest.raises(TransitionError):
        on_database(lambda conn: finish(conn, held, upload, done, None))
    upload_after, file_after, events, asked = rows(real, upload_id, file_id)
    assert (upload_after, events, asked) == (before[0], before[2], before[3])  # all rolled back
    assert file_after[0][0] == "failed"
    sql_rows(real.settings, "UPDATE files SET status = 'uploading' WHERE id = %s", file_id)

    kinds.clear()
    assert on_database(lambda conn: finish(conn, held, upload, done, None)) is True
    upload_row, file_row, events, asked = rows(real, upload_id, file_id)
    assert upload_row == [("completed", None)]
    assert file_row == [("available", "e", "v")]
    assert events == [("upload.completed",), ("upload.started",)]
    assert asked == [("pending",)]  # processing asked for, in the same transaction
    updates = [kind for kind in kinds if kind.startswith("update")]
    assert updates == ["update uploads"], kinds  # the upload and its file: one UPDATE
