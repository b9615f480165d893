"""The ``Storage`` contract: what the services rely on from object storage, asserted by the same test
functions against MinIO (through the real gateway, ``S3Storage``) and against the in-memory fake
(``MemoryStorage``). What MinIO does here is the contract; the fake may only do what MinIO does, so a
service test that passes on the fake does not rely on something the real store would not do.

Why one file in tests/unit with a parametrized store, the MinIO half marked ``real``: the two halves
are the same functions, so they cannot drift into two suites that check different things; the fake's
half is a unit test (no server, milliseconds) that runs in every fast run, and the MinIO half runs in
the real tier (``REQUIRE_REAL_SERVICES=1 pytest -m real``) on the session's MinIO, a bucket of each
test's own.

Each backend puts bytes its own way (``Store.put_part``, ``Store.put_object``): through a presigned
PUT URL sent with httpx for MinIO, as a client does; ``MemoryStorage.put_part`` and ``put_object`` for
the fake, which has no data path.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import real_settings
from tests.fakes import MemoryStorage, multipart_etag
from upload_plane.client.checksums import crc64nvme, crc_b64
from upload_plane.errors import ChecksumMismatch, PartsChanged, StorageRejected, StoredUploadGone
from upload_plane.settings import ObjectLock
from upload_plane.storage import (
    FULL_OBJECT,
    ObjectToSign,
    PartToSign,
    S3Storage,
    SignedUrl,
    Storage,
    StoredPart,
)

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
#: S3's (and MinIO's) smallest part but the last.
MIN_PART = 5 * MIB
CONTENT_TYPE = "video/mp4"


@dataclass
class Store:
    storage: Storage
    #: Put one part's bytes (with its signed CRC64NVME when ``crc``), as a client would.
    put: Callable[[str, str, int, bytes, bool], Awaitable[None]]
    #: Send bytes with a single-PUT URL (and the headers it signed) to ``key``: the store's status.
    put_object: Callable[[str, SignedUrl, bytes, dict[str, str]], Awaitable[int]]

    async def put_part(self, key: str, upload_id: str, n: int, data: bytes, crc: bool = False) -> None:
        await self.put(key, upload_id, n, data, crc)


def memory_store() -> Store:
    fake = MemoryStorage()

    async def put(key: str, upload_id: str, n: int, data: bytes, crc: bool) -> None:
        fake.put_part(upload_id, n, data)

    async def put_object(key: str, signed: SignedUrl, data: bytes, headers: dict[str, str]) -> int:
        return fake.put_object(signed.url, data, headers)

    return Store(fake, put, put_object)


def minio_store(request: pytest.FixtureRequest) -> Store:
    minio = request.getfixturevalue("minio")
    bucket = f"contract-{secrets.token_hex(6)}"
    minio.create_bucket(bucket)
    gateway = S3Storage(real_settings("sqlite+aiosqlite://", minio, s3_bucket=bucket))  # no database

    async def put(key: str, upload_id: str, n: int, data: bytes, crc: bool) -> None:
        checksum = crc_b64(crc64nvme(data)) if crc else None
        [signed] = gateway.presign_parts(key, upload_id, [PartToSign(n, len(data), None, checksum)], 300)
        async with httpx.AsyncClient(timeout=60) as http:
            resp = await http.put(signed.url, content=data, headers=signed.headers)
        assert resp.status_code == 200, resp.text

    async def put_object(key: str, signed: SignedUrl, data: bytes, headers: dict[str, str]) -> int:
        async with httpx.AsyncClient(timeout=60) as http:
            return (await http.put(signed.url, content=data, headers=headers)).status_code

    return Store(gateway, put, put_object)


@pytest.fixture(params=["memory", pytest.param("minio", marks=pytest.mark.real)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made = memory_store() if request.param == "memory" else minio_store(request)
    try:
        yield made
    finally:
        await made.storage.aclose()


def new_key() -> str:
    return f"cases/c/logs/l/{secrets.token_hex(8)}/evidence.bin"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def test_an_upload_from_create_to_object(store: Store) -> None:
    s, key = store.storage, new_key()
    one, two = os.urandom(MIN_PART), os.urandom(1000)
    await s.ping()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    assert upload_id
    assert await s.list_parts(key, upload_id) == []
    assert await s.list_multipart_uploads(key) == [upload_id]
    await store.put_part(key, upload_id, 2, two)  # parts arrive in any order
    await store.put_part(key, upload_id, 1, one)
    listed = await s.list_parts(key, upload_id)
    assert listed == [StoredPart(1, len(one), md5(one)), StoredPart(2, len(two), md5(two))]
    assert await s.head_object(key) is None  # nothing to see before complete
    done = await s.complete_multipart(key, upload_id, listed)
    assert (done.etag, done.checksum_crc64nvme) == (multipart_etag([one, two]), None)
    head = await s.head_object(key)
    assert head is not None
    assert (head.size, head.etag, head.content_type) == (len(one) + len(two), done.etag, CONTENT_TYPE)
    assert (head.checksum_crc64nvme, head.checksum_type) == (None, None)
    assert await s.part_checksum(key, 1) is None  # a plain upload's parts: none computed
    with pytest.raises(StorageRejected):  # a part the object does not have (416)
        await s.part_checksum(key, 3)
    # The multipart upload is gone once completed: listed nowhere, a second complete refused.
    assert await s.list_multipart_uploads(key) == []
    with pytest.raises(StoredUploadGone):
        await s.list_parts(key, upload_id)
    with pytest.raises(StoredUploadGone):
        await s.complete_multipart(key, upload_id, listed)
    await s.abort_multipart(key, upload_id)  # an abort after complete says nothing (MinIO: 204) ...
    assert await s.head_object(key) == head  # ... and changes nothing


async def test_a_part_sent_again_replaces_the_first(store: Store) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    first, again = os.urandom(100), os.urandom(200)
    await store.put_part(key, upload_id, 1, first)
    await store.put_part(key, upload_id, 1, again)
    assert await s.list_parts(key, upload_id) == [StoredPart(1, len(again), md5(again))]
    await s.complete_multipart(key, upload_id, await s.list_parts(key, upload_id))
    head = await s.head_object(key)
    assert head is not None and (head.size, head.etag) == (len(again), multipart_etag([again]))


async def test_complete_refuses_parts_the_store_does_not_hold_as_listed(store: Store) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    one, two = os.urandom(MIN_PART), os.urandom(10)
    await store.put_part(key, upload_id, 1, one)
    await store.put_part(key, upload_id, 2, two)
    listed = await s.list_parts(key, upload_id)
    wrong_etag = [listed[0], StoredPart(2, len(two), md5(b"other bytes"))]
    not_sent = [*listed, StoredPart(3, 10, md5(two))]
    out_of_order = listed[::-1]
    for parts in (wrong_etag, not_sent, out_of_order):
        with pytest.raises(PartsChanged):  # InvalidPart, InvalidPartOrder
            await s.complete_multipart(key, upload_id, parts)
    with pytest.raises(StorageRejected):  # no parts at all: InvalidRequest
        await s.complete_multipart(key, upload_id, [])
    with pytest.raises(ChecksumMismatch):  # a plain upload has no CRC64NVME to check one against
        await s.complete_multipart(key, upload_id, listed, crc_b64(crc64nvme(one + two)))
    # Nothing was assembled and the upload is still open: the right parts complete it.
    assert await s.head_object(key) is None
    assert await s.list_parts(key, upload_id) == listed
    await s.complete_multipart(key, upload_id, listed)
    assert await s.head_object(key) is not None


async def test_complete_refuses_a_part_under_5_mib_but_the_last(store: Store) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    await store.put_part(key, upload_id, 1, os.urandom(MIN_PART - 1))
    await store.put_part(key, upload_id, 2, os.urandom(10))
    listed = await s.list_parts(key, upload_id)
    with pytest.raises(PartsChanged):  # EntityTooSmall
        await s.complete_multipart(key, upload_id, listed)
    assert await s.head_object(key) is None
    assert await s.list_parts(key, upload_id) == listed
    await s.complete_multipart(key, upload_id, listed[:1])  # alone, it is the last: allowed
    head = await s.head_object(key)
    assert head is not None and head.size == MIN_PART - 1


async def test_abort_ends_an_open_upload_and_never_fails_for_one_the_store_does_not_know(
    store: Store,
) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    await store.put_part(key, upload_id, 1, os.urandom(100))
    await s.abort_multipart(key, upload_id)
    with pytest.raises(StoredUploadGone):
        await s.list_parts(key, upload_id)
    with pytest.raises(StoredUploadGone):
        await s.complete_multipart(key, upload_id, [StoredPart(1, 100, "x")])
    assert await s.list_multipart_uploads(key) == []
    assert await s.head_object(key) is None
    await s.abort_multipart(key, upload_id)  # again
    elsewhere = new_key()
    other = await s.create_multipart(elsewhere, CONTENT_TYPE)
    await s.abort_multipart(key, other)  # a real id, named with another key: no error, and ...
    assert await s.list_multipart_uploads(elsewhere) == [other]  # ... that upload stays open
    assert await s.list_parts(elsewhere, other) == []
    with pytest.raises(StoredUploadGone):  # an upload is only found on its own key
        await s.list_parts(key, other)


async def test_list_multipart_uploads_lists_exactly_the_open_ones_on_exactly_that_key(store: Store) -> None:
    s, key = store.storage, new_key()
    ids = [await s.create_multipart(key, CONTENT_TYPE) for _ in range(3)]
    longer = await s.create_multipart(key + ".part", CONTENT_TYPE)  # the key is a prefix of it
    elsewhere = await s.create_multipart(new_key(), CONTENT_TYPE)
    assert len({*ids, longer, elsewhere}) == 5
    assert sorted(await s.list_multipart_uploads(key)) == sorted(ids)
    await s.abort_multipart(key, ids[0])
    await store.put_part(key, ids[1], 1, b"done")
    await s.complete_multipart(key, ids[1], await s.list_parts(key, ids[1]))
    assert await s.list_multipart_uploads(key) == [ids[2]]
    assert await s.list_multipart_uploads(key + ".part") == [longer]
    assert await s.list_multipart_uploads(new_key()) == []


async def test_unknown_uploads_and_objects(store: Store) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    await s.abort_multipart(key, upload_id)
    with pytest.raises(StoredUploadGone):
        await s.list_parts(key, upload_id)
    assert await s.head_object(key) is None
    assert await s.part_checksum(key, 1) is None
    await s.delete_object(key)  # deleting what is not there succeeds


async def test_delete_object_removes_it(store: Store) -> None:
    s, key = store.storage, new_key()
    upload_id = await s.create_multipart(key, CONTENT_TYPE)
    await store.put_part(key, upload_id, 1, b"evidence")
    await s.complete_multipart(key, upload_id, await s.list_parts(key, upload_id))
    assert await s.head_object(key) is not None
    await s.delete_object(key)
    assert await s.head_object(key) is None
    await s.delete_object(key)


async def test_a_crc64nvme_upload_is_checked_by_the_store(store: Store) -> None:
    """Parts signed with their CRC64NVME; the store checks the whole file's at complete, answers it,
    and keeps it with the object; ``part_checksum`` reports a part's own CRC64NVME, which the store
    computed. The fake computes them as MinIO does. (moto computes none and reports back whatever was
    declared: the services tell the two apart with ``part_checksum``, ``uploads/finish.py``, and the
    embedded tier runs them on moto.)"""
    s, key = store.storage, new_key()
    one, two = os.urandom(MIN_PART), os.urandom(1234)
    whole = crc_b64(crc64nvme(one + two))
    upload_id = await s.create_multipart(key, CONTENT_TYPE, crc64nvme=True)
    await store.put_part(key, upload_id, 1, one, crc=True)
    await store.put_part(key, upload_id, 2, two, crc=True)
    listed = await s.list_parts(key, upload_id)
    assert [(p.part_number, p.size, p.checksum_crc64nvme) for p in listed] == [
        (1, len(one), crc_b64(crc64nvme(one))),
        (2, len(two), crc_b64(crc64nvme(two))),
    ]
    with pytest.raises(ChecksumMismatch):  # the right parts, another whole-file checksum
        await s.complete_multipart(key, upload_id, listed, crc_b64(crc64nvme(two + one)))
    with pytest.raises(PartsChanged):  # without a whole-file value no part lists its checksum
        await s.complete_multipart(key, upload_id, listed)
    other_crc = [listed[0], StoredPart(2, len(two), listed[1].etag, crc_b64(crc64nvme(one)))]
    with pytest.raises(PartsChanged):  # a part listed with another checksum than it has
        await s.complete_multipart(key, upload_id, other_crc, whole)
    assert await s.head_object(key) is None
    assert await s.list_parts(key, upload_id) == listed
    done = await s.complete_multipart(key, upload_id, listed, whole)
    assert (done.checksum_crc64nvme, done.checksum_type) == (whole, FULL_OBJECT)
    head = await s.head_object(key)
    assert head is not None
    assert (head.size, head.checksum_crc64nvme, head.checksum_type) == (
        len(one) + len(two),
        whole,
        FULL_OBJECT,
    )
    assert await s.part_checksum(key, 1) == crc_b64(crc64nvme(one))
    assert await s.part_checksum(key, 2) == crc_b64(crc64nvme(two))


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.parametrize("checksum", ["sha256", "crc64nvme"])
async def test_a_single_put_writes_its_key_once_with_the_signed_length_and_checksum(
    store: Store, checksum: str
) -> None:
    """A small file's one PUT: the URL signs the length, the type, one checksum and ``If-None-Match:
    *``. Other bytes, another length or a missing signed header are refused and store nothing; once
    the object is there, the URL is refused (412) whatever it carries, and the object stays."""
    s, key = store.storage, new_key()
    data, other = os.urandom(3000), os.urandom(3000)
    sums = {"sha256": sha256_b64(data)} if checksum == "sha256" else {"crc64nvme": crc_b64(crc64nvme(data))}
    wanted = ObjectToSign(
        key, len(data), "image/jpeg", checksum_sha256=sums.get("sha256"),
        checksum_crc64nvme=sums.get("crc64nvme"),
    )  # fmt: skip
    [signed] = s.presign_puts([wanted], 300)
    assert {k.lower(): v for k, v in signed.headers.items()} == {
        "content-length": "3000", "content-type": "image/jpeg", "if-none-match": "*",
        f"x-amz-checksum-{checksum}": sums[checksum],
    }  # fmt: skip
    assert await store.put_object(key, signed, other, signed.headers) == 400  # not the signed bytes
    short = {**signed.headers, "Content-Length": "2999"}
    assert await store.put_object(key, signed, data[:2999], short) == 403  # not the signed length
    unconditional = {k: v for k, v in signed.headers.items() if k != "If-None-Match"}
    assert await store.put_object(key, signed, data, unconditional) == 400  # a signed header left out
    assert await s.head_object(key) is None
    assert await store.put_object(key, signed, data, signed.headers) == 200
    head = await s.head_object(key)
    assert head is not None
    assert (head.size, head.etag, head.content_type) == (len(data), md5(data), "image/jpeg")
    if checksum == "sha256":
        assert (head.checksum_sha256, head.checksum_crc64nvme) == (sums["sha256"], None)
    else:
        assert (head.checksum_sha256, head.checksum_crc64nvme) == (None, sums["crc64nvme"])
    for replay in (data, other):  # the URL replayed, with the same bytes or others: refused
        assert await store.put_object(key, signed, replay, signed.headers) == 412
    assert await s.head_object(key) == head


async def test_a_copy_stays_in_the_store_and_a_purge_empties_a_key(store: Store) -> None:
    """What a form upload's settle and the reaper's purges rely on (``uploads/kinds.py``)."""
    s, source, target = store.storage, new_key(), new_key()
    with pytest.raises(StoredUploadGone):  # nothing landed yet
        await s.copy_object(source, target)
    upload_id = await s.create_multipart(source, CONTENT_TYPE)
    data = os.urandom(1000)
    await store.put_part(source, upload_id, 1, data)
    await s.complete_multipart(source, upload_id, await s.list_parts(source, upload_id))
    copied = await s.copy_object(source, target)
    head = await s.head_object(target)
    assert head is not None and (head.size, head.etag, head.content_type) == (
        len(data),
        md5(data),
        CONTENT_TYPE,
    )
    assert copied.etag == md5(data)  # a copy is one part: its ETag is the bytes' MD5
    assert (copied.version_id, head.version_id) == (None, None)  # a bucket that keeps no versions
    assert await s.purge(source) == 1
    assert await s.head_object(source) is None
    assert await s.purge(source) == 0  # an empty key: nothing to do, no error
    assert await s.head_object(target) is not None  # the copy is its own object


async def test_a_bucket_made_without_object_lock_says_so_and_refuses_holds(store: Store) -> None:
    s, key = store.storage, new_key()
    assert await s.object_lock_enabled() is False
    with pytest.raises(StorageRejected):  # MinIO: InvalidRequest, the bucket has no lock configuration
        await s.protect(key, "v1", ObjectLock("legal-hold"), datetime.now(UTC))


async def test_a_tombstone_takes_only_an_empty_key(store: Store) -> None:
    s, key = store.storage, new_key()
    assert await s.put_tombstone(key) is True
    head = await s.head_object(key)
    assert head is not None and head.size == 0
    assert await s.put_tombstone(key) is False  # something is there: nothing written
    assert await s.purge(key) == 1
    assert await s.head_object(key) is None
