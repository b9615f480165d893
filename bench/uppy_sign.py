"""Uppy's part-signing route: this service vs Uppy Companion 6.2.2, same run, same MinIO.

SPEC §9 / issue 11 (4): ``GET /s3/multipart/{uploadId}/{partNumber}`` (one request per part,
authorised and scope-checked) serves >= 5x the requests per second of Companion 6.2.2, measured with
a closed-loop client (``wrk -t2 -c32``, Debian's wrk) in the same run against the same MinIO.

Starts a private MariaDB and MinIO (the test tier's launchers), ``upload-plane serve`` (one process)
and Companion (one node process, installed from npm into ``.cache/companion`` on first use), starts
one multipart upload on each, checks that each route's URL really accepts a part, then runs wrk
against each route in turn (``--rounds`` times, alternating; the best round of each counts) and
prints both rates and the ratio. Routes measured here:

- ours through an upload link: ``/links/{token}/s3/multipart/{uploadId}/1?key=...``;
- ours for a signed-in page: ``/s3/multipart/{uploadId}/1?key=...`` with the session cookie;
- Companion's: ``/s3/multipart/{uploadId}/1?key=...``.

    .venv/bin/python bench/uppy_sign.py [--duration 10] [--rounds 2]

Writes bench/results/uppy_sign.json. Needs mariadbd, MinIO (make minio), node/npm and wrk; without
them it says what is missing and exits 0 without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import REPO, services_missing, stack, write_result
from tests.services import MinIO, free_port

from upload_plane.settings import Settings

COMPANION_VERSION = "6.2.2"
COMPANION_DIR = REPO / ".cache" / "companion"
TARGET_RATIO = 5.0
MIB = 1024 * 1024


def missing_tools() -> str | None:
    for tool, how in (
        ("wrk", "apt-get install wrk"),
        ("node", "apt-get install nodejs npm"),
        ("npm", "apt-get install npm"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not found ({how})"
    return services_missing()


def companion_bin() -> Path:
    """``@uppy/companion`` pinned at 6.2.2 in .cache/companion (git-ignored), installed once."""
    binary = COMPANION_DIR / "node_modules" / ".bin" / "companion"
    installed = COMPANION_DIR / "node_modules" / "@uppy" / "companion" / "package.json"
    if binary.exists() and json.loads(installed.read_text())["version"] == COMPANION_VERSION:
        return binary
    COMPANION_DIR.mkdir(parents=True, exist_ok=True)
    (COMPANION_DIR / "package.json").write_text(
        json.dumps({"private": True, "dependencies": {"@uppy/companion": COMPANION_VERSION}}) + "\n"
    )
    print(f"installing @uppy/companion@{COMPANION_VERSION} into {COMPANION_DIR} ...", flush=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        cwd=COMPANION_DIR,
        check=True,
    )
    return binary


@contextmanager
def companion(minio: MinIO, bucket: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    data = workdir / "companion-data"
    data.mkdir()
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "COMPANION_PORT": str(port),
        "COMPANION_DOMAIN": f"127.0.0.1:{port}",
        "COMPANION_PROTOCOL": "http",
        "COMPANION_DATADIR": str(data),
        "COMPANION_SECRET": "bench-companion-secret-0123456789",
        "COMPANION_UPLOAD_URLS": r"http://127\.0\.0\.1:.*",
        "COMPANION_CLIENT_ORIGINS": "http://127.0.0.1",
        "COMPANION_AWS_KEY": minio.access_key,
        "COMPANION_AWS_SECRET": minio.secret_key,
        "COMPANION_AWS_BUCKET": bucket,
        "COMPANION_AWS_REGION": minio.region,
        "COMPANION_AWS_ENDPOINT": minio.endpoint,
        "COMPANION_AWS_FORCE_PATH_STYLE": "true",
        "COMPANION_HIDE_WELCOME": "true",
    }
    with (workdir / "companion.log").open("wb") as log:
        proc = subprocess.Popen([str(companion_bin())], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Companion did not start; see {workdir / 'companion.log'}")
            time.sleep(0.1)  # polling interval while waiting for it to listen
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_multipart(base: str, headers: dict[str, str] | None = None, **metadata: object) -> str:
    """POST {base}/s3/multipart as Uppy does; the sign-part URL of part 1 (with its ``?key=``)."""
    with httpx.Client(timeout=30, headers=headers) as http:
        resp = http.post(
            f"{base}/s3/multipart",
            json={
                "filename": "bench.bin",
                "type": "application/octet-stream",
                "metadata": {"size": 40 * MIB, **metadata},
            },
        )
        resp.raise_for_status()
        body = resp.json()
    return f"{base}/s3/multipart/{quote(body['uploadId'], safe='')}/1?key={quote(body['key'], safe='')}"


def check_part_url(route: str, headers: dict[str, str]) -> None:
    """The route's URL must really take part 1 (5 MiB), so the rate is of working answers."""
    with httpx.Client(timeout=60) as http:
        signed = http.get(route, headers=headers)
        signed.raise_for_status()
        put = http.put(signed.json()["url"], content=os.urandom(5 * MIB))
        if put.status_code != 200:
            raise RuntimeError(
                f"the signed URL of {route.split('?')[0]} was refused: {put.status_code} {put.text[:300]}"
            )


