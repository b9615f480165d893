"""The Uppy Companion S3 contract (``@uppy/aws-s3`` v6, ``companionEndpoint``), translated onto the
upload service. Free of HTTP; the routes are in ``controller.py``.

Served for two scopes: a signed-in user (the target log from ``metadata.log_id``, the contributor
role checked as for any upload) and an upload link (its own log; its budget reserved in the same
transaction as the upload's rows). Stricter than Companion:

- object keys are built by the server, never taken from the client; ``?key=`` must be the key of
  the ``uploadId`` (``KeyMismatch``, 403), and the ``uploadId`` must belong to the caller's scope
  (else 404, as for anything one may not see);
- the ``uploadId`` is a signed capability (``capability.py``) binding the plan, so part numbers are
  bounded (400) and every part URL signs the exact size that part must have;
- an unknown or forged ``uploadId`` is 404, never 500; ETags are accepted quoted or not;
- Uppy does not send the file's size, and the server must plan the parts: pages send it as
  ``metadata.size``. The plan is Uppy's own chunking (``getChunkSize``, or its default), and a page
  whose chunks the service cannot plan is refused at the start, so a size mismatch is never
  discovered half-way (and if a part is sent with another size anyway, its signature and the size
  check at complete refuse it: a wrong part never becomes a file).

The part-signing route is the hot one (one request per part). It checks the capability locally and
trusts an authorisation it made (session or link valid, role held, upload open) for at most
``authorization_cache_ttl`` seconds per upload and credential, so it needs no database round trip
per part and a revocation still takes effect within that time on every replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..auth import credentials, tokens
from ..auth.principal import ClientInfo, Principal
from ..db import Connection
from ..errors import (
    FileTooLarge,
    NotFound,
    Unauthenticated,
    UploadExpired,
    UploadNotUploading,
    ValidationFailed,
)
from ..links import service as links
from ..links.service import LinkGrant
from ..models import Log, utcnow
from ..statements import Query
from ..storage import PartToSign, PresignedPost, StoredPart
from ..uploads.abort import abort_upload
from ..uploads.complete import complete_upload
from ..uploads.context import Uploads
from ..uploads.forms import settle_form_upload, start_form_upload
from ..uploads.kinds import FORM_POST, kind_of
from ..uploads.queries import UPLOAD_BY_ID, UPLOAD_OF_KEY, UploadRecord
from ..uploads.read import get_upload
from ..uploads.rules import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, plan_parts
from ..uploads.sign import part_state
from ..uploads.start import NewUpload, OnStart, start_upload
from ..uploads.state import UploadStatus
from . import capability
from .capability import Capability


@dataclass(frozen=True, slots=True)
class Scope:
    """Who calls an Uppy route: a user (``u:<id>``) or an upload link (``l:<id>``)."""

    principal: Principal
    tag: str
    link: LinkGrant | None = None

    @classmethod
    def of_user(cls, principal: Principal) -> Scope:
        return cls(principal, f"u:{principal.id}")

    @classmethod
    def of_link(cls, grant: LinkGrant) -> Scope:
        return cls(grant.principal, f"l:{grant.id}", grant)


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """The session cookie of a signed-in page (the part-signing route checks it without a query)."""

    value: str
    client: ClientInfo


@dataclass(frozen=True, slots=True)
class LinkToken:
    value: str
    client: ClientInfo


Credential = Scope | SessionCookie | LinkToken


@dataclass(frozen=True, slots=True)
class SignedPartUrl:
    url: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Started:
    upload_id: str  # the capability Uppy echoes back
    key: str


@dataclass(frozen=True, slots=True)
class Settled:
    status: str
    file_id: str


def uppy_chunk_size(size: int, requested: int | None) -> int:
    """The part size ``@uppy/aws-s3`` 6 cuts ``size`` into: ``getChunkSize`` (or ``size / 10000``),
    at least 5 MiB, raised to ``size / 10000`` when the parts would be more than 10,000."""
    chunk = requested if requested is not None else math.ceil(size / MAX_PARTS)
    chunk = max(chunk, MIN_PART_SIZE)
    if math.ceil(size / chunk) > MAX_PARTS:
        chunk = math.ceil(size / MAX_PARTS)
    return chunk


class Grants:
    """Authorisations the part-signing route checked, trusted for ``ttl`` seconds each."""

    MAX_ENTRIES = 50_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, str], float] = {}

    def fresh(self, key: tuple[str, str]) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()

    def put(self, key: tuple[str, str]) -> None:
        if len(self._until) >= self.MAX_ENTRIES:
            now = time.monotonic()
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= self.MAX_ENTRIES:
                self._until.clear()
        self._until[key] = time.monotonic() + self.ttl

    def clear(self) -> None:
        """Forget everything (a link was revoked here: its holders are checked again at once)."""
        self._until.clear()


def _int_field(metadata: Mapping[str, Any], name: str, required: bool) -> int | None:
    value = metadata.get(name)
    if value is None or value == "":
        if required:
            raise ValidationFailed(
                f"metadata.{name} is required: Uppy does not send the file's size, so the page must "
                "(e.g. uppy.on('file-added', f => uppy.setFileMeta(f.id, { size: f.size })))"
            )
        return None
    if isinstance(value, bool):
        raise ValidationFailed(f"metadata.{name} must be a whole number of bytes")
    digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16
    if isinstance(value, int) or digits or (isinstance(value, float) and value.is_integer()):
        number = int(value)
    else:
        raise ValidationFailed(f"metadata.{name} must be a whole number of bytes")
    if number < 0:
        raise ValidationFailed(f"metadata.{name} must not be negative")
    return number


_LOGS: sa.Table = Log.__table__  # type: ignore[attr-defined]
LOG_NAME: Query[str] = Query(
    sa.select(_LOGS.c.name).where(_LOGS.c.id == sa.bindparam("log_id")), lambda row: str(row["name"])
)


class UppyService:
    def __init__(self, ctx: Uploads) -> None:
        self.ctx = ctx
        self.storage = ctx.storage
        self.settings = ctx.settings
        self.secret = capability.capability_secret(ctx.settings.jwt_secret)
        self.grants = Grants(ctx.settings.authorization_cache_ttl)

    # -- scopes ---------------------------------------------------------------------------------

    async def link_scope(self, token: str, client: ClientInfo) -> Scope:
        async with self.ctx.db.connect() as conn:
            return Scope.of_link(await links.resolve(conn, token, client))

    async def link_info(self, token: str, client: ClientInfo) -> tuple[LinkGrant, str]:
        """The link and the name of its log, for the link holder's page."""
        async with self.ctx.db.connect() as conn:
            grant = await links.resolve(conn, token, client)
            name = await conn.one(LOG_NAME, log_id=grant.log_id)
        if name is None:
            raise NotFound("No such upload link")
        return grant, name

    def _target_log(self, scope: Scope, metadata: Mapping[str, Any]) -> str:
        if scope.link is not None:
            return scope.link.log_id
        log_id = metadata.get("log_id")
        if not isinstance(log_id, str) or not log_id:
            raise ValidationFailed("metadata.log_id is required: the log to upload into")
        return log_id

    def _reserve(self, scope: Scope, size: int) -> OnStart | None:
        """For a link: take the upload's share of the budget with its rows (the completion step
        gives it back if the upload does not complete)."""
        link = scope.link
        if link is None:
            return None
        link.check_room(size)

        async def reserve(conn: Connection, upload: UploadRecord) -> None:
            await links.reserve(conn, link.id, upload.id, size, utcnow())

        return reserve

    # -- start ----------------------------------------------------------------------------------

    async def create_multipart(
        self, scope: Scope, filename: str, content_type: str | None, metadata: Mapping[str, Any]
    ) -> Started:
        """``POST /s3/multipart``: plan the file as Uppy will cut it, start the upload, and answer
        the capability as its ``uploadId``."""
        log_id = self._target_log(scope, metadata)
        size = _int_field(metadata, "size", required=True)
        assert size is not None
        chunk = uppy_chunk_size(size, _int_field(metadata, "part_size", required=False))
        try:
            fitting = plan_parts(size, self.settings.part_size, None).part_size
            planned = plan_parts(size, self.settings.part_size, chunk) if chunk <= MAX_PART_SIZE else None
        except ValueError as exc:
            raise FileTooLarge(str(exc)) from exc
        if planned is None or planned.part_size != chunk:
            raise ValidationFailed(
                f"Uppy would cut this file into parts of {chunk} bytes, which cannot be planned; set "
                f"getChunkSize to return {fitting} and send metadata.part_size = {fitting}",
                part_size=fitting,
            )
        upload = await start_upload(
            self.ctx, scope.principal, log_id,
            NewUpload(filename=filename, size=size, content_type=content_type, part_size=chunk),
            on_start=self._reserve(scope, size),
        )  # fmt: skip
        cap = Capability(
            upload.id, upload.store_upload_id, upload.size, upload.part_size, upload.part_count, scope.tag,
            int(upload.expires_at.timestamp()), capability.key_digest(upload.key),
        )  # fmt: skip
        return Started(capability.mint(self.secret, cap), upload.key)

    async def presign_post(
        self, scope: Scope, filename: str, content_type: str | None, metadata: Mapping[str, Any]
    ) -> PresignedPost:
        """``GET /s3/params``: a form upload of exactly ``metadata.size`` bytes, recorded pending."""
        log_id = self._target_log(scope, metadata)
        size = _int_field(metadata, "size", required=True)
        assert size is not None
        wanted = NewUpload(filename=filename, size=size, content_type=content_type)
        _, post = await start_form_upload(
            self.ctx, scope.principal, log_id, wanted, on_start=self._reserve(scope, size)
        )
        return post

    async def settle(self, scope: Scope, key: str) -> Settled:
        """The page saw Uppy's ``upload-success`` for a form upload: promote it if its object is there."""
        incoming = FORM_POST.upload_id_of(key)  # what the page saw: the form's own key
        async with self.ctx.db.connect() as conn:
            if incoming is not None:
                upload = await conn.one(UPLOAD_BY_ID, upload_id=incoming)
            else:
                upload = await conn.one(UPLOAD_OF_KEY, key=key)
            link_id = await links.link_of_upload(conn, upload.id) if upload is not None else None
        if upload is None or not kind_of(upload).pending_until_object:  # only a form upload settles
            raise NotFound("No such upload")
        if scope.link is not None:
            if link_id != scope.link.id:
                raise NotFound("No such upload")
        else:
            upload = await get_upload(self.ctx, scope.principal, upload.id)
        status = await settle_form_upload(self.ctx, scope.principal, upload)
        return Settled(status, upload.file_id)

    # -- the multipart upload, by capability --------------------------------------------------

    def _capability(self, token: str, key: str, scope_tag: str | None = None) -> Capability:
        cap = capability.read(self.secret, token)
        if scope_tag is not None and cap.scope != scope_tag:
            raise NotFound("No such upload")
        cap.check_key(key)
        return cap

    async def sign_part(self, token: str, part_number: int, key: str, who: Credential) -> SignedPartUrl:
        """``GET /s3/multipart/{uploadId}/{partNumber}``: one part URL, signing the part's exact size.
        No database round trip while an authorisation for this upload and credential is fresh."""
        cap = self._capability(token, key)
        if not 1 <= part_number <= cap.part_count:
            raise ValidationFailed(
                f"part numbers of this upload are within 1..{cap.part_count}",
                invalid_part_numbers=[part_number],
            )
        if isinstance(who, SessionCookie):
            claims = tokens.read_jwt(who.value, tokens.SESSION, self.settings.jwt_secret)
            if claims is None:
                raise Unauthenticated("The session has expired; sign in again")
            if cap.scope != f"u:{claims.user_id}":
                raise NotFound("No such upload")
            grant = (cap.upload_id, f"s:{claims.session_id}")
        elif isinstance(who, LinkToken):
            grant = (cap.upload_id, f"l:{who.value}")
        else:
            if cap.scope != who.tag:
                raise NotFound("No such upload")
            grant = (cap.upload_id, f"p:{who.principal.credential_id or who.principal.id}")
        if not self.grants.fresh(grant):
            await self._authorise(cap, who)
            self.grants.put(grant)
        ttl = min(self.settings.part_url_ttl, cap.expires - int(time.time()))
        if ttl < 1:
            raise UploadExpired("the upload expired; start a new one")
        part = PartToSign(part_number, cap.part_bytes(part_number))
        signed = self.storage.presign_parts(key, cap.s3_upload_id, [part], ttl)
        return SignedPartUrl(signed[0].url, ttl)

    async def _authorise(self, cap: Capability, who: Credential) -> UploadRecord:
        """The full check behind a grant: the credential is valid now, its scope is the capability's,
        it may still upload there, and the upload is open."""
        if isinstance(who, SessionCookie):
            async with self.ctx.db.connect() as conn:
                principal = await credentials.from_jwt(
                    conn, who.value, tokens.SESSION, self.settings.jwt_secret, who.client
                )
            scope = Scope.of_user(principal)
        elif isinstance(who, LinkToken):
            scope = await self.link_scope(who.value, who.client)
        else:
            scope = who
        if cap.scope != scope.tag:
            raise NotFound("No such upload")
        upload = await get_upload(self.ctx, scope.principal, cap.upload_id)
        if upload.status != UploadStatus.UPLOADING:
            raise UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)
        if upload.expires_at <= utcnow():
            raise UploadExpired("the upload expired; start a new one")
        return upload

    async def list_parts(self, scope: Scope, token: str, key: str) -> list[StoredPart]:
        """``GET /s3/multipart/{uploadId}``: the parts the store holds with their planned sizes."""
        cap = self._capability(token, key, scope.tag)
        upload = await get_upload(self.ctx, scope.principal, cap.upload_id)
        return (await part_state(self.ctx, upload)).uploaded

    async def complete(self, scope: Scope, token: str, key: str, parts: list[tuple[int, str]]) -> str:
        """``POST /s3/multipart/{uploadId}/complete``: the object's location once the file is
        available (every planned part checked in the store, as for any upload)."""
        cap = self._capability(token, key, scope.tag)
        bad = sorted({n for n, _ in parts if not 1 <= n <= cap.part_count})
        if bad:
            raise ValidationFailed(
                f"part numbers of this upload are within 1..{cap.part_count}", invalid_part_numbers=bad[:100]
            )
        file = await complete_upload(self.ctx, scope.principal, cap.upload_id, parts or None)
        return self.storage.object_url(file.key)

    async def abort(self, scope: Scope, token: str, key: str) -> None:
        """``DELETE /s3/multipart/{uploadId}``: abort (a link gets the upload's share back)."""
        cap = self._capability(token, key, scope.tag)
        await abort_upload(self.ctx, scope.principal, cap.upload_id)
