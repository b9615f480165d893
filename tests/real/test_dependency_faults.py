"""Faults of the dependencies that are not the client's doing: a bucket that does not exist, a pool
with no connection to give, a server whose defaults the application did not choose. Each is a 503
that changes nothing (or no fault at all), never a verdict about an upload and never a 500."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.helpers import (
    assert_problem,
    assert_store_agrees,
    client,
    complete,
    db_snapshot,
    login,
    new_log,
    new_user,
    put_parts,
    remember_s3_upload_id,
    run_reaper,
    sql_rows,
    start_upload,
)
from tests.conftest import ADMIN_PASSWORD, Backend, real_settings, serve
from tests.faultproxy import Fault, fault_proxy
from tests.services import MariaDB, MinIO
from tests.store import StoreChecker
from upload_plane.db import create_database
from upload_plane.statements import Query

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def wrong_bucket(real: Backend) -> Iterator[Backend]:
    """A second server on the same database, configured with a bucket that does not exist."""
    settings = real.settings.with_(s3_bucket="no-such-bucket-here")
    from upload_plane.app import create_app
    from upload_plane.embedded import serve_in_thread

    with serve_in_thread(create_app(settings)) as url:
        yield Backend("real", settings, url)


@pytest.mark.expects_5xx
def test_a_missing_bucket_is_an_outage_not_a_verdict(
    real: Backend, wrong_bucket: Backend, http: httpx.Client
) -> None:
    data = b"evidence"
    with new_user(real) as api:
        upload = start_upload(api, new_log(api)["id"], data)
        put_parts(http, api, upload, data, [1])
        remember_s3_upload_id(real, upload)
        token = api.headers["Authorization"].removeprefix("Bearer ")
    before = asyncio.run(db_snapshot(real))
    with client(wrong_bucket, token) as misconfigured:
        assert_problem(complete(misconfigured, upload["id"]), 503, "STORAGE_UNAVAILABLE")
        assert_problem(misconfigured.get(f"/uploads/{upload['id']}"), 503, "STORAGE_UNAVAILABLE")
        assert_problem(misconfigured.delete(f"/uploads/{upload['id']}"), 503, "STORAGE_UNAVAILABLE")
        assert_problem(
            misconfigured.post(f"/logs/{upload['log_id']}/uploads", json={"filename": "a", "size": 1}),
            503,
            "STORAGE_UNAVAILABLE",
        )
        ready = httpx.get(f"{wrong_bucket.base_url}/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["storage"] != "ok"
    assert asyncio.run(db_snapshot(real)) == before  # nothing expired, nothing failed
    assert asyncio.run(assert_store_agrees(real, upload)) == "uploading"
    with client(real, token) as api:
        assert complete(api, upload["id"]).status_code == 200  # the right bucket completes it


@pytest.fixture
def tiny_pool(real: Backend) -> Iterator[Backend]:
    """A server with two database connections at most, giving up on the pool after one second."""
    settings = real.settings.with_(db_pool_size=2, db_pool_timeout=1)
    with serve(settings) as url:
        yield Backend("real", settings, url)


@pytest.mark.expects_5xx
def test_an_exhausted_pool_is_503_and_recovers(tiny_pool: Backend, mariadb: MariaDB) -> None:
    backend = tiny_pool
    with new_user(backend) as api:
        token = api.headers["Authorization"]
    database = backend.settings.database_url.rsplit("/", 1)[-1]
    locked = threading.Event()
    unlock = threading.Event()

    def hold_the_users_table() -> None:
        async def hold() -> None:
            import asyncmy

            conn = await asyncmy.connect(unix_socket=str(mariadb.socket_path), user="root")
            async with conn.cursor() as cursor:
                await cursor.execute(f"LOCK TABLES `{database}`.users WRITE")
                locked.set()
                await asyncio.to_thread(unlock.wait, 60)
                await cursor.execute("UNLOCK TABLES")
            conn.close()

        asyncio.run(hold())

    holder = threading.Thread(target=hold_the_users_table)
    holder.start()
    try:
        assert locked.wait(10)
        with ThreadPoolExecutor(max_workers=4) as pool, client(backend) as api:
            api.headers["Authorization"] = token
            # Each request's authentication waits on the locked table, holding a pooled connection
            # (two at most); the others find no connection within a second.
            calls = [pool.submit(api.get, "/me") for _ in range(4)]
            first, _ = wait(calls, timeout=30, return_when=FIRST_COMPLETED)
            assert first, "no request came back while the pool was exhausted"
            unlock.set()
            answers = [c.result(timeout=60) for c in calls]
    finally:
        unlock.set()
        holder.join(30)
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 503}, statuses
    for refused in (r for r in answers if r.status_code == 503):
        assert_problem(refused, 503, "DATABASE_UNAVAILABLE")
        assert refused.headers["retry-after"]
    with login(backend, "admin", ADMIN_PASSWORD) as adm:
        assert adm.get("/cases").status_code == 200


def test_sessions_are_strict_and_utc_whatever_the_server_says(real: Backend) -> None:
    """The server runs with an empty sql_mode and +05:30 (tests/services.py); our sessions do not."""

    async def read() -> tuple[str, str, str, str]:
        db = create_database(real.settings)
        try:
            async with db.engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.text(
                            "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, "
                            "@@GLOBAL.time_zone, @@GLOBAL.sql_mode"
                        )
                    )
                ).one()
                return str(row[0]), str(row[1]), str(row[2]), str(row[3])
        finally:
            await db.dispose()

    session_mode, session_zone, server_zone, server_mode = asyncio.run(read())
    assert (server_zone, server_mode) == ("+05:30", "")  # the fixture really is permissive
    assert "STRICT_ALL_TABLES" in session_mode
    assert session_zone == "+00:00"


ISOLATION = Query(
    sa.text("SELECT @@GLOBAL.tx_isolation AS server, @@SESSION.tx_isolation AS session").columns(
        sa.column("server", sa.String), sa.column("session", sa.String)
    ),
    dict,
)


def test_every_connection_reads_committed_whatever_the_server_says(real: Backend) -> None:
    """The server's default is REPEATABLE READ, with its gap locks; the hot path's connections and
    the ORM's (one pool) run READ COMMITTED, as every compare-and-set assumes."""

    async def read() -> tuple[dict[str, str], str, str]:
        db = create_database(real.settings)
        try:
            async with db.connect() as hot:
                levels = await hot.one(ISOLATION)
            async with db.sessions() as session:
                query: Any = ISOLATION.construct()
                orm = (await session.exec(query)).one()
            assert levels is not None
            return levels, str(orm[1]), str(db.engine.pool.status())
        finally:
            await db.dispose()

    hot, orm, pool = asyncio.run(read())
    assert hot["server"] == "REPEATABLE-READ"  # the fixture runs the server's default
    assert (hot["session"], orm) == ("READ-COMMITTED", "READ-COMMITTED"), pool


