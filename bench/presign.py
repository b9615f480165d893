"""Presigning speed: boto3 ``generate_presigned_url`` vs ``Presigner.presign`` vs ``presign_parts``.

SPEC §9: ours must be >= 50x faster per URL than boto3 in the same run, and byte-identical to
botocore for the same inputs and clock. Each contender signs an UploadPart URL with a signed
Content-Length; the figure is the best of several rounds (the least disturbed by other processes).
The identity check freezes botocore's clock and compares URLs for a few keys and endpoints.

    .venv/bin/python bench/presign.py

Prints a table and one JSON line; exits 1 if any URL differs from botocore's.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore
import botocore.auth
from botocore.config import Config

from upload_plane.signing import Presigner

TARGET = 50.0
ROUNDS = 5
ENDPOINT = "http://127.0.0.1:9000"
REGION = "us-east-1"
BUCKET = "evidence"
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
KEY = "cases/01J0CASE/logs/01J0LOG/01J0UPLOAD/bodycam footage 2024-05-06.mp4"
UPLOAD_ID = "ZmFrZS91cGxvYWQraWQ=.2~abc+/="
PART_SIZE = 5 * 1024 * 1024
BATCH = 10_000


def client(endpoint: str = ENDPOINT, region: str = REGION) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def best_per_item(run: Callable[[], None], items: int) -> float:
    """Microseconds per item of the fastest of ``ROUNDS`` runs."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / items * 1e6


def measure() -> dict[str, float]:
    s3 = client()
    ours = Presigner(ENDPOINT, BUCKET, REGION, ACCESS_KEY, SECRET_KEY)
    boto_n, single_n = 1_000, 20_000

    def boto_run() -> None:
        for n in range(1, boto_n + 1):
            s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": BUCKET,
                    "Key": KEY,
                    "UploadId": UPLOAD_ID,
                    "PartNumber": n,
                    "ContentLength": PART_SIZE,
                },
                ExpiresIn=900,
            )

    def single_run() -> None:
        for n in range(1, single_n + 1):
            ours.presign(
                "PUT",
                KEY,
                params=(("uploadId", UPLOAD_ID), ("partNumber", str(n))),
                headers={"content-length": str(PART_SIZE)},
                expires_in=900,
            )

    parts: list[tuple[int, int, str | None]] = [(n, PART_SIZE, None) for n in range(1, BATCH + 1)]

    def batch_run() -> None:
        ours.presign_parts(KEY, UPLOAD_ID, parts, 900)

    boto_run()  # warm: botocore loads the service model and builds handlers on first use
    single_run()
    return {
        "boto3_us": best_per_item(boto_run, boto_n),
        "presign_us": best_per_item(single_run, single_n),
        "presign_parts_us": best_per_item(batch_run, BATCH),
    }


# -- identity with a frozen botocore clock -------------------------------------------------------------


@contextmanager
def frozen_botocore_clock(instant: dt.datetime) -> Iterator[None]:
    """Freeze the time botocore signs with.

    botocore >= 1.36 reads it through ``botocore.auth.get_current_datetime()``, older versions through
    ``datetime.datetime.utcnow()`` in ``botocore.auth``; both are replaced. The identity check would
    notice a clock that is not frozen: every URL would differ.
    """

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return instant.astimezone(tz) if tz else instant.replace(tzinfo=None)

        @classmethod
        def utcnow(cls) -> dt.datetime:  # type: ignore[override]
            return instant.replace(tzinfo=None)

    def get_current_datetime(remove_tzinfo: bool = True) -> dt.datetime:
        return instant.replace(tzinfo=None) if remove_tzinfo else instant

    shim = types.SimpleNamespace(**vars(dt))
    shim.datetime = Frozen
    saved = {name: getattr(botocore.auth, name, None) for name in ("datetime", "get_current_datetime")}
    setattr(botocore.auth, "datetime", shim)  # noqa: B010
    if saved["get_current_datetime"] is not None:
        setattr(botocore.auth, "get_current_datetime", get_current_datetime)  # noqa: B010
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is not None:
                setattr(botocore.auth, name, value)


def identical() -> tuple[int, list[str]]:
    """(URLs compared, mismatches) for a frozen clock, plus presign_parts against presign."""
    instant = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    compared, mismatches = 0, []
    with frozen_botocore_clock(instant):
        for endpoint in (ENDPOINT, "https://s3.example.com:443", "http://[::1]:9000"):
            for region in ("us-east-1", "eu-central-1"):
                s3 = client(endpoint, region)
                ours = Presigner(endpoint, BUCKET, region, ACCESS_KEY, SECRET_KEY)
                for key in (KEY, "ü/~+%=//x", "a b"):
                    for n in (1, 10_000):
                        expected = s3.generate_presigned_url(
                            "upload_part",
                            Params={
                                "Bucket": BUCKET,
                                "Key": key,
                                "UploadId": UPLOAD_ID,
                                "PartNumber": n,
                                "ContentLength": PART_SIZE,
                            },
                            ExpiresIn=900,
                        )
                        got = ours.presign(
                            "PUT",
                            key,
                            params=(("uploadId", UPLOAD_ID), ("partNumber", str(n))),
                            headers={"content-length": str(PART_SIZE)},
                            expires_in=900,
                            now=instant,
                        )
                        (batch,) = ours.presign_parts(key, UPLOAD_ID, [(n, PART_SIZE, None)], 900, instant)
                        compared += 1
                        if not expected == got == batch:
                            mismatches.append(f"{endpoint} {region} {key!r} #{n}")
    return compared, mismatches


def main() -> int:
    numbers = measure()
    compared, mismatches = identical()
    boto, single, batch = (
        numbers["boto3_us"],
        numbers["presign_us"],
        numbers["presign_parts_us"],
    )
    rows = [
        ("boto3 generate_presigned_url", boto, 1.0),
        ("Presigner.presign", single, boto / single),
        ("Presigner.presign_parts (per URL)", batch, boto / batch),
    ]
    print(f"presign: UploadPart URLs, best of {ROUNDS} rounds, target >= {TARGET:.0f}x boto3")
    print(f"{'contender':<36}{'us/URL':>10}{'speedup':>10}  verdict")
    for name, us, ratio in rows:
        verdict = "" if name.startswith("boto3") else ("ok" if ratio >= TARGET else "MISSED")
        print(f"{name:<36}{us:>10.2f}{ratio:>9.1f}x  {verdict}")
    print(
        f"byte-identical to botocore (frozen clock): {compared - len(mismatches)}/{compared}"
        + "".join(f"\n  differs: {m}" for m in mismatches)
    )
    result = {
        "bench": "presign",
        "boto3_us_per_url": round(boto, 3),
        "presign_us_per_url": round(single, 3),
        "presign_parts_us_per_url": round(batch, 3),
        "speedup_presign": round(boto / single, 1),
        "speedup_presign_parts": round(boto / batch, 1),
        "target_speedup": TARGET,
        "presign_meets_target": boto / single >= TARGET,
        "presign_parts_meets_target": boto / batch >= TARGET,
        "identical": not mismatches,
        "urls_compared": compared,
        "botocore": botocore.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
