"""Named places where a test can make this process die on the spot (SIGKILL), to prove what a crash
at exactly that point leaves behind — e.g. between the store's CompleteMultipartUpload and the
database commit. Off unless ``UPLOAD_PLANE_FAILPOINTS`` names them: ``after_store_complete=kill``
always dies there, ``after_store_create=kill:0.1`` in one pass of ten. A check is one dict lookup.
"""

from __future__ import annotations

import logging
import os
import random
import signal

log = logging.getLogger("upload_plane.failpoints")

_ARMED: dict[str, float] = {}


def arm(specs: tuple[str, ...]) -> None:
    """Arm the failpoints given as ``name=kill`` or ``name=kill:probability`` (the application
    factory does, from the settings)."""
    armed: dict[str, float] = {}
    for spec in specs:
        name, _, action = spec.partition("=")
        verb, _, chance = action.partition(":")
        if verb != "kill":
            raise ValueError(f"unknown failpoint action in {spec!r} (only kill)")
        armed[name] = float(chance) if chance else 1.0
    if armed:
        log.warning("failpoints armed (this process will kill itself there): %s", armed)
    _ARMED.clear()
    _ARMED.update(armed)


def hit(name: str) -> None:
    chance = _ARMED.get(name)
    if chance is not None and random.random() < chance:  # noqa: S311 - a test's dice, not a secret
        os.kill(os.getpid(), signal.SIGKILL)
