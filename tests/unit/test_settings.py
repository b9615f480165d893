"""Settings: read from UPLOAD_PLANE_* once, refused when unsafe for production."""

from __future__ import annotations

import pytest

from upload_plane.settings import DEV_JWT_SECRET, MIB, Settings, SettingsError

GOOD_SECRET = "a-real-secret-of-enough-length-0123456789"


def test_reads_typed_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "UPLOAD_PLANE_DATABASE_URL": "mysql+asyncmy://u:p@db:3306/x",
            "UPLOAD_PLANE_PART_SIZE": str(16 * MIB),
            "UPLOAD_PLANE_ALLOWED_CONTENT_TYPES": "video/*, image/jpeg,",
            "UPLOAD_PLANE_PRODUCTION": "true",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "mysql+asyncmy://u:p@db:3306/x"
    assert settings.part_size == 16 * MIB
    assert settings.allowed_content_types == ("video/*", "image/jpeg")
    assert settings.production is True
    assert settings.s3_bucket == "evidence"


def test_rejects_a_non_integer() -> None:
    with pytest.raises(SettingsError, match="PART_SIZE must be an integer"):
        Settings.from_env({"UPLOAD_PLANE_PART_SIZE": "8MiB"})


@pytest.mark.parametrize("secret", ["", DEV_JWT_SECRET])
def test_production_refuses_default_or_empty_jwt_secret(secret: str) -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        Settings(production=True, jwt_secret=secret, s3_secret_access_key="real-key-1234").check()


@pytest.mark.parametrize("key", ["", "testing", "minioadmin"])
def test_production_refuses_default_store_secret(key: str) -> None:
    with pytest.raises(SettingsError, match="S3_SECRET_ACCESS_KEY"):
        Settings(production=True, jwt_secret=GOOD_SECRET, s3_secret_access_key=key).check()


def test_production_starts_with_real_secrets() -> None:
    settings = Settings(
        production=True, jwt_secret=GOOD_SECRET, s3_secret_access_key="real-key-1234", metrics_token="m" * 24
    )
    assert not any("metrics" in w for w in settings.check())


def test_production_serves_metrics_to_anyone_only_when_told_and_says_so() -> None:
    secrets_ = {"jwt_secret": GOOD_SECRET, "s3_secret_access_key": "real-key-1234"}
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        Settings(production=True, **secrets_).check()
    warnings = Settings(production=True, metrics_public=True, **secrets_).check()
    assert any("/metrics is open to anyone" in w for w in warnings), warnings
    # dev (not production) starts without a token, and says so too
    assert any("/metrics is open to anyone" in w for w in Settings(**secrets_).check())


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert Settings(trusted_proxies=("10.0.0.0/8", "192.0.2.7", "::1")).check() is not None
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings(trusted_proxies=("proxy.internal",)).check()


def test_part_size_outside_s3_limits_is_refused() -> None:
    with pytest.raises(SettingsError, match="PART_SIZE"):
        Settings(part_size=4 * MIB).check()


def test_warns_when_uploads_outlive_the_store() -> None:
    warnings = Settings(upload_ttl=48 * 3600, store_upload_retention=24 * 3600, metrics_token="m").check()
    assert len(warnings) == 1
    assert "UPLOAD_TTL" in warnings[0]
    assert Settings(metrics_token="m").check() == []


def test_settings_never_show_secrets_in_their_repr() -> None:
    settings = Settings(
        database_url="mysql+asyncmy://app:db-password-123@db:3306/evidence",
        jwt_secret="jwt-secret-" + "x" * 40,
        s3_secret_access_key="s3-secret-456",
    )
    shown = repr(settings) + str(settings)
    for secret in ("db-password-123", "jwt-secret-", "s3-secret-456"):
        assert secret not in shown
    assert "s3_bucket='evidence'" in shown  # the rest is still there to read


def test_object_lock_modes_are_parsed_and_wrong_ones_refused_at_start() -> None:
    from upload_plane.settings import ObjectLock

    assert Settings().lock == ObjectLock("off") and not Settings().lock.on
    assert Settings(object_lock="legal-hold").lock == ObjectLock("legal-hold")
    assert Settings(object_lock="Governance:30").lock == ObjectLock("governance", 30)
    assert Settings(object_lock="compliance:3650").lock.on
    for wrong in ("on", "legal-hold:3", "governance", "compliance:0", "governance:x"):
        with pytest.raises(SettingsError, match="OBJECT_LOCK"):
            Settings(object_lock=wrong).check()
