"""The Uppy capability (the uploadId this service gives Uppy) and the pieces of the Uppy routes that
need no server: plan agreement with Uppy's chunking, redaction of link tokens in access logs."""

from __future__ import annotations

import pytest

from upload_plane.errors import KeyMismatch, NotFound, Unauthenticated
from upload_plane.logs import loggable_path
from upload_plane.uploads.rules import MIB, plan_parts
from upload_plane.uppy import capability
from upload_plane.uppy.capability import Capability
from upload_plane.uppy.service import uppy_chunk_size

SECRET = capability.capability_secret("x" * 40)
KEY = "cases/c/logs/l/f/video.mp4"


def cap(**changes: object) -> Capability:
    values: dict[str, object] = {
        "upload_id": "01a2-upload",
        "s3_upload_id": "store/upload+id==",
        "size": 12 * MIB + 5,
        "part_size": 5 * MIB,
        "part_count": 3,
        "scope": "l:link-1",
        "expires": 2_000_000_000,
        "key_digest": capability.key_digest(KEY),
    }
    values.update(changes)
    return Capability(**values)  # type: ignore[arg-type]


def test_a_capability_round_trips_and_binds_its_key() -> None:
    token = capability.mint(SECRET, cap())
    assert all(c.isalnum() or c in "-_." for c in token)  # safe in a URL path as it is
    read = capability.read(SECRET, token)
    assert read == cap()
    read.check_key(KEY)
    with pytest.raises(KeyMismatch):
        read.check_key(KEY + "x")
    assert [read.part_bytes(n) for n in (1, 2, 3)] == [5 * MIB, 5 * MIB, 2 * MIB + 5]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # another MAC
        lambda t: t.replace("c1.", "c2.", 1),  # another version
        lambda t: t.split(".")[0] + "." + t.split(".")[1],  # no MAC
        lambda t: "c1." + t.split(".")[1][:-4] + "AAAA." + t.split(".")[2],  # another payload
        lambda t: "",
        lambda t: "c1.!!!.###",
    ],
)
def test_anything_else_is_an_unknown_upload(mangle: object) -> None:
    token = capability.mint(SECRET, cap())
    with pytest.raises(NotFound):
        capability.read(SECRET, mangle(token))  # type: ignore[operator]


def test_an_oversized_capability_is_refused_before_it_is_looked_at_and_nothing_is_kept() -> None:
    before = len(capability._VERIFIED)
    for i in range(50):
        with pytest.raises(Unauthenticated):
            capability.read(SECRET, f"c1.{i}." + "x" * 5000)
        with pytest.raises(NotFound):  # a failure of any size is never cached
            capability.read(SECRET, f"c1.{i}." + "y" * 4000)
    assert len(capability._VERIFIED) == before
    capability.read(SECRET, capability.mint(SECRET, cap(upload_id="kept")))  # a success is
    assert len(capability._VERIFIED) == before + 1


def test_another_secret_does_not_verify() -> None:
    token = capability.mint(SECRET, cap())
    with pytest.raises(NotFound):
        capability.read(capability.capability_secret("y" * 40), token)


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        (40 * MIB, None, 5 * MIB),  # Uppy's default: ceil(size / 10000), at least 5 MiB
        (6 * MIB, None, 5 * MIB),
        (13 * MIB, 6 * MIB, 6 * MIB),  # a page's getChunkSize
        (10 * MIB, 1 * MIB, 5 * MIB),  # never below 5 MiB
        (100_000 * MIB, 5 * MIB, 10 * MIB),  # raised to ceil(size / 10000) past 10,000 parts
    ],
)
def test_uppy_chunking_and_the_plan_agree(size: int, requested: int | None, expected: int) -> None:
    chunk = uppy_chunk_size(size, requested)
    assert chunk == expected
    assert plan_parts(size, 8 * MIB, chunk).part_size == chunk


def test_link_tokens_are_cut_from_access_logs() -> None:
    token = "uplnk_" + "A" * 36
    path = loggable_path(f"/links/{token}/s3/multipart/c1.x/1")
    assert token not in path and path.startswith("/links/uplnk_AA…/s3/multipart")
