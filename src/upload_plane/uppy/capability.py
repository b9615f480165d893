"""The ``uploadId`` this service gives Uppy: an HMAC-signed capability, checked without the database.

Uppy echoes the ``uploadId`` of ``POST /s3/multipart`` back on every later call (sign a part, list,
complete, abort). Instead of the store's upload id, it gets a token that names, under a MAC only the
service's replicas can make (a key derived from ``JWT_SECRET``):

- the upload (our id) and the store's multipart upload id, so a part URL is signed without a query;
- the plan (size, part size, part count), so part numbers are bounded and each URL signs its exact
  ``Content-Length``;
- the scope it was issued to (``u:<user id>`` or ``l:<link id>``), so it works only for that user
  or through that link;
- a digest of the object key, so ``?key=`` must name this upload's own key;
- the upload's expiry.

A token that does not verify is an unknown upload (404). Authorisation itself (the session or link
still valid, the role still held, the upload still open) is not frozen into it: the routes check it
against the database, and trust a check for at most ``authorization_cache_ttl`` seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from ..auth.tokens import MAX_CREDENTIAL_LENGTH
from ..errors import KeyMismatch, NotFound, Unauthenticated
from ..lru import SizedCache

VERSION = "c1"
_MAC_BYTES = 24
_KEY_DIGEST_BYTES = 12


@dataclass(frozen=True, slots=True)
class Capability:
    upload_id: str
    s3_upload_id: str
    size: int
    part_size: int
    part_count: int
    scope: str  # "u:<user id>" | "l:<link id>"
    expires: int  # unix seconds: the upload's expires_at
    key_digest: str

    def part_bytes(self, part_number: int) -> int:
        if part_number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)

    def check_key(self, key: str) -> None:
        if not hmac.compare_digest(key_digest(key), self.key_digest):
            raise KeyMismatch("the key is not the one of this upload")


def capability_secret(jwt_secret: str) -> bytes:
    """A key of its own for capabilities, derived from the shared secret (every replica has it)."""
    return hmac.new(jwt_secret.encode(), b"upload-plane uppy capability v1", hashlib.sha256).digest()


def key_digest(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()[:_KEY_DIGEST_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: bytes, cap: Capability) -> str:
    payload = json.dumps(
        [cap.upload_id, cap.s3_upload_id, cap.size, cap.part_size, cap.part_count, cap.scope,
         cap.expires, cap.key_digest],
        separators=(",", ":"),
    ).encode()  # fmt: skip
    body = f"{VERSION}.{_b64(payload)}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{body}.{_b64(mac)}"


#: Capabilities that verified (never failures), bounded by bytes: Uppy sends the same one for
#: every part of an upload, so its MAC is checked once.
_VERIFIED: SizedCache[tuple[bytes, str], Capability] = SizedCache(4 * 1024 * 1024)
_ENTRY_OVERHEAD = 600  # bytes an entry costs besides its token (key tuple, the Capability's fields)


def read(secret: bytes, token: str) -> Capability:
    """The capability in ``token``: ``Unauthenticated`` for one longer than any this service
    issues (refused before it is looked at), ``NotFound`` for anything else it did not issue."""
    if len(token) > MAX_CREDENTIAL_LENGTH:
        raise Unauthenticated("The upload id is longer than any this service issues")
    cap = _VERIFIED.get((secret, token))
    if cap is None:
        cap = _verify(secret, token)
        if cap is None:
            raise NotFound("No such upload")
        _VERIFIED.put((secret, token), cap, len(token) + _ENTRY_OVERHEAD)
    return cap


def _verify(secret: bytes, token: str) -> Capability | None:
    version, _, rest = token.partition(".")
    body_b64, _, mac_b64 = rest.partition(".")
    if version != VERSION or not body_b64 or not mac_b64:
        return None
    try:
        mac = _unb64(mac_b64)
        expected = hmac.new(secret, f"{version}.{body_b64}".encode(), hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        fields = json.loads(_unb64(body_b64))
        upload_id, s3_upload_id, size, part_size, part_count, scope, expires, digest = fields
        return Capability(
            str(upload_id), str(s3_upload_id), int(size), int(part_size), int(part_count), str(scope),
            int(expires), str(digest),
        )  # fmt: skip
    except (binascii.Error, ValueError, TypeError):
        return None
