"""Named places where a test can make this process die on the spot (SIGKILL), to prove what a crash
at exactly that point leaves behind — e.g. between the store's CompleteMultipartUpload and the
database commit — or fail there with an unexpected exception (``raise``: a bug, answered 500 and
logged, to prove what such a failure leaves in the logs). Off unless ``UPLOAD_PLANE_FAILPOINTS``
names them: ``after_store_complete=kill`` always dies there, ``after_store_create=kill:0.1`` in one
pass of ten, ``after_start_row=raise`` always raises. A check is one dict lookup.
"""

from __future__ import annotations

import logging
import os
import random
import signal

log = logging.getLogger("upload_plane.failpoints")

_ARMED: dict[str, tuple[str, float]] = {}
_ACTIONS = ("kill", "raise")


class FailpointError(RuntimeError):
    """Raised by a failpoint armed with ``raise``: stands for any bug at that point."""


def arm(specs: tuple[str, ...]) -> None:
    """Arm the failpoints given as ``name=action`` or ``name=action:probability``, the action
    ``kill`` or ``raise`` (the application factory does, from the settings)."""
    armed: dict[str, tuple[str, float]] = {}
    for spec in specs:
        name, _, action = spec.partition("=")
        verb, _, chance = action.partition(":")
        if verb not in _ACTIONS:
            raise ValueError(f"unknown failpoint action in {spec!r} (kill or raise)")
        armed[name] = (verb, float(chance) if chance else 1.0)
    if armed:
        log.warning("failpoints armed (this process will die or fail there): %s", armed)
    _ARMED.clear()
    _ARMED.update(armed)


def hit(name: str) -> None:
    armed = _ARMED.get(name)
    if armed is None or random.random() >= armed[1]:  # noqa: S311 - a test's dice, not a secret
        return
    if armed[0] == "raise":
        raise FailpointError(f"failpoint {name}")
    os.kill(os.getpid(), signal.SIGKILL)
