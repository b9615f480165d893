"""Database and store errors become the right domain errors, and domain errors the right statuses."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from sqlalchemy.exc import DataError, IntegrityError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from upload_plane import errors as e
from upload_plane.db import translate_db_error
from upload_plane.problems import STATUS, status_of
from upload_plane.storage import translate_s3_error


class Orig(Exception):
    """What a MySQL driver raises: ``args == (errno, message)``."""


def mysql(cls: type, errno: int, message: str = "x") -> Exception:
    return cls("SELECT 1", {}, Orig(errno, message))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (mysql(OperationalError, 2013, "Lost connection"), e.DatabaseUnavailable),
        (mysql(OperationalError, 2003, "Can't connect"), e.DatabaseUnavailable),
        (mysql(OperationalError, 1045, "Access denied"), e.DatabaseUnavailable),
        (mysql(OperationalError, 4151, "Account locked"), e.DatabaseUnavailable),
        (mysql(OperationalError, 1213, "Deadlock"), e.DatabaseUnavailable),
        (mysql(OperationalError, 1205, "Lock wait timeout"), e.DatabaseUnavailable),
        (mysql(OperationalError, 1927, "Connection was killed"), e.DatabaseUnavailable),
        (PoolTimeout("QueuePool limit reached"), e.DatabaseUnavailable),
        (OperationalError("SELECT 1", {}, Orig("database is locked")), e.DatabaseUnavailable),  # SQLite
        (mysql(DataError, 1366, "Incorrect string value"), e.ValidationFailed),
        (mysql(DataError, 1406, "Data too long"), e.ValidationFailed),
        (mysql(OperationalError, 1267, "Illegal mix of collations"), e.ValidationFailed),
        (mysql(IntegrityError, 1062, "Duplicate entry"), e.Conflict),
        (mysql(OperationalError, 1644, "refused by trigger"), e.DatabaseFailed),
        (mysql(ProgrammingError, 1146, "Table doesn't exist"), e.DatabaseFailed),
        (mysql(InternalError, 1815, "Internal error"), e.DatabaseFailed),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(v)[:40],
)
def test_database_errors_are_classified(exc: Exception, expected: type[e.DomainError]) -> None:
    translated = translate_db_error(exc)  # type: ignore[arg-type]
    assert type(translated) is expected


def test_only_an_unreachable_database_is_503() -> None:
    assert status_of(e.DatabaseUnavailable()) == 503
    assert status_of(e.ValidationFailed()) == 400
    assert status_of(e.DatabaseFailed()) == 500
    assert status_of(e.Conflict()) == 409


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("code", "status", "gone", "expected"),
    [
        ("NoSuchUpload", 404, {"NoSuchUpload"}, e.StoredUploadGone),
        ("NoSuchUpload", 404, set(), e.StorageRejected),  # not a "gone" answer for this operation
        ("NoSuchBucket", 404, {"NoSuchUpload"}, e.StorageUnavailable),
        ("InvalidPart", 400, {"NoSuchUpload"}, e.PartsChanged),
        ("InvalidPartOrder", 400, set(), e.PartsChanged),
        ("EntityTooSmall", 400, set(), e.PartsChanged),
        ("SlowDown", 503, set(), e.StorageUnavailable),
        ("InternalError", 500, set(), e.StorageUnavailable),
        ("NotImplemented", 501, set(), e.StorageRejected),
        ("AccessDenied", 403, set(), e.StorageRejected),
    ],
)
def test_store_errors_are_classified(code: str, status: int, gone: set[str], expected: type) -> None:
    assert type(translate_s3_error(client_error(code, status), frozenset(gone))) is expected


def test_parts_changed_is_a_409_and_every_domain_error_has_a_status() -> None:
    assert status_of(e.PartsChanged()) == 409
    for cls in e.DomainError.__subclasses__():
        assert cls in STATUS or any(base in STATUS for base in cls.__mro__), cls
