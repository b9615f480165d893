"""Pure upload rules: the part plan, object keys and filename hygiene."""

from __future__ import annotations

import math
import unicodedata

import pytest

from upload_plane.uploads.rules import (
    MAX_PARTS,
    MIN_PART_SIZE,
    content_disposition,
    object_key,
    plan_parts,
    safe_name,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT = 8 * MIB

HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/shadow",
    "C:\\Windows\\System32\\config\\SAM",
    "..\\..\\boot.ini",
    "a\x00b.txt",
    "\x00",
    "line\nbreak\r\ttab.txt",
    "..",
    ".",
    "...",
    "....//....//x",
    "x" * 10_240,
    "é" * 10_240,
    "evil\u202egnp.exe",
    "\u200b\u200b",
    "",
    "   ",
    ".hidden",
    "a/b/c/../../d.mp4",
    "con:aux|*?<>\"'.txt",
    "cafe\u0301.jpg",
    "%2e%2e%2fetc%2fpasswd",
    "name.with.many.dots." + "e" * 300,
    "🎥" * 100 + ".mp4",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_names_stay_under_their_prefix(name: str) -> None:
    key = object_key("case-1", "log-2", "file-3", name)
    prefix = "cases/case-1/logs/log-2/file-3/"
    assert key.startswith(prefix)
    safe = key[len(prefix) :]
    assert safe
    assert "/" not in safe and "\\" not in safe
    assert not safe.startswith(".")
    assert safe not in (".", "..")
    assert len(safe.encode()) <= 200
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in safe)
    assert safe == unicodedata.normalize("NFC", safe)


def test_safe_name_keeps_ordinary_names_and_extensions() -> None:
    assert safe_name("evidence_video.mp4") == "evidence_video.mp4"
    assert safe_name("Zeugenaussage für Gericht.pdf") == "Zeugenaussage für Gericht.pdf"
    assert safe_name("cafe\u0301.jpg") == "caf\u00e9.jpg"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("") == "file"
    assert safe_name("...") == "file"
    long = safe_name("x" * 500 + ".mp4")
    assert long.endswith(".mp4") and len(long.encode()) == 200


def test_content_disposition_has_ascii_fallback_and_utf8_name() -> None:
    value = content_disposition('bericht "final"; ü.pdf')
    assert value.startswith('attachment; filename="bericht _final__ _.pdf"; ')
    assert value.endswith("filename*=UTF-8''bericht%20%22final%22%3B%20%C3%BC.pdf")
    assert "\n" not in content_disposition("a\r\nSet-Cookie: x")


@pytest.mark.parametrize(
    ("size", "requested", "part_size", "part_count"),
    [
        (0, None, DEFAULT, 1),
        (1, None, DEFAULT, 1),
        (DEFAULT, None, DEFAULT, 1),
        (DEFAULT + 1, None, DEFAULT, 2),
        (50 * MIB, 5 * MIB, 5 * MIB, 10),
        (10 * MIB, 1 * MIB, MIN_PART_SIZE, 2),  # below the S3 minimum: raised to 5 MiB
        (10 * MIB, 6 * GIB, 5 * GIB, 1),  # above the S3 maximum: lowered to 5 GiB
        (1024 * GIB, None, 105 * MIB, math.ceil(1024 * GIB / (105 * MIB))),  # 1 TiB
    ],
)
def test_part_plan(size: int, requested: int | None, part_size: int, part_count: int) -> None:
    plan = plan_parts(size, DEFAULT, requested)
    assert (plan.part_size, plan.part_count) == (part_size, part_count)
    assert plan.part_count <= MAX_PARTS
    assert sum(plan.part_bytes(n) for n in range(1, plan.part_count + 1)) == size
    assert all(plan.part_bytes(n) == plan.part_size for n in range(1, plan.part_count))


def test_part_plan_never_exceeds_10000_parts() -> None:
    for size in (10_000 * DEFAULT + 1, 3 * 1024 * GIB, 48 * 1024 * GIB):
        plan = plan_parts(size, DEFAULT)
        assert plan.part_count <= MAX_PARTS
        assert plan.part_size % MIB == 0


def test_part_bytes_rejects_numbers_outside_the_plan() -> None:
    plan = plan_parts(3 * DEFAULT, DEFAULT)
    for bad in (0, 4, -1):
        with pytest.raises(ValueError, match="outside"):
            plan.part_bytes(bad)


def test_a_form_uploads_own_key_names_its_upload_and_nothing_else() -> None:
    from upload_plane.uploads.kinds import FORM_POST

    assert FORM_POST.upload_id_of("incoming/0a1b") == "0a1b"
    assert FORM_POST.upload_id_of("cases/c/logs/l/f/photo.jpg") is None
    assert FORM_POST.upload_id_of("incoming/a/../b") is None
    assert FORM_POST.upload_id_of("incoming/") is None
