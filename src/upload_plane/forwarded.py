"""Who the client is when the service runs behind a proxy: the connection's peer, unless that peer
is a configured proxy (``UPLOAD_PLANE_TRUSTED_PROXIES``), in which case ``X-Forwarded-For`` names it.

Anyone can send ``X-Forwarded-For``, so it is believed only from the proxies named, and only as far
as it was written by them: the list is read from the right (the hop nearest to us) and the first
address that is not itself a trusted proxy is the client. The login limits count per client
address and the audit trail records it, so a header believed from anyone would let a client pose
as any address. ``X-Forwarded-Proto`` (``http`` or ``https``) from a trusted proxy gives the scheme
the browser used, which the same-origin checks compare ``Origin`` with.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from .settings import proxy_networks


class TrustedProxies:
    def __init__(self, proxies: tuple[str, ...]) -> None:
        self.networks = proxy_networks(proxies)

    def _trusted(self, address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def resolve(self, scope: dict[str, Any]) -> dict[str, Any]:
        """``scope`` with the client (and scheme) a trusted proxy reported; as it is otherwise."""
        if not self.networks or not scope.get("client"):
            return scope
        peer = _address(scope["client"][0])
        if peer is None or not self._trusted(peer):
            return scope
        forwarded: list[str] = []
        proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded += [v.strip() for v in value.decode("latin-1").split(",")]
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[0].strip().lower()
        client = peer
        for entry in reversed(forwarded):
            hop = _address(entry)
            if hop is None:  # not written by a proxy of ours: believe nothing further left
                break
            client = hop
            if not self._trusted(hop):
                break
        changed = {**scope, "client": (str(client), 0)}
        if proto in ("http", "https"):
            changed["scheme"] = proto
        return changed


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None
