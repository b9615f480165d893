"""Processing after the upload: the worker's hashing rate, and jobs per second with two workers.

SPEC §9: a worker hashes a stored object at >= 0.8x the rate of ``curl <presigned GET> | sha256sum``
on the same object in the same run. Both read the same 1 GiB object from the same private MinIO
through the same presigned URL, alternately, ``--rounds`` times each; the median and the best of
each are reported, and the ratio of the medians is the verdict. The worker's side is its own code
(``processing.verify.digest_url``: one streamed GET, a reader thread and a hashing thread).

Then jobs per second: ``--images`` small JPEGs (640 x 480, with EXIF) are uploaded through the API
while no worker runs (their requests wait in the outbox), then two ``upload-plane worker`` processes
start on a private Redis; timed from their start until every file is ``done`` (relay, queue, hash,
sandboxed decode, preview PUT, settle with its audit event), on the same 2 cores as MariaDB, MinIO
and Redis.

    .venv/bin/python bench/processing.py [--size-mib 1024] [--rounds 3] [--images 1000] [--workers 2]

Prints a table and one JSON line (also written to bench/results/processing.json).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from _stack import REPO, Stack, random_file, services_missing, settings_env, stack, write_result
from PIL import Image
from tests.api.helpers import sql_rows
from tests.services import run_redis

from upload_plane.processing.verify import digest_url
from upload_plane.signing import Presigner

MIB = 1024 * 1024
TARGET_RATIO = 0.8


def presigned_get(s: Stack, key: str) -> str:
    settings = s.settings
    signer = Presigner(
        endpoint_url=settings.s3_endpoint_url,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )
    return signer.presign("GET", key, expires_in=3600)


def curl_sha256sum(url: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        f"curl -sS --fail '{url}' | sha256sum", shell=True, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start, out.stdout.split()[0]


def worker_digest(url: str, size: int) -> tuple[float, str]:
    start = time.perf_counter()
    digest = digest_url(url, size)
    return time.perf_counter() - start, digest.sha256


def hashing(s: Stack, size: int, rounds: int) -> dict[str, Any]:
    path = random_file(s.workdir / "object.bin", size)
    s.minio.client().upload_file(str(path), s.bucket, "bench/object.bin")
    path.unlink()
    url = presigned_get(s, "bench/object.bin")
    curl_times, worker_times, digests = [], [], set()
    for _ in range(rounds):
        seconds, digest = curl_sha256sum(url)
        curl_times.append(seconds)
        digests.add(digest)
        seconds, digest = worker_digest(url, size)
        worker_times.append(seconds)
        digests.add(digest)
    assert len(digests) == 1, f"the two sides disagree: {digests}"
    mb = size / 1e6
    result = {
        "size_mib": size // MIB,
        "rounds": rounds,
        "curl_sha256sum_mb_s": {"median": mb / statistics.median(curl_times), "best": mb / min(curl_times)},
        "worker_mb_s": {"median": mb / statistics.median(worker_times), "best": mb / min(worker_times)},
    }
    result["ratio_of_medians"] = statistics.median(curl_times) / statistics.median(worker_times)
    return result


def jpeg(i: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(out, "JPEG", quality=80)
    return out.getvalue()


def upload_images(s: Stack, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {s.token}"}

    def one(i: int) -> str:
        data = jpeg(i)
        with httpx.Client(base_url=f"{s.api_url}/api/v1", headers=headers, timeout=60) as api:
            body = {"filename": f"frame{i:04d}.jpg", "size": len(data), "content_type": "image/jpeg"}
            upload = api.post(f"/logs/{s.log_id}/uploads", json=body).json()
            part = api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1]}).json()["parts"][0]
            assert httpx.put(part["url"], content=data, headers=part["headers"]).status_code == 200
            assert api.post(f"/uploads/{upload['id']}/complete", json={}).status_code == 200
            return str(upload["file_id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def jobs_per_second(s: Stack, images: int, workers: int, redis_url: str) -> dict[str, Any]:
    upload_images(s, images)
    settings = s.settings.with_(queue_url=redis_url, processing="auto")
    env = settings_env(settings)
    procs = []
    started = time.perf_counter()
    try:
        for i in range(workers):
            log = (s.workdir / f"worker{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "upload-plane"), "worker"],
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        first = None
        while True:
            counts = dict(sql_rows(settings, "SELECT status, COUNT(*) FROM file_processing GROUP BY status"))
            finished = counts.get("done", 0) + counts.get("failed", 0)
            if finished and first is None:
                first = time.perf_counter()
            if finished >= images:
                break
            time.sleep(0.25)  # polling interval
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(60)
    return {
        "images": images,
        "workers": workers,
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0),
        "seconds": elapsed,
        "jobs_per_second": images / elapsed,
        "first_done_after_s": (first or started) - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    missing = services_missing()
    if missing or not shutil.which("curl") or not shutil.which("redis-server"):
        print(f"processing: skipped ({missing or 'needs curl and redis-server'})")
        return 0
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        redis = cleanup.enter_context(run_redis(workdir / "redis"))
        # The API relays nothing and runs no job: the workers do (UPLOAD_PLANE_PROCESSING=off here
        # only keeps the API from running jobs in-process before the workers start).
        s = cleanup.enter_context(stack(workdir, processing="off"))
        hashed = hashing(s, args.size_mib * MIB, args.rounds)
        jobs = jobs_per_second(s, args.images, args.workers, redis.url)
    print(f"{'':34} {'median MB/s':>12} {'best MB/s':>10}")
    for name, key in (("curl <presigned GET> | sha256sum", "curl_sha256sum_mb_s"), ("worker", "worker_mb_s")):
        print(f"{name:34} {hashed[key]['median']:12.0f} {hashed[key]['best']:10.0f}")
    verdict = "OK" if hashed["ratio_of_medians"] >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio of medians: {hashed['ratio_of_medians']:.2f}x (target >= {TARGET_RATIO}x): {verdict}")
    print(
        f"{jobs['images']} images, {jobs['workers']} workers: {jobs['jobs_per_second']:.1f} jobs/s "
        f"({jobs['seconds']:.1f} s, {jobs['done']} done, {jobs['failed']} failed)"
    )
    write_result("processing", {"hashing": hashed, "jobs": jobs, "target_ratio": TARGET_RATIO})
    return 0


if __name__ == "__main__":
    sys.exit(main())
