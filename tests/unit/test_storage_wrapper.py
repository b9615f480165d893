"""``StorageWrapper`` is held to the ``Storage`` protocol: every method of the protocol is the
wrapper's own, with the same signature, and hands the call to the wrapped store unchanged; a call to
the store goes through the ``around`` hook under its method's name. So a method added to the protocol
and forgotten by the wrapper fails here, not as an uncounted, untimed call in production. The
wrappers built on it (metrics, the tests' counting fake) implement hooks only."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tests.fakes import CountingStorage, MemoryStorage
from upload_plane.errors import StoredUploadGone
from upload_plane.metrics import MeteredStorage, Metrics
from upload_plane.storage import S3Storage, Storage, StorageWrapper

T = TypeVar("T")
pytestmark = pytest.mark.anyio


def protocol_methods() -> dict[str, Any]:
    return {name: fn for name, fn in vars(Storage).items() if callable(fn) and not name.startswith("_")}


def wrapper_methods(cls: type) -> set[str]:
    return {name for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")}


class Inner:
    """A store that records each call it gets, by name and arguments, and answers a marker."""

    def __init__(self) -> None:
        self.got: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(getattr(Storage, name)):

            async def async_call(*args: Any, **kwargs: Any) -> Any:
                self.got.append((name, args, kwargs))
                return (name, "answer")

            return async_call

        def sync_call(*args: Any, **kwargs: Any) -> Any:
            self.got.append((name, args, kwargs))
            return [(name, "answer")]  # presign_parts answers a list; the others anything

        return sync_call


class Recording(StorageWrapper):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.around_calls: list[str] = []
        self.presigned_calls: list[tuple[str, int]] = []

    async def around(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        self.around_calls.append(operation)
        return await call()

    def presigned(self, kind: str, count: int) -> None:
        self.presigned_calls.append((kind, count))


def test_every_protocol_method_is_the_wrappers_own_with_the_same_signature() -> None:
    methods = protocol_methods()
    assert {"ping", "complete_multipart", "presign_parts", "aclose"} <= set(methods)  # the scan works
    assert set(methods) <= wrapper_methods(StorageWrapper), set(methods) - wrapper_methods(StorageWrapper)
    for name, fn in methods.items():
        own = getattr(StorageWrapper, name)
        assert inspect.iscoroutinefunction(own) == inspect.iscoroutinefunction(fn), name
        assert inspect.signature(own) == inspect.signature(fn), name


@pytest.mark.parametrize("name", sorted(protocol_methods()))
async def test_each_call_reaches_the_inner_store_unchanged_through_the_hook(name: str) -> None:
    inner = Inner()
    wrapper = Recording(inner)
    signature = inspect.signature(getattr(Storage, name))
    params = list(signature.parameters.values())[1:]  # without self
    args = tuple(f"{name}:{p.name}" for p in params if p.kind != p.KEYWORD_ONLY)
    kwargs = {p.name: f"{name}:{p.name}" for p in params if p.kind == p.KEYWORD_ONLY}
    method = getattr(wrapper, name)
    answer = await method(*args, **kwargs) if inspect.iscoroutinefunction(method) else method(*args, **kwargs)
    assert inner.got == [(name, args, kwargs)]
    if signature.return_annotation == "None":
        assert answer is None
    else:  # the inner store's answer, passed on
        assert answer in ((name, "answer"), [(name, "answer")])
    is_store_call = inspect.iscoroutinefunction(method) and name != "aclose"
    assert wrapper.around_calls == ([name] if is_store_call else [])
    if name.startswith("presign_"):
        kind = {
            "presign_parts": "part",
            "presign_puts": "put",
            "presign_get": "download",
            "presign_post": "form",
        }[name]
        assert wrapper.presigned_calls == [(kind, 1)]
    else:
        assert wrapper.presigned_calls == []


def test_the_wrappers_implement_hooks_not_methods() -> None:
    methods = set(protocol_methods())
    assert wrapper_methods(MeteredStorage) & methods == set()
    # The counting fake also records which upload an abort was for (the hook sees no arguments).
    assert wrapper_methods(CountingStorage) & methods == {"abort_multipart"}


def test_the_wrapper_the_gateway_and_the_fake_are_storages() -> None:
    """Structurally: each has every protocol method (mypy checks the signatures where they are used)."""
    for cls in (StorageWrapper, MeteredStorage, CountingStorage, S3Storage, MemoryStorage):
        missing = [name for name in protocol_methods() if not callable(getattr(cls, name, None))]
        assert not missing, (cls.__name__, missing)


async def test_metered_storage_labels_store_calls_and_counts_presigned_urls() -> None:
    metrics = Metrics()
    metered: Storage = MeteredStorage(MemoryStorage(), metrics)
    await metered.ping()
    upload_id = await metered.create_multipart("k", "application/octet-stream")
    await metered.part_checksum("k", 1)
    with pytest.raises(StoredUploadGone):
        await metered.list_parts("k", "nope")
    metered.presign_get("k", "attachment", 60)
    assert upload_id.startswith("mem-")

    def seen(operation: str, outcome: str) -> float:
        value = metrics.registry.get_sample_value(
            "upload_plane_store_call_duration_seconds_count", {"operation": operation, "outcome": outcome}
        )
        return value or 0.0

    assert seen("head_bucket", "ok") == 1
    assert seen("create_multipart", "ok") == 1
    assert seen("head_object_part", "ok") == 1
    assert (seen("list_parts", StoredUploadGone.code), seen("list_parts", "ok")) == (1, 0)
    downloads = metrics.registry.get_sample_value("upload_plane_presigned_urls_total", {"kind": "download"})
    assert downloads == 1


async def test_counting_storage_counts_by_method_and_records_aborts() -> None:
    counting = CountingStorage(MemoryStorage())
    upload_id = await counting.create_multipart("k", "application/octet-stream")
    await counting.abort_multipart("k", upload_id)
    await counting.abort_multipart("k", upload_id)
    assert (counting.count("create_multipart"), counting.count("abort_multipart")) == (1, 2)
    assert counting.aborted == {upload_id: 2}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
