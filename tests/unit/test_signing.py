"""``Presigner`` against botocore: byte-identical URLs for the same inputs and a frozen clock.

botocore reads the clock in ``botocore.auth`` (``get_current_datetime()`` in recent versions,
``datetime.datetime.utcnow()`` in older ones); both are replaced for the duration of a test, and
every comparison also checks that botocore's ``X-Amz-Date`` is the frozen one, so a botocore that
finds the time some other way fails loudly instead of comparing against the real clock.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.config import Config

from upload_plane.signing import Presigner

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
BUCKET = "evidence"

ENDPOINTS = [
    "http://127.0.0.1:9000",
    "http://localhost:9000/",
    "https://s3.example.com",
    "https://s3.example.com:443",  # botocore keeps :443 in the URL but signs host without it
    "http://localhost:80",
    "HTTPS://S3.Example.COM:8443",  # the signed host is lower-cased, the URL keeps the spelling
    "http://[::1]:9000",
    "https://gateway.example.com/storage/s3/",  # a path prefix in front of the bucket
    "http://127.0.0.1:9000//a/./b/../c",  # botocore normalises the prefix
    "http://127.0.0.1:9000/with space%41",  # ...and percent-encodes it
]
REGIONS = ["us-east-1", "eu-central-1"]
INSTANTS = [
    dt.datetime(2024, 5, 6, 7, 8, 9, 999_999, tzinfo=dt.UTC),
    dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=dt.UTC),  # the signing key changes a second later
    dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=dt.UTC),
]
KEYS = [
    "cases/01J/logs/02K/uploads/abc/file.bin",
    "with space/and  two  spaces.txt",
    "unicode/Zürich/証拠/ファイル 😀.mp4",
    "reserved/tilde~plus+percent%25equals=amp&q?hash#semi;colon:at@comma,star*",
    "slashes//a///b/c/",
    "/leading/slash",
    "quote'dquote\"paren()brackets[]{}|^`<>\\",
]
UPLOAD_IDS = ["2~abc_DEF-ghi.jkl", "abc+/=def==", "ZmFrZS91cGxvYWQraWQ="]
CHECKSUM = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
DISPOSITIONS = [
    'attachment; filename="report.pdf"',
    'attachment; filename="a;b\\"c%20d.txt"; filename*=UTF-8\'\'a%3Bb%22c%2520d%20%C3%BC.txt',
    "inline; filename*=UTF-8''100%25%20sure.bin",
]


# -- a frozen botocore clock -------------------------------------------------------------------------


class _Clock:
    now = INSTANTS[0]


class _FrozenDatetime(dt.datetime):
    """``datetime.datetime`` whose ``now``/``utcnow`` answer the frozen instant."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
        return _Clock.now.astimezone(tz) if tz else _Clock.now.replace(tzinfo=None)

    @classmethod
    def utcnow(cls) -> dt.datetime:  # type: ignore[override]
        return _Clock.now.replace(tzinfo=None)


@pytest.fixture
def freeze(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], None]:
    """Freeze botocore's signing clock; call the fixture's value to move it."""
    shim = types.SimpleNamespace(**vars(dt))
    shim.datetime = _FrozenDatetime
    monkeypatch.setattr(botocore.auth, "datetime", shim)
    if hasattr(botocore.auth, "get_current_datetime"):

        def get_current_datetime(remove_tzinfo: bool = True) -> dt.datetime:
            return _Clock.now.replace(tzinfo=None) if remove_tzinfo else _Clock.now

        monkeypatch.setattr(botocore.auth, "get_current_datetime", get_current_datetime)

    def move(to: dt.datetime) -> None:
        monkeypatch.setattr(_Clock, "now", to)

    move(INSTANTS[0])
    return move


