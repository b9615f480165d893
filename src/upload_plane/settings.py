"""The one settings object, read from ``UPLOAD_PLANE_*`` environment variables and passed in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB

DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"
DEFAULT_PASSWORD_HASH_COST = "m=65536,t=3,p=4"  # argon2id: RFC 9106's second recommendation


class SettingsError(ValueError):
    """The environment does not describe a configuration that may start."""


def proxy_networks(proxies: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    """``UPLOAD_PLANE_TRUSTED_PROXIES`` as networks (an address is a network of one)."""
    return tuple(ip_network(p, strict=False) for p in proxies)


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """What the store promises about a completed file's bytes (``UPLOAD_PLANE_OBJECT_LOCK``):

    - ``off``: nothing beyond what the service itself guarantees (no URL it hands out can write a
      completed file's key; downloads name the recorded version where the bucket keeps versions);
    - ``legal-hold``: every completed file's version is under a legal hold: nobody can delete or
      change it until the hold is lifted (an admin's delete lifts it, audited);
    - ``governance:N``: retained N days in governance mode: only credentials allowed to bypass
      governance can delete it before then (an admin's delete does, audited);
    - ``compliance:N``: retained N days in compliance mode: nobody, the store's root included, can
      delete it before then (an admin's delete is refused).

    Any mode but ``off`` needs a bucket created with Object Lock (``upload-plane init-storage``)."""

    mode: str = "off"  # off | legal-hold | governance | compliance
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> ObjectLock:
        return _parse_lock(text)

    @property
    def on(self) -> bool:
        return self.mode != "off"


@lru_cache(maxsize=16)
def _parse_lock(text: str) -> ObjectLock:
    """``ObjectLock.parse``, once per value (it is asked at every completion)."""
    mode, _, days = text.strip().lower().partition(":")
    if mode in ("off", "legal-hold") and not days:
        return ObjectLock(mode)
    if mode in ("governance", "compliance") and days.isdigit() and 1 <= int(days) <= 36500:
        return ObjectLock(mode, int(days))
    raise SettingsError(
        "UPLOAD_PLANE_OBJECT_LOCK must be off, legal-hold, governance:DAYS or compliance:DAYS"
    )


@lru_cache(maxsize=16)
def argon2_cost(text: str) -> tuple[int, int, int]:
    """``UPLOAD_PLANE_PASSWORD_HASH_COST`` (``m=KiB,t=PASSES,p=LANES``) as (memory, passes, lanes)."""
    items = [item.strip().partition("=") for item in text.split(",")]
    values = {name: int(value) for name, _, value in items if name in ("m", "t", "p") and value.isdigit()}
    ok = len(items) == 3 and values.keys() == {"m", "t", "p"} and values["t"] >= 1 and 1 <= values["p"] <= 64
    if ok and 8 * values["p"] <= values["m"] <= 4 * 1024 * 1024:
        return values["m"], values["t"], values["p"]
    raise SettingsError(
        "UPLOAD_PLANE_PASSWORD_HASH_COST must be m=KIB,t=PASSES,p=LANES (e.g. m=65536,t=3,p=4), "
        "with at least 8 KiB per lane and at most 4 GiB"
    )


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(
        default="sqlite+aiosqlite:///./.data/upload-plane.db", repr=False
    )  # has a password
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    s3_public_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_bucket: str = "evidence"
    s3_access_key_id: str = "testing"
    s3_secret_access_key: str = field(default="testing", repr=False)
    jwt_secret: str = field(default=DEV_JWT_SECRET, repr=False)
    access_token_ttl: int = 3600
    session_ttl: int = 12 * 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    personal_token_max_days: int = 366
    cookie_secure: bool | None = None  # default: on in production
    login_attempts_per_address: int = 100
    # Failed sign-ins for one account from one client address (then that address waits), and for
    # one account from everywhere (the ceiling that stops a spread-out guessing attack).
    login_failures_per_account_address: int = 10
    login_failures_per_account: int = 100
    login_window: int = 300
    # Proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are believed;
    # from anyone else those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    upload_start_rate: int = 1200  # per user per minute
    password_hash_concurrency: int = 2
    # argon2id's memory (KiB), passes and lanes for new password hashes: RFC 9106's second
    # recommendation. A hash keeps the parameters it was made with, so changing them locks nobody out.
    password_hash_cost: str = DEFAULT_PASSWORD_HASH_COST
    reaper_interval: int = 0  # seconds between in-process reaper runs; 0: off (run `upload-plane reap`)
    reaper_batch: int = 200
    failpoints: tuple[str, ...] = ()  # tests only: "after_store_complete=kill" (failpoints.py)
    part_size: int = 8 * MIB
    part_url_ttl: int = 15 * 60
    download_url_ttl: int = 5 * 60
    upload_ttl: int = 24 * 3600
    store_upload_retention: int = 24 * 3600
    max_file_size: int = TIB
    allowed_content_types: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_request_body: int = 1 * MIB
    upload_link_max_ttl: int = 30 * 24 * 3600
    # How long a replica trusts an authorisation it checked for Uppy's part-signing route: the
    # latency of a revocation (link revoked, sign-out, user disabled, role removed, upload ended).
    authorization_cache_ttl: int = 2
    production: bool = False
    db_pool_size: int = 20  # the one pool's connections per process (no overflow: db.py)
    db_pool_timeout: int = 10
    metrics_token: str = field(default="", repr=False)  # when set, GET /metrics needs it as a bearer
    object_lock: str = "off"  # see ObjectLock
    metrics_public: bool = False  # production: GET /metrics without a token only when this says so
    # -- after the upload (processing/): verify, identify, preview ---------------------------------
    # redis://host:6379/0: jobs go onto this queue for `upload-plane worker` processes. Empty: the
    # API runs the same jobs in-process (the embedded default).
    queue_url: str = field(default="", repr=False)  # may hold a password
    processing: str = "auto"  # auto: as above; off: requests wait in the outbox (nothing relayed)
    processing_concurrency: int = 4  # jobs at once per worker (or in-process)
    processing_timeout: int = 3600  # seconds one job may run (hashing 1 TiB at 600 MB/s takes ~30 min)
    processing_retries: int = 5  # attempts of a job that fails for a passing reason (store, database)
    processing_heartbeat: int = 60  # a job silent this long is taken as dead and re-delivered
    relay_interval: int = 1  # seconds between relay runs (outbox -> queue) of each worker
    decoder_max_pixels: int = 100_000_000  # larger images are refused (decompression bombs)
    decoder_timeout: int = 60  # seconds of wall time (and CPU) one file's decoder may take
    decoder_memory: int = 1024 * MIB  # address space of one decoder process
    preview_size: int = 512  # the longest side of a thumbnail, in pixels
    refuse_detected_types: bool = False  # ALLOWED_CONTENT_TYPES also applies to the detected type

    @property
    def presign_endpoint_url(self) -> str:
        return self.s3_public_endpoint_url or self.s3_endpoint_url

    @property
    def lock(self) -> ObjectLock:
        return ObjectLock.parse(self.object_lock)

    @property
    def secure_cookies(self) -> bool:
        return self.production if self.cookie_secure is None else self.cookie_secure

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def check(self) -> list[str]:
        """Refuse what must not start; return warnings for what may start but deserves a word."""
        if self.production and (not self.jwt_secret or self.jwt_secret == DEV_JWT_SECRET):
            raise SettingsError("UPLOAD_PLANE_JWT_SECRET must be set to a non-default secret")
        if len(self.jwt_secret) < 32:
            raise SettingsError("UPLOAD_PLANE_JWT_SECRET must be at least 32 characters")
        if self.production and self.s3_secret_access_key in ("", "testing", "minioadmin"):
            raise SettingsError("UPLOAD_PLANE_S3_SECRET_ACCESS_KEY must be set to a real secret")
        if not 5 * MIB <= self.part_size <= 5 * GIB:
            raise SettingsError("UPLOAD_PLANE_PART_SIZE must be within 5 MiB..5 GiB")
        if not 1 <= self.part_url_ttl <= 7 * 24 * 3600:
            raise SettingsError("UPLOAD_PLANE_PART_URL_TTL must be within 1 s..7 days")
        self.lock  # noqa: B018 - parsed to refuse a wrong value at start
        argon2_cost(self.password_hash_cost)
        if self.production and not self.metrics_token and not self.metrics_public:
            raise SettingsError(
                "UPLOAD_PLANE_METRICS_TOKEN must be set (GET /metrics then needs it as a bearer "
                "token), or UPLOAD_PLANE_METRICS_PUBLIC=true to serve /metrics to anyone"
            )
        try:
            proxy_networks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(f"UPLOAD_PLANE_TRUSTED_PROXIES: {exc}") from exc
        if self.processing not in ("auto", "off"):
            raise SettingsError("UPLOAD_PLANE_PROCESSING must be auto or off")
        warnings = []
        memory, passes, _ = argon2_cost(self.password_hash_cost)
        if self.production and (memory < 19 * 1024 or memory * passes < 64 * 1024):
            warnings.append(
                f"UPLOAD_PLANE_PASSWORD_HASH_COST ({self.password_hash_cost}) is below OWASP's least "
                "argon2id cost (m=19456,t=2): stolen password hashes would be cheap to guess"
            )
        if not self.metrics_token:
            warnings.append(
                "GET /metrics is open to anyone: no UPLOAD_PLANE_METRICS_TOKEN is set"
                + (" (UPLOAD_PLANE_METRICS_PUBLIC=true)" if self.metrics_public else "")
            )
        if self.upload_ttl > self.store_upload_retention:
            warnings.append(
                f"UPLOAD_PLANE_UPLOAD_TTL ({self.upload_ttl}s) exceeds how long the store keeps "
                f"unfinished multipart uploads ({self.store_upload_retention}s, MinIO's "
                "MINIO_API_STALE_UPLOADS_EXPIRY): resumes after that point will fail"
            )
        return warnings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(f"UPLOAD_PLANE_{name}")

        values: dict[str, object] = {}
        for f in fields(cls):
            raw = get(f.name.upper())
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool) or f.name == "cookie_secure":
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise SettingsError(f"UPLOAD_PLANE_{f.name.upper()} must be an integer") from exc
            elif isinstance(default, tuple):
                values[f.name] = tuple(v.strip() for v in raw.split(",") if v.strip())
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
