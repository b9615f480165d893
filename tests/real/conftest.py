"""The real tier's own API server: MariaDB + MinIO, a database of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Backend, real_backend


@pytest.fixture(scope="session")
def real(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with real_backend(request, "real_tier") as b:
        yield b
