"""The HTTP API, seen from a client: typed calls, one error type, retries with backoff.

Retried (exponential backoff with full jitter, ``Retry-After`` honoured): connection errors, timeouts,
5xx and 429, and any problem ``code`` the caller names as transient (``UPLOAD_COMPLETING``). Any other
answer that is not 2xx raises :class:`ApiError` with the problem document's ``status``/``code``/
``detail``. A retried POST that creates something (an upload, a token) may create it twice when an
answer was lost; the server reaps what nobody completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import msgspec

T = TypeVar("T")

DEFAULT_API_URL = "http://127.0.0.1:8000"
USER_AGENT = "upload-plane-client/0.1"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """Any failure the client reports: an API problem (``status`` > 0) or no answer (``status`` 0).

    ``code`` is the API's stable code (``NOT_FOUND``, ``PARTS_MISSING``...) or one of the client's own:
    ``UNREACHABLE`` (no answer after every retry), ``STORE_REJECTED`` (object storage refused a
    transfer), ``INTEGRITY_ERROR`` (bytes differ from their checksums), ``FILE_CHANGED`` (a local file
    changed while it was read), ``NOT_SIGNED_IN``.
    """

    def __init__(self, status: int, code: str, detail: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = dict(body or {})


@dataclass(frozen=True)
class Retry:
    """How long to keep trying: ``attempts`` tries in all, waits drawn from [0, base * 2**n] (capped)."""

    attempts: int = 10
    base: float = 0.5
    cap: float = 20.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 - jitter, not secrets


#: Called before each wait: (what failed, seconds until the next try, attempt number).
RetryNotice = Callable[[str, float, int], None]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), else ``None``."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def problem_of(response: httpx.Response) -> ApiError:
    """The API's problem+json as an :class:`ApiError` (or a generic one for other bodies)."""
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return ApiError(
            response.status_code, body["code"], str(body.get("detail") or body.get("title")), body
        )
    return ApiError(
        response.status_code, f"HTTP_{response.status_code}", response.reason_phrase or "request failed"
    )


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def with_retries(
    attempt: Callable[[], Any],
    retry: Retry,
    what: str,
    notice: RetryNotice | None = None,
) -> httpx.Response:
    """Run ``attempt`` (which returns an ``httpx.Response`` or raises) until it gives an answer that
    is not transient, waiting between tries. Returns the last answer (which may be an error status);
    raises ``ApiError(0, "UNREACHABLE")`` when every try failed without an answer."""
    for n in range(retry.attempts):
        last = n == retry.attempts - 1
        try:
            response: httpx.Response = await attempt()
        except httpx.TransportError as exc:  # connect, read/write errors and timeouts
            if last:
                raise ApiError(0, "UNREACHABLE", f"{what}: {describe(exc)}") from exc
            wait, reason = retry.delay(n), describe(exc)
        else:
            if response.status_code not in RETRY_STATUS or last:
                return response
            wait, reason = retry.delay(n, retry_after_seconds(response)), f"HTTP {response.status_code}"
        if notice is not None:
            notice(f"{what}: {reason}", wait, n + 1)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises on its last attempt


# -- wire types (what the client reads; unknown fields are ignored) --------------------------------


class Case(msgspec.Struct):
    id: str
    title: str
    reference: str | None = None
    description: str = ""
    created_at: str = ""


class Log(msgspec.Struct):
    id: str
    case_id: str
    name: str
    description: str = ""
    created_at: str = ""


class FileInfo(msgspec.Struct):
    id: str
    log_id: str
    case_id: str
    filename: str
    size: int
    status: str
    content_type: str = ""
    sha256: str | None = None
    crc64nvme: str | None = None
    verified_by: str | None = None
    created_at: str = ""


class Upload(msgspec.Struct):
    id: str
    file_id: str
    log_id: str
    filename: str
    size: int
    part_size: int
    part_count: int
    status: str
    expires_at: str
    checksum_algorithm: str | None = None

    @property
    def store_checks(self) -> bool:
        """The store checks the whole file's CRC64NVME (and each part is signed with its own)."""
        return self.checksum_algorithm == "CRC64NVME"

    def part_bytes(self, n: int) -> int:
        return max(0, min(self.part_size, self.size - (n - 1) * self.part_size))


class StoredPart(msgspec.Struct):
    part_number: int
    size: int
    etag: str = ""
    checksum_crc64nvme: str | None = None


