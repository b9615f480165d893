"""The ``upload-plane`` command: serve, dev, migrate, init-storage, users; and the client commands
(login, logout, upload, download, ls, create) from ``client/commands.py``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from .client.commands import register as register_client_commands
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from litestar import Litestar

    from .auth.service import AuthService
    from .models import User

BANNER = """
==============================================================================
 upload-plane EMBEDDED MODE: for trying it out, NOT for production.
 SQLite in ./.data and an in-memory S3 (moto): stored objects vanish on exit.
 API + demo:  http://{host}:{port}/        API docs: http://{host}:{port}/docs
 Sign in as:  admin / {password}
==============================================================================
"""


def app_from_env() -> Litestar:
    """uvicorn factory for ``serve`` (each worker reads the same environment)."""
    from .app import create_app
    from .logs import configure

    configure(os.environ.get("UPLOAD_PLANE_LOG_FORMAT", "json"))
    return create_app(Settings.from_env().with_(production=True))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .logs import configure

    configure(os.environ.get("UPLOAD_PLANE_LOG_FORMAT", "json"))
    settings = Settings.from_env().with_(production=True)
    settings.check()
    uvicorn.run(
        "upload_plane.cli:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,  # X-Forwarded-*: only from UPLOAD_PLANE_TRUSTED_PROXIES (forwarded.py)
        log_config=None,  # logs.configure: JSON lines; the access line is upload_plane.access's
        access_log=False,
    )
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .embedded import DEV_DATABASE_URL, EmbeddedS3, prepare
    from .logs import configure

    try:
        import aiosqlite  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        print(
            "upload-plane dev needs the embedded extra: pip install 'upload-plane[embedded]'", file=sys.stderr
        )
        return 2
    configure("text")
    env = Settings.from_env()
    s3 = EmbeddedS3()
    endpoint = s3.start()
    origin = f"http://{args.host}:{args.port}"
    settings = env.with_(
        database_url=os.environ.get("UPLOAD_PLANE_DATABASE_URL", DEV_DATABASE_URL),
        s3_endpoint_url=endpoint,
        s3_public_endpoint_url=endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        cors_origins=env.cors_origins or (origin, f"http://localhost:{args.port}"),
        production=False,
        reaper_interval=env.reaper_interval or 30,
    )
    password = os.environ.get("UPLOAD_PLANE_DEV_ADMIN_PASSWORD")
    generated = prepare(settings, password)
    shown = generated or (
        "(from UPLOAD_PLANE_DEV_ADMIN_PASSWORD)" if password else "(printed when first created)"
    )
    print(BANNER.format(host=args.host, port=args.port, password=shown), flush=True)
    try:
        uvicorn.run(
            create_app(settings),
            host=args.host,
            port=args.port,
            proxy_headers=False,  # X-Forwarded-*: only from UPLOAD_PLANE_TRUSTED_PROXIES
            log_config=None,
            access_log=False,
        )
    finally:
        s3.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .migrate import charset_problems, upgrade

    url = Settings.from_env().database_url
    upgrade(url, args.revision)
    print(f"database migrated to {args.revision}")
    problems = charset_problems(url)
    if problems:
        print("upload-plane: these columns are not utf8mb4 with a binary collation:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_init_storage(args: argparse.Namespace) -> int:
    from .storage import S3Storage

    settings = Settings.from_env()
    asyncio.run(S3Storage(settings).ensure_bucket(settings.cors_origins, settings.lock))
    lock = f" with Object Lock ({settings.object_lock})" if settings.lock.on else ""
    print(f"bucket {settings.s3_bucket!r} ready at {settings.s3_endpoint_url}{lock}")
    return 0


def read_password(prompt: str = "Password: ") -> str:
    """From a prompt (asked twice) on a terminal, else the first line of standard input; never argv."""
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != password:
            raise SystemExit("upload-plane: the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _with_accounts(work: Callable[[AuthService], Awaitable[str]]) -> int:
    """Run ``work`` against the configured database in one committed transaction; print its result."""
    from .auth.service import AuthService
    from .db import create_database

    settings = Settings.from_env()

    async def run() -> str:
        db = create_database(settings)
        try:
            async with db.transaction() as session:
                return await work(AuthService(session, settings))
        finally:
            await db.dispose()

    print(asyncio.run(run()))
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    password = read_password()

    async def create(auth: AuthService) -> str:
        user = await auth.create_user(None, args.username, password, args.role)
        return f"user {user.username!r} created with role {user.role}"

    return _with_accounts(create)


def cmd_users_list(args: argparse.Namespace) -> int:
    from .pagination import PageRequest

    async def listing(auth: AuthService) -> str:
        lines, cursor = [], None
        while True:
            page = await auth.list_users(PageRequest.parse(500, cursor))
            lines += [
                f"{u.username}\t{u.role}\t{'disabled' if u.disabled else 'enabled'}\t{u.id}"
                for u in page.items
            ]
            if page.next_cursor is None:
                return "\n".join(sorted(lines))
            cursor = page.next_cursor

    return _with_accounts(listing)


def _named(auth: AuthService, username: str) -> Awaitable[User]:
    async def find() -> User:
        user = await auth.find(username)
        if user is None:
            from .errors import NotFound

            raise NotFound(f"no user {username!r}")
        return user

    return find()


def cmd_users_disable(args: argparse.Namespace) -> int:
    disabled = args.users == "disable"

    async def switch(auth: AuthService) -> str:
        user = await auth.update_user(None, await _named(auth, args.username), {"disabled": disabled})
        return f"user {user.username!r} {'disabled' if disabled else 'enabled'}"

    return _with_accounts(switch)


def cmd_users_set_password(args: argparse.Namespace) -> int:
    password = read_password("New password: ")

    async def change(auth: AuthService) -> str:
        user = await auth.set_password(None, await _named(auth, args.username), password)
        return f"password of {user.username!r} set; every sign-in and token of theirs ended"

    return _with_accounts(change)


def cmd_users_revoke(args: argparse.Namespace) -> int:
    async def revoke(auth: AuthService) -> str:
        user = await _named(auth, args.username)
        ended = await auth.end_credentials(None, user, "admin")
        return (
            f"{user.username!r}: {ended.sessions} sign-in(s) and {ended.tokens} personal access "
            "token(s) revoked"
        )

    return _with_accounts(revoke)


def cmd_reap(args: argparse.Namespace) -> int:
    """One reaper run (or one every ``--every`` seconds), printing what it did as JSON lines."""
    from .db import create_database
    from .logs import configure
    from .models import utcnow
    from .storage import S3Storage
    from .uploads.context import Uploads
    from .uploads.reaper import Reaper, report_line

    configure(os.environ.get("UPLOAD_PLANE_LOG_FORMAT", "json"), logging.WARNING)
    settings = Settings.from_env()

    async def run() -> None:
        db, storage = create_database(settings), S3Storage(settings)
        try:
            reaper = Reaper(Uploads(db, storage, settings))
            while True:
                started = utcnow()
                try:
                    report = await reaper.run(args.batch)
                except Exception:
                    if not args.every:
                        raise
                    logging.getLogger("upload_plane.reaper").exception(
                        "the reaper run failed; it runs again in %s s", args.every
                    )
                else:
                    print(json.dumps(report_line(report, started)), flush=True)
                if not args.every:
                    return
                await asyncio.sleep(args.every)
        finally:
            await storage.aclose()
            await db.dispose()

    asyncio.run(run())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Process files from the job queue until SIGTERM (``processing/runner.py``)."""
    from .logs import configure
    from .processing.runner import run_worker

    configure(os.environ.get("UPLOAD_PLANE_LOG_FORMAT", "json"))
    settings = Settings.from_env()
    if not settings.queue_url:
        print("upload-plane worker needs UPLOAD_PLANE_QUEUE_URL (redis://host:6379/0)", file=sys.stderr)
        return 2
    asyncio.run(run_worker(settings, args.concurrency or settings.processing_concurrency, args.metrics_port))
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    """Ask again for files' processing (relayed onto the queue by the workers, or by the API that
    runs jobs in-process)."""
    from .db import create_database
    from .errors import NotFound
    from .processing.outbox import ask_again
    from .processing.rows import AVAILABLE_FILES
    from .uploads.queries import FILE_BY_ID

    if bool(args.all) == bool(args.file_ids):
        print("upload-plane process: give FILE_ID... or --all", file=sys.stderr)
        return 2
    settings = Settings.from_env()

    async def run() -> int:
        db = create_database(settings)
        try:
            if args.all:
                total, after = 0, ""
                while True:
                    async with db.connect() as conn:
                        ids = await conn.all(AVAILABLE_FILES, after_id=after, size=500)
                    if not ids:
                        return total
                    total += await ask_again(db, ids)
                    after = ids[-1]
            for file_id in args.file_ids:
                async with db.connect() as conn:
                    file = await conn.one(FILE_BY_ID, file_id=file_id)
                if file is None or file.status != "available":
                    raise NotFound(f"no available file {file_id}")
            return await ask_again(db, list(args.file_ids))
        finally:
            await db.dispose()

    print(json.dumps({"queued": asyncio.run(run())}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="upload-plane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API (production; configured by UPLOAD_PLANE_*)")
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server listens on all interfaces
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dev", help="embedded default: SQLite + in-memory S3, for trying it out")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("migrate", help="apply database migrations (alembic upgrade)")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "reap", help="abort expired uploads, settle dead claims, sweep stray multipart uploads"
    )
    p.add_argument("--batch", type=int, default=None, help="rows per kind of work and run (default 200)")
    p.add_argument("--every", type=float, default=0, help="run again every N seconds (0: once)")
    p.set_defaults(func=cmd_reap)

    p = sub.add_parser("worker", help="process files from the job queue (UPLOAD_PLANE_QUEUE_URL)")
    p.add_argument("--concurrency", type=int, default=0, help="jobs at once (default PROCESSING_CONCURRENCY)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("process", help="process files again: FILE_ID... or --all available files")
    p.add_argument("file_ids", nargs="*", metavar="FILE_ID")
    p.add_argument("--all", action="store_true", help="every available file")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("init-storage", help="create the bucket and set its CORS rules")
    p.set_defaults(func=cmd_init_storage)

    users = sub.add_parser("users", help="manage users (passwords from a prompt or standard input)")
    users_sub = users.add_subparsers(dest="users", required=True)
    p = users_sub.add_parser("create", help="create a user; the password is read from a prompt or stdin")
    p.add_argument("--username", required=True)
    p.add_argument("--role", choices=("admin", "user"), default="user")
    p.set_defaults(func=cmd_users_create)
    p = users_sub.add_parser("list", help="list users")
    p.set_defaults(func=cmd_users_list)
    p = users_sub.add_parser("disable", help="disable a user: every sign-in and token of theirs ends")
    p.add_argument("username")
    p.set_defaults(func=cmd_users_disable)
    p = users_sub.add_parser("enable", help="enable a user again (no old sign-in or token comes back)")
    p.add_argument("username")
    p.set_defaults(func=cmd_users_disable)
    p = users_sub.add_parser(
        "set-password",
        aliases=["passwd"],
        help="set a user's password (from a prompt or stdin); every sign-in and token of theirs ends",
    )
    p.add_argument("username")
    p.set_defaults(func=cmd_users_set_password)
    p = users_sub.add_parser("revoke", help="end every sign-in and personal access token of a user")
    p.add_argument("username")
    p.set_defaults(func=cmd_users_revoke)

    register_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"upload-plane: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .errors import DomainError

        if isinstance(exc, DomainError):
            print(f"upload-plane: {exc.code}: {exc.detail}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
