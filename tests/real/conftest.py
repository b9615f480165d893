"""The real tier's own API servers: MariaDB + MinIO, a database of their own.

``real`` is the plain server. ``counted`` is a second server on the same database and bucket (as a
second replica would be) whose store calls pass through a ``CountingStorage``, so tests count what
really reached MinIO.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Backend, real_backend, serve
from tests.fakes import CountingStorage
from upload_plane.storage import S3Storage


@pytest.fixture(scope="session")
def real(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with real_backend(request, "real_tier") as b:
        yield b


@dataclass(frozen=True)
class Counted:
    backend: Backend
    storage: CountingStorage


@pytest.fixture(scope="session")
def counted(real: Backend) -> Iterator[Counted]:
    storage = CountingStorage(S3Storage(real.settings))
    with serve(real.settings, storage) as url:
        yield Counted(Backend("real", real.settings, url), storage)
