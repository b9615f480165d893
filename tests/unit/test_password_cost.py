"""The cost of password hashes (``UPLOAD_PLANE_PASSWORD_HASH_COST``): RFC 9106's second
recommendation unless told otherwise, a hash keeps the cost it was made with, and a wrong or weak
setting is refused or named at start."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters

from upload_plane.auth import passwords
from upload_plane.settings import Settings, SettingsError

GOOD = {"jwt_secret": "a-real-secret-of-enough-length-0123456789", "s3_secret_access_key": "real-key-1234"}


def test_the_default_is_rfc_9106s_second_recommendation() -> None:
    params = extract_parameters(passwords.hash_password("correct horse", Settings().password_hash_cost))
    assert (params.memory_cost, params.time_cost, params.parallelism) == (64 * 1024, 3, 4)
    assert params.type.name == "ID"


def test_a_hash_is_made_at_the_configured_cost_and_verified_at_its_own() -> None:
    cheap = passwords.hash_password("correct horse", "m=1024,t=1,p=1")
    params = extract_parameters(cheap)
    assert (params.memory_cost, params.time_cost, params.parallelism) == (1024, 1, 1)
    # the setting changed since: the hash still verifies (nobody is locked out), a wrong one does not
    assert passwords.verify_password(cheap, "correct horse", "m=65536,t=3,p=4")
    assert not passwords.verify_password(cheap, "wrong horse", "m=65536,t=3,p=4")
    assert not passwords.verify_password(None, "correct horse", "m=1024,t=1,p=1")  # no such user


@pytest.mark.parametrize(
    "cost", ["", "m=65536,t=3", "m=64,t=1,p=16", "m=65536,t=0,p=4", "m=1024,t=1,p=1,x=2", "m=1k,t=1,p=1"]
)
def test_a_cost_that_is_not_one_is_refused_at_start(cost: str) -> None:
    with pytest.raises(SettingsError, match="PASSWORD_HASH_COST"):
        Settings(password_hash_cost=cost).check()


def test_production_names_a_cost_below_owasps_least() -> None:
    weak = Settings(production=True, metrics_public=True, password_hash_cost="m=1024,t=1,p=1", **GOOD)
    assert any("PASSWORD_HASH_COST" in w for w in weak.check())
    assert not any(
        "PASSWORD_HASH_COST" in w for w in Settings(production=True, metrics_public=True, **GOOD).check()
    )
