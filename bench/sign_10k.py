"""One ``POST /api/v1/uploads/{id}/parts`` for 10,000 parts, on the embedded default.

SPEC §9: it answers in < 150 ms on a 2-core machine. This starts the real app in-process: moto's S3
server in a thread, SQLite in a temporary directory, the app under uvicorn on loopback; then logs in,
creates a case, a log and a 10,000-part upload (5 MiB parts), and times the sign call as the client
sees it: from sending the request until the last byte of the ~6 MB JSON answer arrived (the client
does not parse it inside the timing). The first call is reported as "cold"; then ``ROUNDS`` calls
are timed. A second series signs the same parts with ``checksums_sha256`` for every part.

    .venv/bin/python bench/sign_10k.py [--rounds 20] [--no-checksums]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from upload_plane.app import create_app
from upload_plane.embedded import EmbeddedS3, prepare, serve_in_thread
from upload_plane.settings import MIB, Settings

TARGET_MS = 150.0
PARTS = 10_000
PART_SIZE = 5 * MIB
ADMIN_PASSWORD = "bench-admin-password"
JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"


@contextmanager
def running_app(workdir: Path) -> Iterator[str]:
    """The embedded default, served by uvicorn in a thread; yields the API base URL."""
    s3 = EmbeddedS3()
    endpoint = s3.start()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'b.db'}",
        s3_endpoint_url=endpoint,
        s3_public_endpoint_url=endpoint,
        s3_bucket="bench",
        jwt_secret=JWT_SECRET,
        part_size=PART_SIZE,
    )
    try:
        prepare(settings, ADMIN_PASSWORD)  # migrate, bucket + CORS, admin user
        with serve_in_thread(create_app(settings)) as url:
            yield f"{url}/api/v1"
    finally:
        s3.stop()


def expect(resp: httpx.Response, status: int) -> Any:
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text}")
    return resp.json()


def start_upload(api: httpx.Client) -> str:
    token = expect(api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}), 200)[
        "access_token"
    ]
    api.headers["Authorization"] = f"Bearer {token}"
    case = expect(api.post("/cases", json={"title": "bench: sign 10k parts"}), 201)
    log = expect(api.post(f"/cases/{case['id']}/logs", json={"name": "bench"}), 201)
    upload = expect(
        api.post(
            f"/logs/{log['id']}/uploads",
            json={"filename": "big.bin", "size": PARTS * PART_SIZE, "part_size": PART_SIZE},
        ),
        201,
    )
    if upload["part_count"] != PARTS:
        raise RuntimeError(f"expected {PARTS} parts, the server planned {upload['part_count']}")
    return str(upload["id"])


def timed_sign(api: httpx.Client, upload_id: str, body: bytes) -> tuple[float, bytes]:
    """Milliseconds from sending the request until the whole answer arrived, and the answer."""
    start = time.perf_counter()
    resp = api.post(
        f"/uploads/{upload_id}/parts",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    content = resp.content
    elapsed = (time.perf_counter() - start) * 1e3
    if resp.status_code != 200:
        raise RuntimeError(f"sign -> {resp.status_code}: {resp.text[:500]}")
    return elapsed, content


def series(api: httpx.Client, upload_id: str, body: bytes, rounds: int) -> dict[str, Any]:
    cold, content = timed_sign(api, upload_id, body)
    answer = json.loads(content)
    if len(answer["parts"]) != PARTS or answer["parts"][-1]["part_number"] != PARTS:
        raise RuntimeError("the answer does not hold 10,000 signed parts")
    times = sorted(timed_sign(api, upload_id, body)[0] for _ in range(rounds))
    return {
        "cold_ms": round(cold, 1),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
        "max_ms": round(times[-1], 1),
        "min_ms": round(times[0], 1),
        "response_bytes": len(content),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-checksums", action="store_true", help="skip the checksum series")
    args = parser.parse_args()
    for noisy in ("upload_plane", "httpx", "werkzeug"):  # per-request INFO lines would flood
        logging.getLogger(noisy).setLevel(logging.WARNING)

    plain = json.dumps({"part_numbers": list(range(1, PARTS + 1))}).encode()
    checksum = base64.b64encode(hashlib.sha256(b"part").digest()).decode()
    summed = json.dumps(
        {
            "part_numbers": list(range(1, PARTS + 1)),
            "checksums_sha256": {str(n): checksum for n in range(1, PARTS + 1)},
        }
    ).encode()

    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-sign-") as tmp,
        running_app(Path(tmp)) as base,
        httpx.Client(base_url=base, timeout=120) as api,
    ):
        upload_id = start_upload(api)
        results["plain"] = series(api, upload_id, plain, args.rounds)
        if not args.no_checksums:
            results["checksums"] = series(api, upload_id, summed, max(3, args.rounds // 4))

    print(f"sign_10k: POST /uploads/{{id}}/parts with {PARTS:,} parts, target < {TARGET_MS:.0f} ms")
    print(f"{'series':<12}{'cold':>9}{'p50':>9}{'p95':>9}{'max':>9}{'MB':>7}  verdict (p95)")
    for name, r in results.items():
        verdict = "ok" if r["p95_ms"] < TARGET_MS else "MISSED"
        print(
            f"{name:<12}{r['cold_ms']:>9.1f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
            f"{r['max_ms']:>9.1f}{r['response_bytes'] / 1e6:>7.2f}  {verdict}"
        )
    plain_result = results["plain"]
    print(
        json.dumps(
            {
                "bench": "sign_10k",
                "parts": PARTS,
                "rounds": args.rounds,
                "target_ms": TARGET_MS,
                **plain_result,
                "meets_target_p50": plain_result["p50_ms"] < TARGET_MS,
                "meets_target_p95": plain_result["p95_ms"] < TARGET_MS,
                "with_checksums": results.get("checksums"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
