"""Control-plane throughput: complete upload lifecycles per second against MariaDB + MinIO, and the
same S3 calls issued straight to MinIO by boto3 in the same run.

SPEC §9 / issue "control-plane throughput": >= 200 lifecycles (init -> sign -> PUT -> complete) per
second on 2 cores, >= 1.0x the direct-to-store boto3 rate, API CPU <= 3 ms per lifecycle, p99 of every
call < 150 ms at 32 in flight, and /health p99 < 50 ms while it runs.

This starts a private MariaDB and MinIO (the launchers the real test tier uses) and runs
``upload-plane serve`` as a separate process. Then, one after the other on the same services:

1. **through the API**: ``--lifecycles`` single-part uploads, ``--concurrency`` in flight, driven by
   an aiohttp load generator in this process (light, so the two cores go to what is measured), while
   another process probes ``/health`` every 20 ms;
2. **direct to the store**: the same S3 calls (CreateMultipartUpload, UploadPart, ListParts,
   CompleteMultipartUpload, HeadObject) from boto3 in ``--concurrency`` threads, no API, no database.

CPU per lifecycle comes from each process's own counters (/proc/<pid>/stat) over the measured run.

    .venv/bin/python bench/lifecycle.py [--lifecycles 1500] [--concurrency 32] [--workers 1] [--profile]

Prints a table and one JSON line (also written to bench/results/lifecycle.json). Needs mariadbd and
the MinIO binary (``make minio``); without them it says so and exits 0 without measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import httpx
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services import MinIO, find_binary, free_port, mariadb_and_minio  # noqa: E402

from upload_plane.embedded import prepare  # noqa: E402
from upload_plane.settings import Settings  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"
TARGET_PER_SECOND = 200.0
TARGET_CPU_MS = 3.0
TARGET_P99_MS = 150.0
TARGET_HEALTH_P99_MS = 50.0
CALLS = ("init", "sign", "put", "complete")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextmanager
def api_process(settings: Settings, workers: int, workdir: Path) -> Iterator[tuple[str, int]]:
    env = dict(os.environ)
    for name in Settings.__dataclass_fields__:
        value = getattr(settings, name)
        if value is None:
            continue
        env[f"UPLOAD_PLANE_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    env["UPLOAD_PLANE_METRICS_PUBLIC"] = "true"  # a private bench: /metrics needs no token
    port = free_port()
    log = (workdir / "api.log").open("wb")
    cmd = [
        str(Path(sys.executable).parent / "upload-plane"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {workdir / 'api.log'}")
            time.sleep(0.1)  # polling interval while waiting for readiness
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def drive(url: str, lifecycles: int, concurrency: int) -> tuple[float, dict[str, list[float]]]:
    """``lifecycles`` uploads of 1 KiB through the API, ``concurrency`` at a time."""
    timings: dict[str, list[float]] = {c: [] for c in CALLS}
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        api = f"{url}/api/v1"
        async with http.post(
            f"{api}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ) as r:
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{api}/cases", json={"title": "bench"}, headers=auth) as r:
            case = await r.json()
        async with http.post(f"{api}/cases/{case['id']}/logs", json={"name": "bench"}, headers=auth) as r:
            log_id = (await r.json())["id"]
        body = os.urandom(1024)
        todo = iter(range(lifecycles))

        async def call(name: str, method: str, target: str, **kwargs: Any) -> Any:
            start = time.perf_counter()
            async with http.request(method, target, **kwargs) as resp:
                data = await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"{name}: {resp.status} {data[:200]!r}")
            timings[name].append((time.perf_counter() - start) * 1000)
            return json.loads(data) if data else None

        async def worker() -> None:
            for i in todo:
                spec = {"filename": f"f{i}.bin", "size": len(body)}
                up = await call("init", "POST", f"{api}/logs/{log_id}/uploads", json=spec, headers=auth)
                signed = await call(
                    "sign",
                    "POST",
                    f"{api}/uploads/{up['id']}/parts",
                    json={"part_numbers": [1]},
                    headers=auth,
                )
                part = signed["parts"][0]
                await call("put", "PUT", part["url"], data=body, headers=part["headers"])
                await call("complete", "POST", f"{api}/uploads/{up['id']}/complete", headers=auth)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, timings


def direct(minio: MinIO, bucket: str, lifecycles: int, concurrency: int) -> tuple[float, float]:
    """The same S3 calls straight to MinIO from boto3 threads; (seconds, this process's CPU seconds)."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=minio.endpoint,
        region_name=minio.region,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=concurrency * 2
        ),
    )
    body = os.urandom(1024)
    counter = iter(range(lifecycles))
    lock = threading.Lock()

    def lifecycle(_: int) -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            key = f"direct/{i}.bin"
            upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)[
                "ETag"
            ]
            client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
            )
            client.head_object(Bucket=bucket, Key=key)

    lifecycle_warmup = min(50, lifecycles)
    with ThreadPoolExecutor(concurrency) as pool:
        counter = iter(range(lifecycle_warmup))
        list(pool.map(lifecycle, range(concurrency)))
        counter = iter(range(lifecycle_warmup, lifecycle_warmup + lifecycles))
        cpu0, start = cpu_seconds(os.getpid()), time.perf_counter()
        list(pool.map(lifecycle, range(concurrency)))
        return time.perf_counter() - start, cpu_seconds(os.getpid()) - cpu0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the API during the run (bench/results/)"
    )
    args = parser.parse_args()
    if not find_binary("mariadbd", "MARIADBD_BIN") or not find_binary("minio", "MINIO_BIN"):
        print("lifecycle: skipped, needs mariadbd (apt-get install mariadb-server) and MinIO (make minio)")
        print(json.dumps({"bench": "lifecycle", "skipped": True}))
        return 0
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        services = stack.enter_context(
            mariadb_and_minio(
                work, "bench", s3_bucket="bench", jwt_secret=JWT_SECRET, db_pool_size=20,
                upload_start_rate=1_000_000,
                # As in production, files are processed by workers: the API only writes each
                # completed file's processing row, marked for the relay (here nothing relays them).
                processing="off",
            )
        )  # fmt: skip
        settings, minio, mariadb = services.settings, services.minio, services.mariadb
        prepare(settings, ADMIN_PASSWORD)
        url, api_pid = stack.enter_context(api_process(settings, args.workers, work))
        asyncio.run(drive(url, min(200, args.lifecycles), args.concurrency))  # warm-up
        probe = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.probe_latency", f"{url}/health", "3600", "0.02"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        spy = None
        if args.profile:
            profile = REPO / "bench" / "results" / "lifecycle-profile.txt"
            py_spy = str(Path(sys.executable).parent / "py-spy")
            spy_args = ["record", "-r", "200", "-f", "raw", "--nonblocking", "-d", "15", "-o", str(profile)]
            spy = subprocess.Popen([py_spy, *spy_args, "-p", str(api_pid)])
        pids = {"api": api_pid, "minio": minio.pid, "mariadb": mariadb.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        elapsed, timings = asyncio.run(drive(url, args.lifecycles, args.concurrency))
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        if spy is not None:
            spy.wait(60)
        probe.send_signal(2)  # KeyboardInterrupt ends the probe early; it prints what it saw
        health_out, _ = probe.communicate(timeout=30)
        minio_before = cpu_seconds(minio.pid)
        direct_elapsed, boto_cpu = direct(minio, "bench", args.lifecycles, args.concurrency)
        direct_minio_ms = 1000 * (cpu_seconds(minio.pid) - minio_before) / args.lifecycles
    health = json.loads(health_out.strip().splitlines()[-1]) if health_out.strip() else {}

    rate = args.lifecycles / elapsed
    direct_rate = args.lifecycles / direct_elapsed
    per = {name: 1000 * seconds / args.lifecycles for name, seconds in used.items()}
    print(
        f"lifecycle: {args.lifecycles} lifecycles, {args.concurrency} in flight, "
        f"{args.workers} API worker(s); MariaDB, MinIO, the API and the load generator share the cores"
    )
    print(f"{'call':<10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    result: dict[str, Any] = {
        "bench": "lifecycle",
        "lifecycles": args.lifecycles,
        "concurrency": args.concurrency,
        "workers": args.workers,
    }
    worst_p99 = 0.0
    for name in CALLS:
        values = timings[name]
        p50, p99, top = statistics.median(values), pct(values, 0.99), max(values)
        worst_p99 = max(worst_p99, p99)
        print(f"{name:<10}{p50:>10.1f}{p99:>10.1f}{top:>10.1f}")
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = round(p50, 1), round(p99, 1)
    ratio = rate / direct_rate
    boto_ms = 1000 * boto_cpu / args.lifecycles
    health_p99 = float(health.get("p99_ms", 1e9))
    api_ms = per["api"]
    cpu_line = (
        f"CPU per lifecycle: API {api_ms:.2f} ms (target <= {TARGET_CPU_MS:.0f}), "
        f"MinIO {per['minio']:.2f} ms, MariaDB {per['mariadb']:.2f} ms; "
        f"direct: boto3 {boto_ms:.2f} ms, MinIO {direct_minio_ms:.2f} ms"
    )
    health_line = (
        f"/health during the run: p99 {health.get('p99_ms')} ms, max {health.get('max_ms')} ms over "
        f"{health.get('probes')} probes (target p99 < {TARGET_HEALTH_P99_MS:.0f})"
    )
    checks = [
        (
            f"through the API: {rate:.1f} lifecycles/s (target >= {TARGET_PER_SECOND:.0f})",
            rate >= TARGET_PER_SECOND,
        ),
        (
            f"direct to MinIO with boto3: {direct_rate:.1f} lifecycles/s; API/direct = {ratio:.2f}",
            ratio >= 1.0,
        ),
        (cpu_line, api_ms <= TARGET_CPU_MS),
        (
            f"worst p99 of a call: {worst_p99:.1f} ms (target < {TARGET_P99_MS:.0f})",
            worst_p99 < TARGET_P99_MS,
        ),
        (health_line, health_p99 < TARGET_HEALTH_P99_MS),
    ]
    for line, ok in checks:
        print(f"{line}  [{'ok' if ok else 'MISSED'}]")
    result.update(
        per_second=round(rate, 1),
        direct_per_second=round(direct_rate, 1),
        ratio_to_direct=round(ratio, 2),
        api_cpu_ms_per_lifecycle=round(per["api"], 2),
        minio_cpu_ms_per_lifecycle=round(per["minio"], 2),
        mariadb_cpu_ms_per_lifecycle=round(per["mariadb"], 2),
        boto3_cpu_ms_per_lifecycle=round(1000 * boto_cpu / args.lifecycles, 2),
        direct_minio_cpu_ms_per_lifecycle=round(direct_minio_ms, 2),
        health=health,
        meets_targets=all(ok for _, ok in checks),
    )
    print(json.dumps(result))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "lifecycle.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