class PartState(msgspec.Struct):
    uploaded: list[StoredPart]
    missing: list[int]
    bytes_uploaded: int


class UploadStatus(Upload):
    parts: PartState | None = None


class SignedPart(msgspec.Struct):
    part_number: int
    url: str
    headers: dict[str, str]
    size: int
    method: str = "PUT"
    expires_at: str = ""  # copied from the answer (see ``sign_parts``)

    def expires_soon(self, margin: float = 30.0) -> bool:
        try:
            expires = datetime.fromisoformat(self.expires_at)
        except ValueError:
            return False
        return expires.timestamp() - time.time() < margin


class SignedParts(msgspec.Struct):
    parts: list[SignedPart]
    expires_at: str


class PutUrl(msgspec.Struct):
    url: str
    headers: dict[str, str]
    expires_at: str = ""
    method: str = "PUT"


class ItemProblem(msgspec.Struct):
    status: int
    code: str
    detail: str
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def error(self) -> ApiError:
        return ApiError(self.status, self.code, self.detail, {**self.extra, "code": self.code})


class BatchStartedItem(msgspec.Struct):
    index: int
    status: str  # "started" or "refused"
    upload: Upload | None = None
    put: PutUrl | None = None
    error: ItemProblem | None = None


class BatchStarted(msgspec.Struct):
    items: list[BatchStartedItem]
    started: int = 0
    refused: int = 0


class BatchCompletedItem(msgspec.Struct):
    id: str
    status: str  # "done", "missing" or "refused"
    file: FileInfo | None = None
    missing_parts: list[int] | None = None
    error: ItemProblem | None = None


class BatchCompleted(msgspec.Struct):
    items: list[BatchCompletedItem]


class DownloadLink(msgspec.Struct):
    url: str
    expires_at: str


