"""What only a real MariaDB shows: concurrent writers and transactions that fail halfway."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlmodel import select

from tests.api.helpers import assert_problem, backend_db, new_log, new_user
from tests.conftest import Backend
from tests.services import MariaDB
from upload_plane.models import File, Upload

pytestmark = pytest.mark.real


def test_concurrent_inits_in_one_log_do_not_collide(real: Backend) -> None:
    with new_user(real) as api:
        log = new_log(api)

        def start(i: int) -> httpx.Response:
            body = {"filename": "same-name.mp4", "size": 1000 + i}
            return api.post(f"/logs/{log['id']}/uploads", json=body)

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(start, range(32)))
        assert [r.status_code for r in results] == [201] * 32, [
            r.text for r in results if r.status_code != 201
        ]
        uploads = [r.json() for r in results]
        assert len({u["id"] for u in uploads}) == 32
        assert len({u["file_id"] for u in uploads}) == 32
        assert len({u["key"] for u in uploads}) == 32
        assert sorted(u["size"] for u in uploads) == list(range(1000, 1032))
        listed = api.get("/uploads", params={"log_id": log["id"], "limit": 500}).json()["items"]
        assert len(listed) == 32


async def _rows_named(backend: Backend, filename: str) -> tuple[int, int]:
    async with backend_db(backend) as session:
        files = (await session.exec(select(File.id).where(File.filename == filename))).all()
        uploads = (await session.exec(select(Upload.id).where(Upload.filename == filename))).all()
        return len(files), len(uploads)


@pytest.mark.expects_5xx
def test_a_transaction_that_fails_halfway_leaves_no_row(real: Backend, mariadb: MariaDB) -> None:
    """The file row is written, then the upload row fails (a trigger refuses it): nothing remains."""
    database = real.settings.database_url.rsplit("/", 1)[-1].split("?", 1)[0]
    mariadb.execute(
        f"CREATE TRIGGER `{database}`.refuse_poisoned_upload BEFORE INSERT ON `{database}`.uploads "
        "FOR EACH ROW BEGIN IF NEW.filename = 'poisoned.bin' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test trigger'; END IF; END"
    )
    try:
        with new_user(real) as api:
            log = new_log(api)
            resp = api.post(f"/logs/{log['id']}/uploads", json={"filename": "poisoned.bin", "size": 10})
            # The database answered with an error that is neither the client's nor an outage.
            assert_problem(resp, 500, "INTERNAL_ERROR")
            assert asyncio.run(_rows_named(real, "poisoned.bin")) == (0, 0)
            assert api.get("/uploads", params={"log_id": log["id"]}).json()["items"] == []
            # The same log keeps working for everything else.
            ok = api.post(f"/logs/{log['id']}/uploads", json={"filename": "fine.bin", "size": 10})
            assert ok.status_code == 201
    finally:
        mariadb.execute(f"DROP TRIGGER IF EXISTS `{database}`.refuse_poisoned_upload")
