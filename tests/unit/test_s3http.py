"""Retries of the store calls on the hot path (``s3http.py``) against a store that takes each request
and dies before answering: a request safe to send twice is sent again; CreateMultipartUpload is not
(each one would open another upload), and says that its outcome is unknown."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.services import free_port
from upload_plane.errors import StorageOutcomeUnknown, StorageUnavailable
from upload_plane.s3http import ATTEMPTS, S3Http, StoreError
from upload_plane.signing import Presigner


class FakeStore:
    """Accepts connections and reads each request's head; then closes without a word (``answer``
    empty) or sends ``answer``. Counts the requests."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                self.requests += 1
                if self.answer:
                    conn.sendall(self.answer)


@pytest.fixture
def dying_store() -> Iterator[FakeStore]:
    store = FakeStore()
    yield store
    store.listener.close()


_ERROR = b"<Error><Code>InternalError</Code><Message>try again</Message></Error>"


@pytest.fixture
def failing_store() -> Iterator[FakeStore]:
    """Answers every request with 500 InternalError, as a store may after doing the work."""
    head = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n"  # it closes each connection after one answer, and says so
    )
    store = FakeStore(head % len(_ERROR) + _ERROR)
    yield store
    store.listener.close()


def s3http(port: int) -> S3Http:
    return S3Http(Presigner(f"http://127.0.0.1:{port}", "evidence", "us-east-1", "key-id", "secret"))


def call(port: int, what: str) -> None:
    async def run() -> None:
        client = s3http(port)
        try:
            if what == "create":
                await client.create_multipart("cases/c/logs/l/f/a.bin", {})
            else:
                await client.list_parts_page("cases/c/logs/l/f/a.bin", "upload-1", 0)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_create_whose_answer_was_lost_is_not_sent_again(dying_store: FakeStore) -> None:
    with pytest.raises(StorageOutcomeUnknown):
        call(dying_store.port, "create")
    assert dying_store.requests == 1


def test_a_read_whose_answer_was_lost_is_sent_again(dying_store: FakeStore) -> None:
    with pytest.raises(StorageUnavailable) as caught:
        call(dying_store.port, "list parts")
    assert not isinstance(caught.value, StorageOutcomeUnknown)
    assert dying_store.requests >= ATTEMPTS  # (aiohttp itself sends a GET twice on a dropped connection)


def test_a_create_that_reached_nothing_is_an_outage_not_an_unknown() -> None:
    with pytest.raises(StorageUnavailable) as caught:
        call(free_port(), "create")  # nobody listens: the connection is refused, every time
    assert not isinstance(caught.value, StorageOutcomeUnknown)


def test_a_create_answered_500_is_not_sent_again(failing_store: FakeStore) -> None:
    """A 500 can come after the store made the upload: sending it again would open another, and
    neither would be recorded. The outcome is unknown, and the create was sent once."""
    with pytest.raises(StorageOutcomeUnknown):
        call(failing_store.port, "create")
    assert failing_store.requests == 1


def test_a_read_answered_500_is_sent_again(failing_store: FakeStore) -> None:
    with pytest.raises(StoreError) as caught:  # the gateway makes it StorageUnavailable
        call(failing_store.port, "list parts")
    assert caught.value.status == 500
    assert failing_store.requests == ATTEMPTS
