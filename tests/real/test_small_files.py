"""A phone extraction on MariaDB + MinIO: a directory of 2,000 small files and two of 100 MiB
uploaded by the CLI, killed with SIGKILL twice mid-way and run again. Every file ends up once in
the log with its SHA-256, no upload is started twice, no multipart upload is left open, and each
small file is written to the store exactly once: the CLI's PUTs go through a proxy that logs every
request the store answered."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import MIB, login, new_account, new_log
from tests.cli_helpers import cli_env, cli_json, command, personal_token, sha256_of
from tests.conftest import Backend, real_settings, serve
from tests.faultproxy import FaultProxy, fault_proxy
from tests.services import MariaDB, MinIO
from tests.store import StoreChecker

pytestmark = pytest.mark.real

SMALL, LARGE = 2000, 2
DEADLINE = 300.0


@pytest.fixture(scope="module")
def behind_proxy(mariadb: MariaDB, minio: MinIO) -> Iterator[tuple[Backend, FaultProxy]]:
    """A server whose presigned URLs name a logging proxy in front of MinIO (its own calls go
    straight to MinIO), and room for thousands of starts a minute."""
    with fault_proxy(minio.endpoint) as proxy:
        settings = real_settings(
            mariadb.create_database("small_files"), minio, s3_public_endpoint_url=proxy.url,
            upload_start_rate=100_000,
        )  # fmt: skip
        with serve(settings) as url:
            yield Backend("real", settings, url), proxy


def extraction(root: Path) -> dict[str, Path]:
    """2,000 files of 1-64 KiB (seeded sizes) in nested folders, and two videos of 100 MiB."""
    sizes = random.Random(18)
    files = {}
    for i in range(SMALL):
        path = root / "DCIM" / f"{i // 500:03d}" / f"IMG_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(sizes.randint(1, 64 * 1024)))
        files[path.relative_to(root.parent).as_posix()] = path
    for i in range(LARGE):
        path = root / "video" / f"VID_{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for _ in range(100):
                out.write(os.urandom(MIB))
        files[path.relative_to(root.parent).as_posix()] = path
    return files


def wait_for(condition: Callable[[], Any], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the CLI ended ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval


async def open_multipart_uploads(backend: Backend, keys: list[str]) -> list[str]:
    store = StoreChecker(backend.settings)
    try:
        return [u for key in keys for u in await store.list_multipart_uploads(key)]
    finally:
        await store.aclose()


def all_pages(api: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.get(path, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_an_extraction_killed_twice_ends_with_every_file_once_and_each_small_file_written_once(
    behind_proxy: tuple[Backend, FaultProxy], tmp_path: Path
) -> None:
    backend, proxy = behind_proxy
    files = extraction(tmp_path / "phone")
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        log = new_log(api)
        env = cli_env(tmp_path, backend.base_url, personal_token(api))
        args = ("upload", str(tmp_path / "phone"), "--log", log["id"], "--parallel", "8", "--part-size", "8M")

        def small_puts() -> int:
            return sum(1 for _, status in proxy.requests("PutObject") if status == 200)

        opened_multipart = []
        for kill_after in (SMALL // 3, 2 * SMALL // 3):
            proc = subprocess.Popen(
                command(*args, "--limit-rate", "40M", "--json"),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_for(
                    lambda n=kill_after: small_puts() >= n, f"{kill_after} small files in the store", proc
                )
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            opened_multipart.append(
                [u for u in all_pages(api, "/uploads", log_id=log["id"]) if u["kind"] == "multipart"]
            )
        # Killed mid-way: the large files were being sent (open in the store), not all small ones were.
        assert any(u["status"] == "uploading" for u in opened_multipart[0]), opened_multipart[0]
        assert small_puts() < SMALL

        results = cli_json(*args, env=env)["files"]

        # Every file once, with its SHA-256; the run reports each (resumed ones included).
        assert sorted(r["filename"] for r in results) == sorted(files)
        listed = all_pages(api, f"/logs/{log['id']}/files")
        assert sorted(f["filename"] for f in listed) == sorted(files)  # no duplicates
        for f in listed:
            assert f["status"] == "available" and f["verified_by"] == "store", f
            assert f["sha256"] == sha256_of(files[f["filename"]]), f["filename"]
        # No upload was started twice: one per file, all completed, the large ones resumed.
        uploads = all_pages(api, "/uploads", log_id=log["id"])
        assert len(uploads) == SMALL + LARGE
        assert Counter(u["status"] for u in uploads) == {"completed": SMALL + LARGE}
        assert Counter(u["kind"] for u in uploads) == {"put": SMALL, "multipart": LARGE}
        assert {u["id"] for u in uploads if u["kind"] == "multipart"} == {
            u["id"] for u in opened_multipart[0]
        }

    # No multipart upload is open on any key of the log.
    assert asyncio.run(open_multipart_uploads(backend, [f["key"] for f in listed])) == []

    # Each small file written to the store exactly once: one PUT reached the store per key (a PUT
    # cut off by a kill before its body was whole never reached it), and it was stored.
    bucket = backend.settings.s3_bucket
    small_keys = {f"/{bucket}/{f['key']}" for f in listed if not f["filename"].startswith("phone/video/")}
    puts = proxy.requests("PutObject")
    per_key = Counter(path for path, _ in puts if path in small_keys)
    assert set(per_key) == small_keys
    assert [k for k, n in per_key.items() if n != 1] == []
    assert {status for path, status in puts if path in small_keys} == {200}
