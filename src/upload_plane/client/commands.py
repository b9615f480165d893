"""The client commands of ``upload-plane``: login, logout, upload, download, ls, create.

``register`` only adds subparsers (so ``serve`` and the other server commands never load the client);
each command imports what it needs when it runs. The API is ``--api URL``, else
``UPLOAD_PLANE_API_URL``, else the one of the last ``login``, else http://127.0.0.1:8000; the token is
``UPLOAD_PLANE_TOKEN``, else the one ``login`` stored for that API.

Errors are one line on stderr, ``upload-plane: CODE: detail``, and an exit status:
0 done; 1 the API refused (any other problem code); 2 usage or configuration; 3 not signed in or
credentials refused (UNAUTHENTICATED, NOT_SIGNED_IN, FORBIDDEN); 4 not found (NOT_FOUND, NO_SUCH_FILE,
FILE_NOT_AVAILABLE); 5 integrity (INTEGRITY_ERROR, CHECKSUM_MISMATCH, OBJECT_MISMATCH, FILE_CHANGED);
6 unreachable or unavailable after every retry (UNREACHABLE, 5xx, RATE_LIMITED); 130 interrupted
(an interrupted upload resumes when the same command runs again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .api import Api, ApiError
    from .transfer import Progress

T = TypeVar("T")

EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_INTEGRITY, EXIT_UNAVAILABLE = 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130
_EXIT_BY_CODE = {
    "UNAUTHENTICATED": EXIT_AUTH,
    "NOT_SIGNED_IN": EXIT_AUTH,
    "FORBIDDEN": EXIT_AUTH,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "NO_SUCH_FILE": EXIT_NOT_FOUND,
    "FILE_NOT_AVAILABLE": EXIT_NOT_FOUND,
    "INTEGRITY_ERROR": EXIT_INTEGRITY,
    "CHECKSUM_MISMATCH": EXIT_INTEGRITY,
    "OBJECT_MISMATCH": EXIT_INTEGRITY,
    "FILE_CHANGED": EXIT_INTEGRITY,
    "UNREACHABLE": EXIT_UNAVAILABLE,
    "RATE_LIMITED": EXIT_UNAVAILABLE,
    "USAGE": EXIT_USAGE,
}
TOKEN_DAYS = 90


def exit_status(error: ApiError) -> int:
    if error.code in _EXIT_BY_CODE:
        return _EXIT_BY_CODE[error.code]
    return EXIT_UNAVAILABLE if error.status >= 500 else EXIT_ERROR


def fail(message: str) -> None:
    print(f"upload-plane: {message}", file=sys.stderr, flush=True)


def byte_count(text: str) -> int:
    """``8388608``, ``8M``, ``8MiB``, ``1G``: binary units."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 8388608 or 8M)")
    value = int(match.group(1)) << (10 * "_kmgt".index(match.group(2).lower() or "_"))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# -- shared plumbing -----------------------------------------------------------------------------


def api_url_of(args: argparse.Namespace) -> str:
    from .api import DEFAULT_API_URL
    from .state import CredentialStore

    url = args.api or os.environ.get("UPLOAD_PLANE_API_URL") or CredentialStore().default_api_url()
    return (url or DEFAULT_API_URL).rstrip("/")


def token_of(api_url: str) -> str:
    from .api import ApiError
    from .state import CredentialStore

    token = os.environ.get("UPLOAD_PLANE_TOKEN")
    if token:
        return token
    login = CredentialStore().get(api_url)
    if login is None:
        raise ApiError(
            0, "NOT_SIGNED_IN", f"no token for {api_url}: run `upload-plane login` or set UPLOAD_PLANE_TOKEN"
        )
    return login.token


def progress_for(args: argparse.Namespace, total: int, count: int) -> Progress:
    """Progress bars on a terminal; otherwise (or with --json) retry notices on stderr only."""
    if not args.json and sys.stderr.isatty():
        from .progress import RichProgress

        return RichProgress(total, count)
    from .progress import LineProgress

    return LineProgress()