def test_the_database_default_is_latin1_and_every_table_utf8mb4(real: Backend) -> None:
    async def read() -> tuple[str, list[tuple[str, str]]]:
        db = create_database(real.settings)
        try:
            async with db.engine.connect() as conn:
                default = (await conn.execute(sa.text("SELECT @@character_set_database"))).scalar_one()
                tables = (
                    await conn.execute(
                        sa.text(
                            "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
                            "WHERE TABLE_SCHEMA = DATABASE()"
                        )
                    )
                ).all()
                return str(default), [(str(t), str(c)) for t, c in tables]
        finally:
            await db.dispose()

    default, tables = asyncio.run(read())
    assert default == "latin1"
    assert tables and all(collation == "utf8mb4_nopad_bin" for _, collation in tables), tables
    assert httpx.get(f"{real.base_url}/ready").json()["checks"]["schema"] == "ok"


@pytest.mark.expects_5xx
def test_a_create_the_store_made_but_answered_500_leaves_nothing_open_after_one_reap(
    mariadb: MariaDB, minio: MinIO
) -> None:
    """MinIO makes the multipart upload, and a 500 replaces its answer (a proxy's or the store's own
    failure after the work). The create is sent once, the client gets a 503, and after one reap no
    multipart upload is open on the key and no row is left: nothing the database does not record."""
    with fault_proxy(minio.endpoint, Fault("CreateMultipartUpload")) as proxy:
        settings = real_settings(
            mariadb.create_database("create_answered_500"), minio, s3_endpoint_url=proxy.url
        )
        with serve(settings) as url, new_user(backend := Backend("real", settings, url)) as api:
            log = new_log(api)
            resp = api.post(
                f"/logs/{log['id']}/uploads",
                json={"filename": "a.bin", "size": 1000},
                headers={"Idempotency-Key": "create-500"},
            )
            assert_problem(resp, 503, "STORAGE_UNAVAILABLE")
            assert proxy.count("CreateMultipartUpload") == 1  # never sent twice
            [(key, status, needs_sweep)] = sql_rows(
                settings, "SELECT `key`, status, needs_sweep FROM uploads WHERE log_id = %s", log["id"]
            )
            assert (status, needs_sweep) == ("creating", 1)
            checker = StoreChecker(settings.with_(s3_endpoint_url=minio.endpoint))
            assert len(asyncio.run(checker.list_multipart_uploads(key))) == 1  # what the store made

            report = asyncio.run(run_reaper(backend))
            assert (report.forgotten, report.swept, report.errors) == (1, 1, 0), report
            assert asyncio.run(checker.list_multipart_uploads(key)) == []
            assert sql_rows(settings, "SELECT id FROM uploads WHERE log_id = %s", log["id"]) == []