def wrk(
    url: str, duration: int, headers: dict[str, str], threads: int = 2, connections: int = 32
) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_second": rate,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else -1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per route, alternating")
    parser.add_argument(
        "--authorization-cache-ttl",
        type=int,
        default=Settings().authorization_cache_ttl,
        help="seconds the route trusts an authorisation it checked (0: check the database every request)",
    )
    args = parser.parse_args()
    reason = missing_tools()
    if reason:
        print(f"uppy_sign: skipped, {reason}")
        return 0
    companion_bin()
    changes = {"authorization_cache_ttl": args.authorization_cache_ttl}
    with tempfile.TemporaryDirectory(prefix="uppy-sign-") as tmp, stack(Path(tmp), **changes) as s:
        workdir = Path(tmp)
        with httpx.Client(base_url=f"{s.api_url}/api/v1", timeout=30) as api:
            api.headers["Authorization"] = f"Bearer {s.token}"
            link = api.post(f"/logs/{s.log_id}/upload-links", json={"expires_in": 3600}).json()
            login = api.post("/auth/login", json={"username": "admin", "password": "bench-admin-password"})
            cookie = login.cookies["upload_plane_session"]
        ours_link = start_multipart(f"{s.api_url}/links/{link['token']}")
        page = {"Cookie": f"upload_plane_session={cookie}"}
        ours_session = start_multipart(s.api_url, {**page, "Origin": s.api_url}, log_id=s.log_id)
        with companion(s.minio, s.bucket, workdir) as companion_url:
            routes = {
                "ours_link": (ours_link, {}),
                "ours_session": (ours_session, page),
                "companion": (start_multipart(companion_url), {}),
            }
            for url, headers in routes.values():
                check_part_url(url, headers)
                wrk(url, 2, headers)  # warm-up
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in routes}
            for _ in range(args.rounds):
                for name, (url, headers) in routes.items():
                    result = wrk(url, args.duration, headers)
                    runs[name].append(result)
                    rate, p99 = result["requests_per_second"], result["p99_ms"]
                    print(
                        f"  {name:<13} {rate:>9.0f} req/s  p99 {p99:.1f} ms"
                        f"  non-2xx {result['non_2xx']:.0f} {result['socket_errors']}",
                        flush=True,
                    )
    best = {name: max(r["requests_per_second"] for r in rs) for name, rs in runs.items()}
    invalid = [name for name, rs in runs.items() if any(r["non_2xx"] for r in rs)]
    ratio = best["ours_link"] / best["companion"]
    ratio_session = best["ours_session"] / best["companion"]
    print()
    print(f"{'route':<28}{'req/s (best)':>14}{'x Companion':>14}")
    print(f"{'Companion 6.2.2':<28}{best['companion']:>14.0f}{1.0:>14.2f}")
    print(f"{'ours, upload link':<28}{best['ours_link']:>14.0f}{ratio:>14.2f}")
    print(f"{'ours, session cookie':<28}{best['ours_session']:>14.0f}{ratio_session:>14.2f}")
    ok = min(ratio, ratio_session) >= TARGET_RATIO and not invalid
    print(f"target: >= {TARGET_RATIO:.0f}x Companion on both -> {'met' if ok else 'MISSED'}")
    if invalid:
        print(f"non-2xx answers during the runs of: {', '.join(invalid)} (the rates are not valid)")
    write_result(
        "uppy_sign",
        {
            "benchmark": "uppy_sign",
            "tool": "wrk -t2 -c32",
            "duration_seconds": args.duration,
            "rounds": args.rounds,
            "authorization_cache_ttl": args.authorization_cache_ttl,
            "companion_version": COMPANION_VERSION,
            "companion_rps": round(best["companion"]),
            "ours_link_rps": round(best["ours_link"]),
            "ours_session_rps": round(best["ours_session"]),
            "ratio_link": round(ratio, 2),
            "ratio_session": round(ratio_session, 2),
            "target_ratio": TARGET_RATIO,
            "met": ok,
            "runs": runs,
            "cpus": os.cpu_count(),
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