def run_async(
    args: argparse.Namespace,
    work: Callable[[Api], Awaitable[T]],
    progress: Progress | None = None,
    *,
    token: bool = True,
) -> T:
    from .api import Api

    url = api_url_of(args)

    def notice(what: str, wait: float, attempt: int) -> None:
        message = f"{what}; retrying in {wait:.1f} s (attempt {attempt})"
        if progress is not None:
            progress.notice(message)
        else:
            fail(message)

    async def main() -> T:
        async with Api(url, token_of(url) if token else None, notice=notice) as api:
            return await work(api)

    return asyncio.run(main())


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: every failure is one line on stderr and an exit status, never a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        for noisy in ("httpx", "httpcore"):  # their INFO lines would print presigned URLs
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            from .api import ApiError
        except ImportError as exc:  # pragma: no cover - httpx is a core dependency
            fail(f"USAGE: the client needs its dependencies ({exc}); pip install 'upload-plane[client]'")
            return EXIT_USAGE
        try:
            return command(args)
        except ApiError as exc:
            fail(f"{exc.code}: {exc.detail}")
            return exit_status(exc)
        except KeyboardInterrupt:
            fail("INTERRUPTED: stopped; run the same command again to resume")
            return EXIT_INTERRUPTED
        except ImportError as exc:
            fail(f"USAGE: {exc.name or exc} is missing; pip install 'upload-plane[client]'")
            return EXIT_USAGE
        except OSError as exc:
            fail(f"OS_ERROR: {exc}")
            return EXIT_ERROR
        except Exception as exc:  # a bug: still one line, with its type
            fail(f"INTERNAL_ERROR: {type(exc).__name__}: {exc}")
            return EXIT_ERROR

    return wrapped


# -- commands ------------------------------------------------------------------------------------