@cache
def boto_client(endpoint: str, region: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def amz_date(instant: dt.datetime) -> str:
    return instant.strftime("%Y%m%dT%H%M%SZ")


def check(expected: str, got: str, instant: dt.datetime, what: str, mismatches: list[str]) -> None:
    assert f"X-Amz-Date={amz_date(instant)}&" in expected, "botocore's clock is not frozen"
    if expected != got:
        mismatches.append(f"{what}\n  botocore: {expected}\n  ours:     {got}")


# -- byte-identical to botocore --------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_upload_part_urls_match_botocore(
    endpoint: str, region: str, freeze: Callable[[dt.datetime], None]
) -> None:
    s3 = boto_client(endpoint, region)
    ours = Presigner(endpoint, BUCKET, region, ACCESS_KEY, SECRET_KEY)
    mismatches: list[str] = []
    for instant in INSTANTS:
        freeze(instant)
        for key in KEYS:
            for upload_id in UPLOAD_IDS:
                for number, size in ((1, 5 * 1024 * 1024), (10_000, 1)):
                    for checksum in (None, CHECKSUM):
                        params: dict[str, Any] = {
                            "Bucket": BUCKET,
                            "Key": key,
                            "UploadId": upload_id,
                            "PartNumber": number,
                            "ContentLength": size,
                        }
                        headers = {"content-length": str(size)}
                        if checksum:
                            params["ChecksumSHA256"] = checksum
                            headers["x-amz-checksum-sha256"] = checksum
                        expected = s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=900)
                        got = ours.presign(
                            "PUT",
                            key,
                            params=(("uploadId", upload_id), ("partNumber", str(number))),
                            headers=headers,
                            expires_in=900,
                            now=instant,
                        )
                        what = f"upload_part {key!r} {upload_id!r} #{number} {checksum} @{instant}"
                        check(expected, got, instant, what, mismatches)
    assert not mismatches, "\n".join(mismatches[:5])


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_get_object_urls_match_botocore(
    endpoint: str, region: str, freeze: Callable[[dt.datetime], None]
) -> None:
    s3 = boto_client(endpoint, region)
    ours = Presigner(endpoint, BUCKET, region, ACCESS_KEY, SECRET_KEY)
    mismatches: list[str] = []
    for instant in INSTANTS:
        freeze(instant)
        for key in KEYS:
            for disposition in DISPOSITIONS:
                expected = s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": BUCKET, "Key": key, "ResponseContentDisposition": disposition},
                    ExpiresIn=300,
                )
                got = ours.presign(
                    "GET",
                    key,
                    params=(("response-content-disposition", disposition),),
                    expires_in=300,
                    now=instant,
                )
                check(expected, got, instant, f"get_object {key!r} {disposition!r}", mismatches)
            # no operation parameters at all, and two of them in botocore's (shape) order
            expected = s3.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=604_800
            )
            got = ours.presign("GET", key, expires_in=604_800, now=instant)
            check(expected, got, instant, f"get_object {key!r}", mismatches)
            expected = s3.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": BUCKET,
                    "Key": key,
                    "ResponseContentDisposition": DISPOSITIONS[1],
                    "ResponseContentType": "text/plain; charset=utf-8",
                },
                ExpiresIn=60,
            )
            got = ours.presign(
                "GET",
                key,
                params=(
                    ("response-content-disposition", DISPOSITIONS[1]),
                    ("response-content-type", "text/plain; charset=utf-8"),
                ),
                expires_in=60,
                now=instant,
            )
            check(expected, got, instant, f"get_object {key!r} two params", mismatches)
    assert not mismatches, "\n".join(mismatches[:5])


def test_upper_case_query_names_sort_before_the_auth_parameters(
    freeze: Callable[[dt.datetime], None],
) -> None:
    """A parameter that sorts before ``X-Amz-*`` takes the general canonical-query path."""
    endpoint = "http://127.0.0.1:9000"
    ours = Presigner(endpoint, BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    # botocore has no S3 operation with such a parameter; sign a raw request the way it would
    request = botocore.awsrequest.AWSRequest(
        method="GET",
        url=f"{endpoint}/{BUCKET}/k?Apple=1&zebra=2",
    )
    credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY)
    signer = botocore.auth.S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=60)
    signer.add_auth(request)
    got = ours.presign("GET", "k", params=(("Apple", "1"), ("zebra", "2")), expires_in=60, now=INSTANTS[0])
    assert request.url == got


# -- our own guarantees ------------------------------------------------------------------------------