def test_a_full_pool_hands_each_returned_connection_to_a_waiting_request(
    real: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 hot-path units of work at once on a pool of two: every one runs, on the two connections
    (none is made beyond the pool's size), each waiting on the event loop for a connection given
    back, by the hot path or by an ORM session; a wait longer than the pool's timeout is a
    ``PoolTimeout`` (503)."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    from sqlalchemy.ext.asyncio import AsyncEngine

    from upload_plane.db import PING

    async def scenario() -> None:
        db = create_database(real.settings.with_(db_pool_size=2, db_pool_timeout=2))
        made = 0  # checkouts through SQLAlchemy's greenlet: the two that make the connections
        make = AsyncEngine.raw_connection

        async def counted(engine: AsyncEngine) -> Any:
            nonlocal made
            made += 1
            return await make(engine)

        monkeypatch.setattr(AsyncEngine, "raw_connection", counted)
        try:

            async def unit(i: int) -> int:
                async with db.connect() as conn:
                    await asyncio.sleep(0.001 * (i % 3))  # hold it a little, as a request does
                    return int(await conn.value(PING))

            assert await asyncio.gather(*(unit(i) for i in range(40))) == [1] * 40
            assert made == 2, f"{made} checkouts left the event loop for a pool of two"
            # Both connections held, one by an ORM session: its return wakes the waiting checkout.
            async with db.connect():
                session = db.sessions()
                await session.exec(sa.text("SELECT 1"))  # type: ignore[call-overload]
                waiting = asyncio.create_task(unit(0))
                await asyncio.sleep(0.2)
                assert not waiting.done(), "a checkout did not wait for a full pool"
                await session.close()
                assert await asyncio.wait_for(waiting, 1) == 1
                # A waiter woken but cancelled before it ran (its client went away) passes the
                # connection on to the next one, which would otherwise wait out the timeout.
                session = db.sessions()
                await session.exec(sa.text("SELECT 1"))  # type: ignore[call-overload]
                leaving, staying = asyncio.create_task(unit(0)), asyncio.create_task(unit(0))
                await asyncio.sleep(0.2)
                await session.close()  # wakes the first waiter ...
                leaving.cancel()  # ... which is cancelled before it runs
                assert await asyncio.wait_for(staying, 1) == 1
                with pytest.raises(asyncio.CancelledError):
                    await leaving
                # Nobody gives the last connection back: the wait ends in the pool's timeout.
                async with db.connect():
                    with pytest.raises(PoolTimeout):
                        await unit(0)
            assert made == 2
        finally:
            await db.dispose()

    asyncio.run(scenario())
