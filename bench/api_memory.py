"""The API process's memory while a 4 GiB file flows through the CLI, vs idle.

SPEC §9: the API's memory does not grow with file size (target: peak RSS within +30 MB of idle while
4 GiB flow). The API is ``upload-plane serve`` (one process, one worker) on a private MariaDB and
MinIO; the CLI uploads a 4 GiB random file (8 MiB parts: 512 parts, signed in windows, completed
with ListParts over all of them). "Idle" is the API's RSS after a warm-up upload of a small file (so
its imports, pools and first-request allocations are counted as idle); the peak is the highest of
``VmRSS`` sampled every 20 ms during the upload and, if it rose during the upload, the process's
``VmHWM`` (the kernel's own high-water mark, which cannot miss a short spike; it already holds the
start-up peak, so it only counts when it moved). The CLI's own peak RSS is shown too.

    .venv/bin/python bench/api_memory.py [--size-mib 4096]

Prints a table and one JSON line (also written to bench/results/api_memory.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from _stack import peak_rss_kib, random_file, rss_kib, run_cli, services_missing, stack, write_result

MIB = 1024 * 1024
TARGET_GROWTH_MB = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=4096)
    args = parser.parse_args()
    missing = services_missing()
    if missing:
        print(f"api_memory: skipped, {missing}")
        print(json.dumps({"bench": "api_memory", "skipped": True}))
        return 0
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as s:
        small = random_file(Path(tmp) / "warm-up.bin", 20 * MIB)
        run_cli(s, "upload", str(small), "--log", s.log_id)  # warm-up
        big = random_file(Path(tmp) / "four-gib.bin", args.size_mib * MIB)
        idle = rss_kib(s.api_pid)
        hwm_before = peak_rss_kib(s.api_pid)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(rss_kib(s.api_pid))
                time.sleep(0.02)  # sampling interval

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run = run_cli(s, "upload", str(big), "--log", s.log_id, "--part-size", "8M")
            elapsed, cli_peak, out = run.seconds, run.peak_rss_kib, run.output
        finally:
            done.set()
            sampler.join()
        hwm_after = peak_rss_kib(s.api_pid)
        [result] = out["files"]
        assert result["size"] == args.size_mib * MIB and result["verified_by"] == "store", result

    peak = max(max(samples), hwm_after if hwm_after > hwm_before else 0)
    growth_mb = (peak - idle) * 1024 / 1e6
    ok = growth_mb <= TARGET_GROWTH_MB
    print(
        f"api_memory: {args.size_mib} MiB through the CLI ({result['parts_uploaded']} parts) "
        f"in {elapsed:.1f} s; target API peak <= idle + {TARGET_GROWTH_MB:.0f} MB"
    )
    print(f"{'process':<32}{'MiB':>10}")
    print(f"{'API idle (after warm-up)':<32}{idle / 1024:>10.1f}")
    print(f"{'API peak during the upload':<32}{peak / 1024:>10.1f}")
    print(f"{'API VmHWM before / after':<32}{hwm_before / 1024:>10.1f} / {hwm_after / 1024:.1f}")
    print(f"{'CLI peak (sampled VmRSS)':<32}{cli_peak / 1024:>10.1f}")
    print(f"API growth: {growth_mb:.1f} MB ({'ok' if ok else 'MISSED'})")
    write_result(
        "api_memory",
        {
            "bench": "api_memory",
            "size_mib": args.size_mib,
            "parts": result["parts_uploaded"],
            "seconds": round(elapsed, 2),
            "api_idle_mib": round(idle / 1024, 1),
            "api_peak_mib": round(peak / 1024, 1),
            "api_hwm_before_mib": round(hwm_before / 1024, 1),
            "api_hwm_after_mib": round(hwm_after / 1024, 1),
            "api_growth_mb": round(growth_mb, 1),
            "cli_peak_mib": round(cli_peak / 1024, 1),
            "target_growth_mb": TARGET_GROWTH_MB,
            "meets_target": ok,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
