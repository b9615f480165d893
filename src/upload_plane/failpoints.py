"""Named places where a test can make this process die on the spot (SIGKILL), to prove what a crash
at exactly that point leaves behind — e.g. between the store's CompleteMultipartUpload and the
database commit. Off unless ``UPLOAD_PLANE_FAILPOINTS`` names them (``after_store_complete=kill``);
a check is one set lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("upload_plane.failpoints")

_ARMED: frozenset[str] = frozenset()


def arm(names: tuple[str, ...]) -> None:
    """Arm the failpoints ``name=kill`` given (the application factory does, from the settings)."""
    global _ARMED
    armed = {spec.split("=", 1)[0] for spec in names if spec.endswith("=kill")}
    if armed:
        log.warning("failpoints armed (this process will kill itself there): %s", ", ".join(sorted(armed)))
    _ARMED = frozenset(armed)


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
