"""The embedded default for trying upload-plane: SQLite under ./.data and moto's S3 in a thread."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from litestar import Litestar
from sqlmodel import select

from .auth.passwords import verify_password
from .auth.service import AuthService
from .db import create_database
from .migrate import upgrade
from .models import User
from .settings import Settings
from .storage import S3Storage

DEV_DATABASE_URL = "sqlite+aiosqlite:///./.data/upload-plane.db"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedS3:
    """moto's threaded S3 server on loopback; in memory, so objects vanish when it stops."""

    host: str = "127.0.0.1"
    port: int = 0

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        self.port = self.port or free_port(self.host)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.stop()


def prepare(settings: Settings, admin_password: str | None) -> str | None:
    """Migrate, create the bucket with CORS, and make sure an admin exists.

    Returns the admin password when it was generated now (to be printed once), else ``None``.
    """
    upgrade(settings.database_url)
    return asyncio.run(_bootstrap(settings, admin_password))


async def _bootstrap(settings: Settings, admin_password: str | None) -> str | None:
    await S3Storage(settings).ensure_bucket(settings.cors_origins, settings.lock)
    db = create_database(settings)
    generated = None
    try:
        async with db.sessions() as session:
            auth = AuthService(session, settings)
            admin = (await session.exec(select(User).where(User.username == "admin"))).first()
            if admin is None:
                generated = None if admin_password else secrets.token_urlsafe(12)
                await auth.create_user(None, "admin", admin_password or generated or "", "admin")
            elif admin_password and not verify_password(
                admin.password_hash, admin_password, settings.password_hash_cost
            ):
                await auth.set_password(None, admin, admin_password)
            await session.commit()
    finally:
        await db.dispose()
    return generated


@contextmanager
def serve_in_thread(app: Litestar, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread (tests, benchmarks); yields its base URL."""
    import uvicorn

    port = port or free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
