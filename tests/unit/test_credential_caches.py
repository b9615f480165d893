"""The caches in front of credential checks hold successes only and are bounded by bytes; every log
line is redacted whatever wrote it."""

from __future__ import annotations

import logging
import secrets

from upload_plane.auth import tokens
from upload_plane.logs import JsonFormatter, TextFormatter, redact
from upload_plane.lru import SizedCache

SECRET = "s" * 40


def test_a_sized_cache_drops_the_least_recently_used_to_stay_within_its_bytes() -> None:
    cache: SizedCache[str, int] = SizedCache(max_bytes=1000)
    for i in range(10):
        cache.put(f"k{i}", i, 300)
        assert cache.bytes <= 1000
    assert len(cache) == 3 and cache.get("k9") == 9 and cache.get("k0") is None
    cache.get("k7")  # used: kept when the next one comes
    cache.put("k10", 10, 300)
    assert cache.get("k7") == 7 and cache.get("k8") is None
    cache.put("huge", -1, 1001)  # larger than the whole cache: not kept, nothing dropped for it
    assert cache.get("huge") is None and len(cache) == 3


def test_failed_and_oversized_tokens_leave_nothing_in_the_jwt_cache() -> None:
    before = tokens._VERIFIED.bytes
    for _ in range(200):
        assert tokens.read_jwt(secrets.token_urlsafe(3000), tokens.ACCESS, SECRET) is None
        assert tokens.read_jwt("eyJ" + "A" * 300_000, tokens.ACCESS, SECRET) is None
    assert tokens._VERIFIED.bytes == before
    good = tokens.issue_jwt("u", "s", tokens.ACCESS, SECRET, 60).token
    assert tokens.read_jwt(good, tokens.ACCESS, SECRET) is not None
    assert tokens._VERIFIED.bytes == before + len(good) + tokens._ENTRY_OVERHEAD
    assert tokens._VERIFIED.bytes <= tokens._VERIFIED.max_bytes


def test_every_log_line_is_redacted_by_its_formatter() -> None:
    link = "uplnk_" + secrets.token_hex(18)
    pat = "uppat_" + secrets.token_hex(18)
    jwt = tokens.issue_jwt("u", "s", tokens.ACCESS, SECRET, 60).token
    message = (
        f"failed on /links/{link}/s3/multipart with Authorization: Bearer {pat} after {jwt} "
        "https://store/k?X-Amz-Signature=0123456789abcdef&X-Amz-Date=1 Cookie: upload_plane_session=abc.def"
    )
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "%s", (message,), None)
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        for secret in (link, pat, jwt, "0123456789abcdef", "abc.def"):
            assert secret not in line, (type(formatter).__name__, line)
        assert f"/links/{link[:8]}…/s3/multipart" in line
    assert redact("nothing to hide here /api/v1/cases") == "nothing to hide here /api/v1/cases"
