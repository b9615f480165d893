"""Send N logins at once from one asyncio client (half with a wrong password); print the status
counts as one JSON line.

    python -m tests.tools.login_burst BASE_URL USERNAME PASSWORD N
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import httpx


async def burst(base: str, username: str, password: str, n: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(i: int) -> int:
            body = {"username": username, "password": password if i % 2 else "wrong-password"}
            return (await client.post("/api/v1/auth/login", json=body)).status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(n))))


def main() -> None:
    base, username, password, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    counts = asyncio.run(burst(base, username, password, n))
    print(json.dumps({str(status): count for status, count in sorted(counts.items())}))


if __name__ == "__main__":
    main()
