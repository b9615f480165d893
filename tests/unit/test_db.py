"""The hot path's connections from the one pool: checked out and given back without leaving the
event loop when one is free, through SQLAlchemy's greenlet when one must be made or closed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from upload_plane.db import PING, create_database
from upload_plane.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_more_connections_than_the_pool_keeps_come_and_go_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Overflow connections are made when all are busy and closed when given back to a full pool
    (I/O in both cases); found by the lifecycle bench, where closing one outside the greenlet left
    the pool's overflow count wrong until checkouts failed."""
    db = create_database(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"))
    pool = db.engine.sync_engine.pool
    held = asyncio.Event()

    async def use() -> int:
        async with db.connect() as conn:
            await held.wait()
            return int(await conn.value(PING))

    try:
        for _ in range(3):
            held.clear()
            busy = [asyncio.create_task(use()) for _ in range(12)]
            while pool.checkedout() < 12:  # noqa: ASYNC110 (waits until all twelve hold one)
                await asyncio.sleep(0.01)
            held.set()
            assert await asyncio.gather(*busy) == [1] * 12
            assert (pool.checkedout(), pool.checkedin()) == (0, pool.size())  # overflow closed
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        await db.dispose()