def test_naive_now_is_utc() -> None:
    ours = Presigner("http://127.0.0.1:9000", BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    aware = INSTANTS[1]
    naive = aware.replace(tzinfo=None)
    other_zone = aware.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    urls = {ours.presign("GET", "k", expires_in=60, now=t) for t in (aware, naive, other_zone)}
    assert len(urls) == 1
    assert f"X-Amz-Date={amz_date(aware)}&" in urls.pop()


def single(
    ours: Presigner,
    key: str,
    upload_id: str,
    part: tuple[int, int, str | None],
    expires_in: int,
    now: dt.datetime | None,
) -> str:
    """What a single part URL asks of ``presign`` for one part."""
    number, size, checksum = part
    headers = {"content-length": str(size)}
    if checksum:
        headers["x-amz-checksum-sha256"] = checksum
    return ours.presign(
        "PUT",
        key,
        params=(("uploadId", upload_id), ("partNumber", str(number))),
        headers=headers,
        expires_in=expires_in,
        now=now,
    )


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://gw.example.com:443/s3"])
def test_presign_parts_equals_presign_for_each_part(endpoint: str) -> None:
    ours = Presigner(endpoint, BUCKET, "eu-central-1", ACCESS_KEY, SECRET_KEY)
    parts: list[tuple[int, int, str | None]] = [
        (1, 5 * 1024 * 1024, None),
        (2, 5 * 1024 * 1024, CHECKSUM),
        (3, 5 * 1024 * 1024, ""),  # empty means no checksum
        (9_999, 123, " spaced  checksum "),  # trimmed and collapsed like any header value
        (10_000, 1, None),
        (1, 5 * 1024 * 1024, None),  # repeats are signed again, in place
    ]
    for key in KEYS:
        for upload_id in UPLOAD_IDS:
            for now in INSTANTS:
                batch = ours.presign_parts(key, upload_id, parts, 900, now)
                assert batch == [single(ours, key, upload_id, p, 900, now) for p in parts]
    assert ours.presign_parts("k", "u", [], 900) == []


def test_presign_parts_reads_the_clock_once() -> None:
    ours = Presigner("http://127.0.0.1:9000", BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    parts = [(n, 5 * 1024 * 1024, None) for n in range(1, 10_001)]
    urls = ours.presign_parts("cases/x/file.bin", "abc+/=", parts, 900)
    dates = {u.split("X-Amz-Date=")[1].split("&")[0] for u in urls}
    assert len(dates) == 1
    now = dt.datetime.strptime(dates.pop(), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert urls[-1] == single(ours, "cases/x/file.bin", "abc+/=", parts[-1], 900, now)


def test_presigner_stays_a_plain_value() -> None:
    a = Presigner("http://127.0.0.1:9000", BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    b = Presigner("http://127.0.0.1:9000", BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    a.presign("GET", "k", expires_in=60)  # warms a's caches, which take no part in equality
    assert a == b
    assert hash(a) == hash(b)
    assert SECRET_KEY not in repr(a)


# -- header signing (the hot-path store calls) agrees with botocore ---------------------------------


class _Captured(Exception):
    """Raised from botocore's before-send hook: the request as it would have gone out."""

    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(client: Any, operation: str, **params: Any) -> Any:
    def stop(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register_first("before-send.s3.*", stop)
    try:
        getattr(client, operation)(**params)
    except _Captured as captured:
        return captured.request
    finally:
        client.meta.events.unregister("before-send.s3.*", stop)
    raise AssertionError("the request was not captured")


HEADER_SIGNED = [
    ("create_multipart_upload", {"Key": "cases/a/b c/ü.bin", "ContentType": "video/mp4"}),
    (
        "create_multipart_upload",
        {
            "Key": "k",
            "ContentType": "application/octet-stream",
            "ChecksumAlgorithm": "CRC64NVME",
            "ChecksumType": "FULL_OBJECT",
        },
    ),
    (
        "list_parts",
        {"Key": "cases/x/y.bin", "UploadId": "a+b/c==", "PartNumberMarker": 1000, "MaxParts": 1000},
    ),
    (
        "complete_multipart_upload",
        {
            "Key": "cases/x/y.bin",
            "UploadId": "up/1",
            "MultipartUpload": {
                "Parts": [{"PartNumber": 1, "ETag": '"abc"', "ChecksumCRC64NVME": "rosUhgp5mIg="}]
            },
            "ChecksumCRC64NVME": "rosUhgp5mIg=",
            "ChecksumType": "FULL_OBJECT",
        },
    ),
    ("head_object", {"Key": "cases/x/ü y.bin", "ChecksumMode": "ENABLED"}),
    ("abort_multipart_upload", {"Key": "cases/x/y.bin", "UploadId": "up~1"}),
    ("delete_object", {"Key": "cases/x/y.bin"}),
    ("head_bucket", {}),
]


@pytest.mark.parametrize(("operation", "params"), HEADER_SIGNED, ids=[op for op, _ in HEADER_SIGNED])
@pytest.mark.parametrize("region", REGIONS)
def test_header_signatures_are_botocores(
    freeze: Callable[[dt.datetime], None], region: str, operation: str, params: dict[str, Any]
) -> None:
    endpoint = "http://127.0.0.1:9000"
    for instant in INSTANTS:
        freeze(instant)
        request = _capture(boto_client(endpoint, region), operation, Bucket="evidence", **params)
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        authorization = headers["authorization"]
        signed_names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        to_sign = {
            n: headers[n] for n in signed_names if n not in ("host", "x-amz-date", "x-amz-content-sha256")
        }
        split = urlsplit(request.url)
        query = [
            (k, v if v or f"{k}=" in split.query else None)
            for k, v in parse_qsl(split.query, keep_blank_values=True)
        ]
        presigner = Presigner(endpoint, "evidence", region, ACCESS_KEY, SECRET_KEY)
        url, ours = presigner.sign_request(
            request.method,
            params.get("Key"),
            params=query,
            headers=to_sign,
            payload_sha256=headers["x-amz-content-sha256"],
            now=instant,
        )
        assert ours["Authorization"] == authorization, (operation, instant)
        assert ours["x-amz-date"] == headers["x-amz-date"]
        assert urlsplit(url).path == split.path
        assert sorted(parse_qsl(urlsplit(url).query, keep_blank_values=True)) == sorted(
            parse_qsl(split.query, keep_blank_values=True)
        )


# -- whole-object PUTs (a small file in one request) --------------------------------------------------

PUT_HEADERS = [
    # what the single-PUT kind signs: exact length, type, no overwrite, one checksum the store checks
    {"ContentLength": 1, "ContentType": "image/jpeg", "IfNoneMatch": "*", "ChecksumSHA256": CHECKSUM},
    {
        "ContentLength": 262_144,
        "ContentType": "application/octet-stream",
        "IfNoneMatch": "*",
        "ChecksumCRC64NVME": "rosUhgp5mIg=",
    },
    {"ContentLength": 0, "ContentType": 'text/plain; charset="utf-8"', "IfNoneMatch": "*"},
    {"ContentLength": 5 * 1024**3},
]
_HEADER_OF = {
    "ContentLength": "content-length",
    "ContentType": "content-type",
    "IfNoneMatch": "if-none-match",
    "ChecksumSHA256": "x-amz-checksum-sha256",
    "ChecksumCRC64NVME": "x-amz-checksum-crc64nvme",
}


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_put_object_urls_match_botocore(
    endpoint: str, region: str, freeze: Callable[[dt.datetime], None]
) -> None:
    """``presign_puts`` (and ``presign`` for one) sign a PutObject as botocore does, byte for byte."""
    s3 = boto_client(endpoint, region)
    ours = Presigner(endpoint, BUCKET, region, ACCESS_KEY, SECRET_KEY)
    mismatches: list[str] = []
    for instant in INSTANTS:
        freeze(instant)
        batch: list[tuple[str, dict[str, str]]] = []
        expected_batch: list[str] = []
        for key in KEYS:
            for params in PUT_HEADERS:
                expected = s3.generate_presigned_url(
                    "put_object", Params={"Bucket": BUCKET, "Key": key, **params}, ExpiresIn=900
                )
                headers = {_HEADER_OF[name]: str(value) for name, value in params.items()}
                got = ours.presign("PUT", key, headers=headers, expires_in=900, now=instant)
                check(expected, got, instant, f"put_object {key!r} {params}", mismatches)
                batch.append((key, headers))
                expected_batch.append(expected)
        assert ours.presign_puts(batch, 900, instant) == expected_batch
    assert not mismatches, "\n".join(mismatches[:5])


def test_presign_puts_reads_the_clock_once_and_takes_any_header_spelling() -> None:
    ours = Presigner("http://127.0.0.1:9000", BUCKET, "us-east-1", ACCESS_KEY, SECRET_KEY)
    objects = [(f"cases/x/{n}/f.jpg", {"Content-Length": str(n), "If-None-Match": "*"}) for n in range(2000)]
    urls = ours.presign_puts(objects, 900)
    dates = {u.split("X-Amz-Date=")[1].split("&")[0] for u in urls}
    assert len(dates) == 1
    now = dt.datetime.strptime(dates.pop(), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    key, headers = objects[-1]
    lower = {name.lower(): value for name, value in headers.items()}
    assert urls[-1] == ours.presign("PUT", key, headers=lower, expires_in=900, now=now)
    assert "X-Amz-SignedHeaders=content-length%3Bhost%3Bif-none-match&" in urls[-1]
    assert ours.presign_puts([], 900) == []
