"""A fast AWS Signature V4 query-string presigner for path-style S3 URLs.

Pure functions of their inputs and the clock, no I/O. It produces the same URL, byte for byte, as
botocore's ``generate_presigned_url`` with ``signature_version="s3v4"`` and path addressing
(checked in tests/unit/test_signing.py), at a small fraction of the cost:

- everything fixed per presigner (host, URL base, bucket path) is computed once;
- everything fixed per second of the clock (``X-Amz-Date``, scope, credential, the HMAC state of the
  day's signing key already fed the string-to-sign prefix) is computed once per second and reused;
- ``presign_parts`` signs many parts of one multipart upload from one precomputed template, so a
  part costs one SHA-256 of the canonical request, one HMAC and a few string joins;
- ``presign_puts`` signs many whole-object PUTs (small files: each URL signs its own length,
  checksum and ``If-None-Match: *``) on one clock reading.

Endpoint handling mirrors botocore's: the URL keeps the endpoint's scheme and authority as written
(``https://s3.example.com:443`` stays so in the URL), while the signed ``host`` header is the
lower-cased host without a default port. A path prefix on the endpoint (``https://gw/s3``) has its
dot segments and empty segments removed and is percent-encoded, as botocore's endpoint rules do.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_STAMP_CACHE_SIZE = 16
_sha256 = hashlib.sha256


@lru_cache(maxsize=4096)
def _quote_value(value: str) -> str:
    return quote(value, safe="-_.~")


def _enc(value: str) -> str:
    """Percent-encode a query key or value as SigV4 (and botocore's ``percent_encode``) does."""
    if value.isascii() and value.isalnum():
        return value  # nothing to encode: the common case of part numbers, sizes and ids
    return _quote_value(value)


@lru_cache(maxsize=1024)
def _quote_key(key: str) -> str:
    """The object key as a URL path: everything but unreserved characters and ``/`` encoded."""
    return quote(key, safe="/~")


def _normalize_path(path: str) -> str:
    """Drop empty and ``.`` segments and resolve ``..`` (botocore's ``remove_dot_segments``)."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    return "/" + "".join(f"{s}/" for s in out)


@lru_cache(maxsize=1024)
def _header_block(host: str, headers: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """The signed-headers list and canonical header lines for ``host`` plus ``headers``.

    Names are lower-cased (a later duplicate wins) and values trimmed with inner whitespace runs
    collapsed, as botocore does. Cached: part URLs mostly repeat the same Content-Length.
    """
    signed = {"host": host}
    for name, value in headers:
        signed[name.lower()] = " ".join(str(value).split())
    names = sorted(signed)
    return ";".join(names), "".join([f"{n}:{signed[n]}\n" for n in names])


@lru_cache(maxsize=64)
def _signing_pads(secret: str, day: str, region: str, service: str) -> tuple[Any, Any]:
    """The day's signing key as HMAC inner/outer SHA-256 states, ready to ``copy()``.

    HMAC(k, m) = H((k ^ opad) || H((k ^ ipad) || m)); with both keyed states precomputed an HMAC
    costs two hash-object copies instead of building an ``hmac.HMAC``.
    """
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), _sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), _sha256).digest()
    block = key.ljust(64, b"\0")  # a 32-byte key is shorter than SHA-256's 64-byte block
    inner = _sha256(bytes(b ^ 0x36 for b in block))
    outer = _sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


class _Stamp:
    """What stays the same for every URL signed within one second of the clock."""

    __slots__ = ("_auth", "amz_date", "credential", "inner", "outer", "raw_credential")

    def __init__(
        self, amz_date: str, credential: str, inner: Any, outer: Any, raw_credential: str = ""
    ) -> None:
        self.amz_date = amz_date
        self.credential = credential  # already percent-encoded
        self.raw_credential = raw_credential  # as an Authorization header carries it
        self.inner = inner  # HMAC inner state, already fed the string-to-sign prefix
        self.outer = outer
        self._auth: dict[tuple[int, str], tuple[tuple[tuple[str, str], ...], str]] = {}

    def auth(self, expires_in: int, signed_headers: str) -> tuple[tuple[tuple[str, str], ...], str]:
        """The encoded ``X-Amz-*`` pairs (in sorted order) and the same joined as a query string."""
        cache_key = (expires_in, signed_headers)
        found = self._auth.get(cache_key)
        if found is None:
            pairs = (
                ("X-Amz-Algorithm", ALGORITHM),
                ("X-Amz-Credential", self.credential),
                ("X-Amz-Date", self.amz_date),
                ("X-Amz-Expires", str(expires_in)),
                ("X-Amz-SignedHeaders", _enc(signed_headers)),
            )
            found = (pairs, "&".join(f"{k}={v}" for k, v in pairs))
            if len(self._auth) > 64:
                self._auth.clear()
            self._auth[cache_key] = found
        return found

    def sign(self, canonical_request: str) -> str:
        """The hex signature of a canonical request."""
        inner = self.inner.copy()
        inner.update(_sha256(canonical_request.encode()).hexdigest().encode())
        outer = self.outer.copy()
        outer.update(inner.digest())
        return str(outer.hexdigest())


@dataclass(frozen=True, slots=True)
class Presigner:
    """Signs URLs for one endpoint, bucket and set of credentials.

    Safe to share between threads: its only mutable state is a cache of per-second values, and
    losing a race on it only means computing a value twice.
    """

    endpoint_url: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    service: str = "s3"
    _base: str = field(init=False, repr=False, compare=False)
    _host: str = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)
    _stamps: dict[int, _Stamp] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        if parts.port is not None and parts.port != default_port:
            host = f"{host}:{parts.port}"
        prefix = quote(_normalize_path(parts.path))
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_prefix", f"{prefix}{quote(self.bucket, safe='')}/")
        object.__setattr__(self, "_base", f"{parts.scheme}://{parts.netloc}")
        object.__setattr__(self, "_stamps", {})

    # -- clock -------------------------------------------------------------------------------------

    def _stamp(self, now: datetime | None) -> _Stamp:
        """Per-second values for ``now`` (aware, or naive meaning UTC; ``None`` for the clock)."""
        if now is None:
            second = int(time.time())
        elif now.tzinfo is None:
            second = int(now.replace(tzinfo=UTC).timestamp())
        else:
            second = int(now.timestamp())
        stamp = self._stamps.get(second)
        if stamp is None:
            stamp = self._make_stamp(second)
        return stamp

    def _make_stamp(self, second: int) -> _Stamp:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        inner, outer = _signing_pads(self.secret_access_key, day, self.region, self.service)
        inner = inner.copy()
        inner.update(f"{ALGORITHM}\n{amz_date}\n{scope}\n".encode())
        credential = f"{self.access_key_id}/{scope}"
        stamp = _Stamp(amz_date, _enc(credential), inner, outer, credential)
        if len(self._stamps) >= _STAMP_CACHE_SIZE:
            self._stamps.clear()
        self._stamps[second] = stamp
        return stamp

    # -- signing -----------------------------------------------------------------------------------

    def presign(
        self,
        method: str,
        key: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        expires_in: int,
        now: datetime | None = None,
    ) -> str:
        """Return a presigned URL. ``headers`` are signed and must be sent with exactly these values.

        ``params`` keep their order in the URL (botocore puts operation parameters first).
        ``now`` defaults to the clock; a naive datetime is taken as UTC.
        """
        stamp = self._stamp(now)
        if headers:
            signed_headers, canonical_headers = _header_block(self._host, tuple(headers.items()))
        else:
            signed_headers, canonical_headers = "host", f"host:{self._host}\n"
        auth_pairs, auth_query = stamp.auth(expires_in, signed_headers)

        path = self._prefix + _quote_key(key)
        if params:
            operation = [(_enc(k), _enc(v)) for k, v in params]
            url_query = "&".join([f"{k}={v}" for k, v in operation]) + "&" + auth_query
            operation.sort()
            if operation[0] > auth_pairs[-1]:  # the usual case: lower-case names sort after X-Amz-*
                canonical_query = auth_query + "&" + "&".join([f"{k}={v}" for k, v in operation])
            else:
                operation.extend(auth_pairs)
                operation.sort()
                canonical_query = "&".join([f"{k}={v}" for k, v in operation])
        else:
            url_query = canonical_query = auth_query
        signature = stamp.sign(
            f"{method.upper()}\n{path}\n{canonical_query}\n{canonical_headers}\n"
            f"{signed_headers}\n{UNSIGNED_PAYLOAD}"
        )
        return f"{self._base}{path}?{url_query}&X-Amz-Signature={signature}"

    def presign_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, int, str | None]],
        expires_in: int,
        now: datetime | None = None,
        checksum_header: str = "x-amz-checksum-sha256",
    ) -> list[str]:
        """PUT URLs for many parts of one multipart upload, in the order of ``parts``.

        Each of ``parts`` is ``(part_number, content_length, checksum or None)``; the checksum is
        signed as ``checksum_header`` (``x-amz-checksum-sha256`` or ``x-amz-checksum-crc64nvme``,
        lower case). The result for a part is exactly what ``presign("PUT", key,
        params=(("uploadId", upload_id), ("partNumber", str(part_number))),
        headers={"content-length": str(content_length)} [+ {checksum_header: checksum} when the
        checksum is non-empty], expires_in=..., now=now)`` returns; all parts share one
        ``X-Amz-Date`` (``now``, or the clock read once).
        """
        if not checksum_header.startswith("x-amz-checksum-") or checksum_header != checksum_header.lower():
            raise ValueError(f"not a lower-case x-amz-checksum-* header: {checksum_header!r}")
        stamp = self._stamp(now)
        host = self._host
        path = self._prefix + _quote_key(key)
        upload = _enc(upload_id)
        url_head = f"{self._base}{path}?uploadId={upload}&partNumber="

        # Canonical request, with the auth pairs sorted before partNumber and uploadId:
        #   PUT \n path \n X-Amz-...&partNumber=N&uploadId=U \n content-length:S \n host:H \n
        #   [x-amz-checksum-<algorithm>:C \n] \n signed-headers \n UNSIGNED-PAYLOAD
        plain_names = "content-length;host"
        _, plain_auth = stamp.auth(expires_in, plain_names)
        plain_head = f"PUT\n{path}\n{plain_auth}&partNumber="
        plain_tail = f"\nhost:{host}\n\n{plain_names}\n{UNSIGNED_PAYLOAD}"
        summed_names = f"content-length;host;{checksum_header}"
        _, summed_auth = stamp.auth(expires_in, summed_names)
        summed_head = f"PUT\n{path}\n{summed_auth}&partNumber="
        summed_host = f"\nhost:{host}\n{checksum_header}:"
        summed_tail = f"\n\n{summed_names}\n{UNSIGNED_PAYLOAD}"
        mid = f"&uploadId={upload}\ncontent-length:"

        inner, outer, sha256 = stamp.inner, stamp.outer, _sha256
        urls: list[str] = []
        append = urls.append
        for part_number, size, checksum in parts:
            number = str(part_number)
            if checksum:
                checksum = " ".join(str(checksum).split())
                canonical = f"{summed_head}{number}{mid}{size}{summed_host}{checksum}{summed_tail}"
                auth = summed_auth
            else:
                canonical = f"{plain_head}{number}{mid}{size}{plain_tail}"
                auth = plain_auth
            h = inner.copy()
            h.update(sha256(canonical.encode()).hexdigest().encode())
            o = outer.copy()
            o.update(h.digest())
            append(f"{url_head}{number}&{auth}&X-Amz-Signature={o.hexdigest()}")
        return urls

    def presign_puts(
        self,
        objects: Sequence[tuple[str, Mapping[str, str]]],
        expires_in: int,
        now: datetime | None = None,
    ) -> list[str]:
        """PUT URLs of whole objects (PutObject), one per ``(key, headers)``, in order.

        The result for each is exactly what ``presign("PUT", key, headers=headers, expires_in=...,
        now=now)`` returns; all share one ``X-Amz-Date`` (``now``, or the clock read once). Made for
        many small files at once, whose headers differ in every URL (each its own Content-Length and
        checksum): the header block is built here, not cached as ``presign`` caches the few blocks
        part URLs repeat.
        """
        stamp = self._stamp(now)
        host = self._host
        urls: list[str] = []
        append = urls.append
        for key, headers in objects:
            signed = {"host": host}
            for name, value in headers.items():
                signed[name.lower()] = " ".join(str(value).split())
            names = sorted(signed)
            signed_names = ";".join(names)
            canonical_headers = "".join([f"{n}:{signed[n]}\n" for n in names])
            _, auth_query = stamp.auth(expires_in, signed_names)
            path = self._prefix + quote(key, safe="/~")
            signature = stamp.sign(
                f"PUT\n{path}\n{auth_query}\n{canonical_headers}\n{signed_names}\n{UNSIGNED_PAYLOAD}"
            )
            append(f"{self._base}{path}?{auth_query}&X-Amz-Signature={signature}")
        return urls

    def object_url(self, key: str) -> str:
        """The object's plain (unsigned) URL, path-style."""
        return f"{self._base}{self._prefix}{_quote_key(key)}"

    def presign_post(
        self,
        key: str,
        *,
        fields: Mapping[str, str],
        content_length: tuple[int, int],
        expires_in: int,
        now: datetime | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A browser-based upload (S3 POST Object with a SigV4 policy): the bucket URL (with a
        trailing slash, so ``url + key`` addresses the object) and the form fields to send before
        the file. The policy pins the bucket, the exact ``key``, each of ``fields`` and the body's
        ``content-length-range``; the store refuses a form that departs from any of them.
        """
        import base64
        import json

        stamp = self._stamp(now)
        second = int(time.time()) if now is None else int(now.timestamp())
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second + expires_in))
        form = {
            **fields,
            "key": key,
            "x-amz-algorithm": ALGORITHM,
            "x-amz-credential": stamp.raw_credential,
            "x-amz-date": stamp.amz_date,
        }
        conditions: list[Any] = [{"bucket": self.bucket}]
        conditions += [{name: value} for name, value in form.items()]
        conditions.append(["content-length-range", content_length[0], content_length[1]])
        policy = base64.b64encode(
            json.dumps({"expiration": expiration, "conditions": conditions}, separators=(",", ":")).encode()
        ).decode()
        form["policy"] = policy
        inner = _signing_pads(self.secret_access_key, stamp.amz_date[:8], self.region, self.service)[0].copy()
        outer = _signing_pads(self.secret_access_key, stamp.amz_date[:8], self.region, self.service)[1].copy()
        inner.update(policy.encode())
        outer.update(inner.digest())
        form["x-amz-signature"] = outer.hexdigest()
        return f"{self._base}{self._prefix}", form

    def sign_request(
        self,
        method: str,
        key: str | None,
        *,
        params: Sequence[tuple[str, str | None]] = (),
        headers: Mapping[str, str] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        now: datetime | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A header-signed request (``Authorization``): its URL and the headers to send with it.

        ``key`` ``None`` addresses the bucket itself. A param whose value is ``None`` is a bare
        flag (``?uploads``). The headers returned are ``headers`` plus ``x-amz-date``,
        ``x-amz-content-sha256`` and ``Authorization``, all of them signed except ``Authorization``;
        ``host`` is signed and left to the HTTP client to send. The signature is botocore's for the
        same request and clock (checked in tests/unit/test_signing.py).
        """
        stamp = self._stamp(now)
        signed = {name.lower(): " ".join(str(value).split()) for name, value in (headers or {}).items()}
        signed.update(
            {"host": self._host, "x-amz-content-sha256": payload_sha256, "x-amz-date": stamp.amz_date}
        )
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical_headers = "".join([f"{n}:{signed[n]}\n" for n in names])
        path = self._prefix + _quote_key(key) if key is not None else self._prefix.rstrip("/")
        pairs = sorted((_enc(k), _enc(v or "")) for k, v in params)
        canonical_query = "&".join([f"{k}={v}" for k, v in pairs])
        signature = stamp.sign(
            f"{method.upper()}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{payload_sha256}"
        )
        url_query = "&".join([_enc(k) if v is None else f"{_enc(k)}={_enc(v)}" for k, v in params])
        url = f"{self._base}{path}" + (f"?{url_query}" if url_query else "")
        out = dict(headers or {})
        out["x-amz-date"] = stamp.amz_date
        out["x-amz-content-sha256"] = payload_sha256
        out["Authorization"] = (
            f"{ALGORITHM} Credential={stamp.raw_credential}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return url, out
