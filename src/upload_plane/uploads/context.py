"""What every upload step needs, made once per application (the CLI and the reaper make their own)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..db import Database
from ..settings import Settings
from ..storage import Storage


class ClaimWaiters:
    """Wakes the requests of this process that wait for a claim to end, as soon as it ends.

    Requests waiting on a claim held by another replica still poll (with backoff); those waiting on
    one held here are woken by ``ended`` instead of the next poll.
    """

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait(self, upload_id: str, at_most: float) -> None:
        event, waiting = self._events.get(upload_id, (asyncio.Event(), 0))
        self._events[upload_id] = (event, waiting + 1)
        try:
            async with asyncio.timeout(at_most):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            current = self._events.get(upload_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[upload_id]
                else:
                    self._events[upload_id] = (event, current[1] - 1)

    def ended(self, upload_id: str) -> None:
        found = self._events.pop(upload_id, None)
        if found is not None:
            found[0].set()


@dataclass(frozen=True, slots=True)
class Uploads:
    db: Database
    storage: Storage
    settings: Settings
    waiters: ClaimWaiters = field(default_factory=ClaimWaiters)