class SignIn(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int


class TokenCreated(msgspec.Struct):
    id: str
    name: str
    token: str
    expires_at: str


class Me(msgspec.Struct):
    id: str
    username: str
    role: str


class _Page(msgspec.Struct):
    items: list[Any]
    next_cursor: str | None = None


# -- the client -------------------------------------------------------------------------------------


class Api:
    """The upload-plane API over one ``httpx.AsyncClient`` (use ``async with``)."""

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float = 60.0,
        notice: RetryNotice | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.retry = retry or Retry()
        self.notice = notice
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.AsyncClient(
            base_url=f"{self.api_url}/api/v1",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry_codes: frozenset[str] = frozenset(),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call with retries; the decoded JSON body (``None`` for 204)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        what = f"{method} {path}"
        for n in range(self.retry.attempts):
            response = await with_retries(
                lambda: self.http.request(method, path, json=json, params=query, headers=headers),
                self.retry,
                what,
                self.notice,
            )
            if response.is_success:
                return response.json() if response.content else None
            error = problem_of(response)
            if error.code not in retry_codes or n == self.retry.attempts - 1:
                raise error
            wait = self.retry.delay(n, retry_after_seconds(response))
            if self.notice is not None:
                self.notice(f"{what}: {error.code}", wait, n + 1)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def typed(self, type_: type[T], method: str, path: str, **kwargs: Any) -> T:
        return msgspec.convert(await self.call(method, path, **kwargs), type_)

    async def all_pages(self, type_: type[T], path: str, **params: Any) -> list[T]:
        items: list[T] = []
        cursor: str | None = None
        while True:
            page = await self.typed(_Page, "GET", path, params={**params, "limit": 500, "cursor": cursor})
            items += [msgspec.convert(item, type_) for item in page.items]
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor

    # -- accounts -----------------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> SignIn:
        return await self.typed(
            SignIn, "POST", "/auth/login", json={"username": username, "password": password}
        )

    async def logout(self, refresh_token: str | None = None) -> None:
        await self.call("POST", "/auth/logout", json={"refresh_token": refresh_token})

    async def me(self) -> Me:
        return await self.typed(Me, "GET", "/me")

    async def create_token(self, name: str, expires_in_days: int) -> TokenCreated:
        body = {"name": name, "expires_in_days": expires_in_days}
        return await self.typed(TokenCreated, "POST", "/tokens", json=body)

    async def revoke_token(self, token_id: str) -> None:
        await self.call("DELETE", f"/tokens/{token_id}")

    # -- cases, logs, files -------------------------------------------------------------------------

    async def cases(self) -> list[Case]:
        return await self.all_pages(Case, "/cases")

    async def create_case(self, title: str, reference: str | None = None) -> Case:
        body: dict[str, Any] = {"title": title} | ({"reference": reference} if reference else {})
        return await self.typed(Case, "POST", "/cases", json=body)

    async def logs(self, case_id: str) -> list[Log]:
        return await self.all_pages(Log, f"/cases/{case_id}/logs")

    async def create_log(self, case_id: str, name: str) -> Log:
        return await self.typed(Log, "POST", f"/cases/{case_id}/logs", json={"name": name})

    async def files(self, log_id: str) -> list[FileInfo]:
        return await self.all_pages(FileInfo, f"/logs/{log_id}/files")

    async def file(self, file_id: str) -> FileInfo:
        return await self.typed(FileInfo, "GET", f"/files/{file_id}")

    async def download_link(self, file_id: str) -> DownloadLink:
        return await self.typed(
            DownloadLink, "GET", f"/files/{file_id}/download", params={"redirect": "false"}
        )

    # -- uploads ------------------------------------------------------------------------------------

    async def start_upload(
        self,
        log_id: str,
        filename: str,
        size: int,
        *,
        content_type: str | None = None,
        part_size: int | None = None,
        store_checks: bool = True,
        idempotency_key: str | None = None,
    ) -> Upload:
        """Start an upload whose whole-file checksums are declared at complete; with ``store_checks``
        the store checks the whole-file CRC64NVME (and every part is signed with its own).

        With ``idempotency_key`` a start sent again (its answer was lost, here or in an earlier
        process) answers the same upload; without one, each retry would open another upload.
        """
        body: dict[str, Any] = {"filename": filename, "size": size}
        if store_checks:
            body["checksum_algorithm"] = "CRC64NVME"
        if content_type:
            body["content_type"] = content_type
        if part_size:
            body["part_size"] = part_size
        return await self.typed(
            Upload,
            "POST",
            f"/logs/{log_id}/uploads",
            json=body,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else None,
            # a retry whose first try is still being started elsewhere: wait for it
            retry_codes=frozenset({"UPLOAD_COMPLETING"}),
        )

    async def upload_status(self, upload_id: str) -> UploadStatus:
        return await self.typed(UploadStatus, "GET", f"/uploads/{upload_id}")

    async def sign_parts(
        self, upload_id: str, numbers: list[int], crc64nvme: Mapping[int, str] | None = None
    ) -> SignedParts:
        body: dict[str, Any] = {"part_numbers": numbers}
        if crc64nvme:
            body["checksums_crc64nvme"] = {str(n): c for n, c in crc64nvme.items()}
        signed = await self.typed(SignedParts, "POST", f"/uploads/{upload_id}/parts", json=body)
        for part in signed.parts:
            part.expires_at = signed.expires_at
        return signed

    async def complete(self, upload_id: str, sha256: str, crc64nvme: str | None = None) -> FileInfo:
        """Complete (idempotent: retried while another request holds the upload)."""
        body = {"sha256": sha256} | ({"crc64nvme": crc64nvme} if crc64nvme else {})
        return await self.typed(
            FileInfo,
            "POST",
            f"/uploads/{upload_id}/complete",
            json=body,
            retry_codes=frozenset({"UPLOAD_COMPLETING", "PARTS_CHANGED"}),
        )

    async def abort(self, upload_id: str) -> None:
        await self.call("DELETE", f"/uploads/{upload_id}")

    async def start_batch(
        self, log_id: str, files: list[dict[str, Any]], idempotency_key: str
    ) -> BatchStarted:
        """Start up to 1,000 uploads at once; each file answered alone (``items``, in order). The
        ``idempotency_key`` makes the same batch sent again (its answer was lost; the client died)
        answer the same uploads, with fresh URLs for the open ones."""
        return await self.typed(
            BatchStarted,
            "POST",
            f"/logs/{log_id}/uploads/batch",
            json={"files": files},
            headers={"Idempotency-Key": idempotency_key},
        )

    async def complete_batch(self, uploads: list[dict[str, Any]]) -> BatchCompleted:
        """Complete up to 1,000 uploads at once (idempotent): each done, missing or refused."""
        return await self.typed(BatchCompleted, "POST", "/uploads/batch/complete", json={"uploads": uploads})
