"""Control-plane throughput: complete upload lifecycles per second against MariaDB + MinIO.

SPEC §9: >= 200 lifecycles (init -> sign -> PUT -> complete) per second on 2 cores, p99 of each API
call reported. This starts a private MariaDB and MinIO (the same launchers the real test tier uses),
runs ``upload-plane serve`` as a separate process (so the client does not share its interpreter),
and drives ``--lifecycles`` small single-part uploads with ``--concurrency`` clients in flight.
Everything runs on this machine, so the API, MariaDB, MinIO and the load generator share its cores.

    .venv/bin/python bench/lifecycle.py [--lifecycles 1000] [--concurrency 32] [--workers 1]

Prints a table and one JSON line. Needs mariadbd and the MinIO binary (``make minio``); without them
it says so and exits 0 without measuring.
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
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services import find_binary, free_port, run_mariadb, run_minio  # noqa: E402

from upload_plane.embedded import prepare  # noqa: E402
from upload_plane.settings import Settings  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"
TARGET_PER_SECOND = 200.0
CALLS = ("init", "sign", "put", "complete")


@contextmanager
def api_process(settings: Settings, workers: int, workdir: Path) -> Iterator[str]:
    env = dict(os.environ)
    for name in Settings.__dataclass_fields__:
        value = getattr(settings, name)
        env[f"UPLOAD_PLANE_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    port = free_port()
    log = (workdir / "api.log").open("wb")
    cmd = [
        str(Path(sys.executable).parent / "upload-plane"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
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
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def drive(url: str, lifecycles: int, concurrency: int) -> tuple[float, dict[str, list[float]]]:
    timings: dict[str, list[float]] = {c: [] for c in CALLS}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=60, limits=limits) as api:
        login = await api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        case = (await api.post("/cases", json={"title": "bench"})).json()
        log = (await api.post(f"/cases/{case['id']}/logs", json={"name": "bench"})).json()
        body = os.urandom(1024)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(lifecycles):
            queue.put_nowait(i)

        async def timed(name: str, coro: object) -> httpx.Response:
            start = time.perf_counter()
            resp = await coro  # type: ignore[misc]
            timings[name].append((time.perf_counter() - start) * 1000)
            if resp.status_code >= 300:
                raise RuntimeError(f"{name}: {resp.status_code} {resp.text[:200]}")
            return resp

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                spec = {"filename": f"f{i}.bin", "size": len(body)}
                up = (await timed("init", api.post(f"/logs/{log['id']}/uploads", json=spec))).json()
                signed = await timed(
                    "sign", api.post(f"/uploads/{up['id']}/parts", json={"part_numbers": [1]})
                )
                part = signed.json()["parts"][0]
                await timed(
                    "put",
                    api.put(part["url"], content=body, headers={**part["headers"], "Authorization": ""}),
                )
                await timed("complete", api.post(f"/uploads/{up['id']}/complete", json={}))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, timings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not find_binary("mariadbd", "MARIADBD_BIN") or not find_binary("minio", "MINIO_BIN"):
        print("lifecycle: skipped, needs mariadbd (apt-get install mariadb-server) and MinIO (make minio)")
        print(json.dumps({"bench": "lifecycle", "skipped": True}))
        return 0
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "mariadb").mkdir()
        (work / "minio").mkdir()
        mariadb = stack.enter_context(run_mariadb(work / "mariadb"))
        minio = stack.enter_context(run_minio(work / "minio"))
        settings = Settings(
            database_url=mariadb.create_database("bench"),
            s3_endpoint_url=minio.endpoint,
            s3_public_endpoint_url=minio.endpoint,
            s3_access_key_id=minio.access_key,
            s3_secret_access_key=minio.secret_key,
            s3_bucket="bench",
            jwt_secret=JWT_SECRET,
            db_pool_size=20,
        )
        prepare(settings, ADMIN_PASSWORD)
        url = stack.enter_context(api_process(settings, args.workers, work))
        asyncio.run(drive(url, min(50, args.lifecycles), args.concurrency))  # warm-up
        elapsed, timings = asyncio.run(drive(url, args.lifecycles, args.concurrency))

    rate = args.lifecycles / elapsed
    print(
        f"lifecycle: {args.lifecycles} lifecycles, {args.concurrency} in flight, "
        f"{args.workers} API worker(s), MariaDB + MinIO on this machine; target >= {TARGET_PER_SECOND:.0f}/s"
    )
    print(f"{'call':<10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    result: dict[str, object] = {
        "bench": "lifecycle",
        "lifecycles": args.lifecycles,
        "concurrency": args.concurrency,
        "workers": args.workers,
    }
    for name in CALLS:
        values = timings[name]
        p50, p99, top = statistics.median(values), pct(values, 0.99), max(values)
        print(f"{name:<10}{p50:>10.1f}{p99:>10.1f}{top:>10.1f}")
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = round(p50, 1), round(p99, 1)
    verdict = "ok" if rate >= TARGET_PER_SECOND else "MISSED"
    print(f"throughput: {rate:.1f} lifecycles/s ({verdict})")
    result.update(
        per_second=round(rate, 1), target_per_second=TARGET_PER_SECOND, meets_target=rate >= TARGET_PER_SECOND
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
