"""A password reset racing with sign-ins on MariaDB: no sign-in made with the old password outlives
the reset. Each login verifies the password (argon2id, tens of milliseconds, outside any lock) and
then opens its sign-in; a reset that lands in between must either see that sign-in and revoke it,
or make it fail. The user's row is locked while a sign-in is opened, so one of the two happens."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.api.helpers import admin, at_production_cost, new_account, sql_rows
from tests.conftest import Backend
from tests.real.conftest import Counted

pytestmark = pytest.mark.real

LOGINS = 16


async def _race(
    backend: Backend, other: Backend, name: str, password: str, user_id: str, new_password: str
) -> list[int]:
    """Logins on ``backend``; the reset on ``other``, a second replica (on the same replica it
    would wait for its turn in the same password-hashing pool, behind the logins)."""
    async with httpx.AsyncClient(base_url=f"{backend.base_url}/api/v1", timeout=60) as http:

        async def login() -> int:
            body = {"username": name, "password": password}
            return (await http.post("/auth/login", json=body)).status_code

        logins = [asyncio.create_task(login()) for _ in range(LOGINS)]
        done, _ = await asyncio.wait(logins, return_when=asyncio.FIRST_COMPLETED)
        assert all(t.result() == 200 for t in done)  # the old password worked until now
        with admin(other) as adm:  # the reset, while the other logins are being verified
            reset = await asyncio.to_thread(
                adm.put, f"/users/{user_id}/password", json={"password": new_password}
            )
        assert reset.status_code == 204, reset.text
        return [await t for t in logins]


@pytest.mark.parametrize("round_", range(3))
def test_no_sign_in_with_the_old_password_outlives_a_reset(
    real: Backend, counted: Counted, round_: int
) -> None:
    name, password = new_account(real)
    at_production_cost(real, name, password)  # the window this race needs is the hash's time
    with admin(real) as adm:
        user_id = next(
            u["id"] for u in adm.get("/users", params={"limit": 500}).json()["items"] if u["username"] == name
        )
    new_password = f"brand-new-password-{round_}"
    statuses = asyncio.run(_race(real, counted.backend, name, password, user_id, new_password))
    assert set(statuses) <= {200, 401}, statuses
    alive = sql_rows(
        real.settings,
        "SELECT COUNT(*) FROM auth_sessions WHERE user_id = %s AND revoked_at IS NULL",
        user_id,
    )
    print(f"round {round_}: {statuses.count(200)} logins signed in, {statuses.count(401)} refused")
    assert alive == [(0,)], f"sign-ins made with the old password outlived the reset: {alive}"
