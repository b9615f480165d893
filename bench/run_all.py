"""Run every benchmark in bench/ one after another and show what each printed.

Discovers ``bench/*.py`` except this file and files starting with ``_`` (helpers), runs each with
the same interpreter in its own process, and exits 1 if any of them failed.

    .venv/bin/python bench/run_all.py [NAME ...]   # e.g. run_all.py presign sign_10k
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT_SECONDS = 30 * 60


def discover(names: list[str]) -> list[Path]:
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if names:
        wanted = {n.removesuffix(".py") for n in names}
        unknown = wanted - {p.stem for p in scripts}
        if unknown:
            raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))}")
        scripts = [p for p in scripts if p.stem in wanted]
    return scripts


def main() -> int:
    failed: list[str] = []
    summary: list[tuple[str, str, float]] = []
    for script in discover(sys.argv[1:]):
        print(f"==> {script.name}", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.run(  # output streams straight through
                [sys.executable, str(script)], cwd=HERE.parent, timeout=TIMEOUT_SECONDS, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"{script.name} timed out after {TIMEOUT_SECONDS} s", flush=True)
        elapsed = time.monotonic() - start
        verdict = "ok" if code == 0 else f"FAILED (exit {code})"
        if code != 0:
            failed.append(script.name)
        summary.append((script.name, verdict, elapsed))
        print(flush=True)
    print("==> summary")
    for name, verdict, elapsed in summary:
        print(f"{name:<28}{verdict:<20}{elapsed:>7.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