def read_secret(prompt: str) -> str:
    """From a prompt on a terminal, else the first line of standard input; never from argv."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


@run
def cmd_login(args: argparse.Namespace) -> int:
    from .api import Api, ApiError
    from .state import CredentialStore, Login

    url = api_url_of(args)
    username = args.username
    if not username:
        if not sys.stdin.isatty():
            raise ApiError(0, "USAGE", "give --username when the password comes from standard input")
        username = input("Username: ").strip()
    password = read_secret("Password: ")
    name = f"upload-plane CLI on {socket.gethostname()}"[:100]

    async def login(anonymous: Api) -> Login:
        sign_in = await anonymous.login(username, password)
        async with Api(url, sign_in.access_token, retry=anonymous.retry) as api:
            created = await api.create_token(name, args.expires_in_days)
            await api.logout(sign_in.refresh_token)  # the password sign-in is no longer needed
        return Login(url, username, created.token, created.id, created.expires_at)

    login_ = run_async(args, login, token=False)
    store = CredentialStore()
    store.put(login_)
    expires = login_.expires_at[:10]
    print(f"signed in to {url} as {username}; token {name!r} (expires {expires}) saved in {store.path}")
    return 0


@run
def cmd_logout(args: argparse.Namespace) -> int:
    from .api import Api, ApiError
    from .state import CredentialStore

    url = api_url_of(args)
    store = CredentialStore()
    login = store.get(url)
    if login is None:
        print(f"not signed in to {url}")
        return 0

    async def revoke(api: Api) -> None:
        async with Api(url, login.token, retry=api.retry) as own:
            try:
                await own.revoke_token(login.token_id)
            except ApiError as exc:
                if exc.code not in ("UNAUTHENTICATED", "NOT_FOUND"):  # already revoked or expired
                    raise

    run_async(args, revoke, token=False)
    store.remove(url)
    print(f"signed out of {url}; the token is revoked")
    return 0


@run
def cmd_upload(args: argparse.Namespace) -> int:
    from .upload import FilesFailed, UploadResult, collect, upload_files

    def report(results: list[UploadResult]) -> None:
        """Print the results, out of the process before the resume states are forgotten (see
        ``upload_files``)."""
        if args.json:
            print_json({"files": [r.__dict__ for r in results]})
        else:
            for r in results:
                verified = (
                    "verified by the store" if r.verified_by == "store" else "not verified by the store"
                )
                skipped = f", {r.parts_skipped} parts were already there" if r.parts_skipped else ""
                print(
                    f"{r.filename}: file {r.file_id}, {r.size} bytes, sha256 {r.sha256} ({verified}{skipped})"
                )
        sys.stdout.flush()

    files = collect(args.paths)
    progress = progress_for(args, sum(f.path.stat().st_size for f in files), len(files))
    try:
        with progress:
            run_async(
                args,
                lambda api: upload_files(
                    api,
                    args.log,
                    files,
                    parallel=args.parallel,
                    part_size=args.part_size,
                    limit_rate=args.limit_rate,
                    progress=progress,
                    report=report,
                ),
                progress,
            )
    except FilesFailed as exc:  # the others were done and reported: one line per file that was not
        for item, error in exc.failed:
            fail(f"{error.code}: {item.name}: {error.detail}")
        return exit_status(exc)
    return 0


@run
def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_file

    progress = progress_for(args, 0, 1)
    with progress:
        result = run_async(
            args, lambda api: download_file(api, args.file_id, args.output, progress=progress), progress
        )
    if args.json:
        print_json(result.__dict__)
    else:
        checked = ", ".join(result.verified)
        print(f"{result.path}: {result.size} bytes, sha256 {result.sha256} (checked: {checked})")
    return 0


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join([*(str(c).ljust(w) for c, w in zip(row, widths, strict=False)), str(row[-1])]))


@run
def cmd_ls(args: argparse.Namespace) -> int:
    import msgspec

    if args.what == "cases":
        items: list[Any] = run_async(args, lambda api: api.cases())
        rows = [[c.id, c.reference or "-", c.title] for c in items]
        header = ["ID", "REFERENCE", "TITLE"]
    elif args.what == "logs":
        items = run_async(args, lambda api: api.logs(args.parent))
        rows = [[lg.id, lg.name] for lg in items]
        header = ["ID", "NAME"]
    else:
        items = run_async(args, lambda api: api.files(args.parent))
        rows = [[f.id, str(f.size), f.status, f.verified_by or "-", f.filename] for f in items]
        header = ["ID", "SIZE", "STATUS", "VERIFIED", "FILENAME"]
    if args.json:
        print_json(msgspec.to_builtins(items))
    else:
        _table(rows, header)
    return 0


@run
def cmd_create(args: argparse.Namespace) -> int:
    import msgspec

    made: Any
    if args.what == "case":
        made = run_async(args, lambda api: api.create_case(args.title, args.reference))
    else:
        made = run_async(args, lambda api: api.create_log(args.case_id, args.name))
    if args.json:
        print_json(msgspec.to_builtins(made))
    else:
        print(made.id)
    return 0


# -- parsers -------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add the client commands to ``upload-plane``'s subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api", metavar="URL", help="the API (default: $UPLOAD_PLANE_API_URL, the last login)"
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON, no progress bars")

    p = sub.add_parser("login", parents=[common], help="sign in and keep a personal access token")
    p.add_argument("--username")
    p.add_argument(
        "--expires-in-days", type=positive, default=TOKEN_DAYS, help=f"token lifetime (default {TOKEN_DAYS})"
    )
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", parents=[common], help="revoke the stored token and forget it")
    p.set_defaults(func=cmd_logout)

    p = sub.add_parser("upload", parents=[common], help="upload files and directories into a log (resumable)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--log", required=True, metavar="LOG_ID")
    p.add_argument(
        "--parallel", type=positive, default=4, metavar="N", help="parts or small files in flight (default 4)"
    )
    p.add_argument(
        "--part-size", type=byte_count, metavar="BYTES", help="part size, e.g. 16M (the server may raise it)"
    )
    p.add_argument(
        "--limit-rate", type=byte_count, metavar="BYTES", help="at most this many bytes per second, e.g. 10M"
    )
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("download", parents=[common], help="download a file and verify its checksums")
    p.add_argument("file_id", metavar="FILE_ID")
    p.add_argument("-o", "--output", metavar="PATH", help="file or directory (default: its name, here)")
    p.set_defaults(func=cmd_download)

    ls = sub.add_parser("ls", help="list cases, a case's logs or a log's files")
    ls_sub = ls.add_subparsers(dest="what", required=True)
    ls_sub.add_parser("cases", parents=[common]).set_defaults(func=cmd_ls, parent=None)
    ls_sub.add_parser("logs", parents=[common]).add_argument("parent", metavar="CASE_ID")
    ls_sub.add_parser("files", parents=[common]).add_argument("parent", metavar="LOG_ID")
    ls.set_defaults(func=cmd_ls)

    create = sub.add_parser("create", help="create a case or a log (prints its id)")
    create_sub = create.add_subparsers(dest="what", required=True)
    p = create_sub.add_parser("case", parents=[common])
    p.add_argument("title")
    p.add_argument("--reference")
    p = create_sub.add_parser("log", parents=[common])
    p.add_argument("case_id", metavar="CASE_ID")
    p.add_argument("name")
    create.set_defaults(func=cmd_create)
