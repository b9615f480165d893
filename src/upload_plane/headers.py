"""Headers on every response, errors included (added once, by ``observe.RequestObserver``, to
whatever answers: a handler, the error mapping, a middleware's refusal, the Uppy fast path).

The Content-Security-Policy is one for every page the service serves (the web demo, the upload-link
page, the API docs) and harmless on everything else: scripts and styles only from this origin (no
inline script, no inline style, no ``eval``), WebAssembly allowed to compile (``hash-wasm``'s
SHA-256 in the web demo's Web Worker), connections to this origin and to the store the browser
sends parts to, images from both (previews are presigned GETs of the store), no plugins, no
framing, no ``<base>``, forms only to this origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .settings import Settings

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def content_security_policy(settings: Settings) -> str:
    store = urlsplit(settings.presign_endpoint_url)
    origin = [f"{store.scheme}://{store.netloc}"] if store.scheme and store.netloc else []
    connect = ["'self'", *origin]
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "style-src 'self'",
            f"img-src {' '.join(connect)} data: blob:",  # previews are presigned GETs of the store
            "font-src 'self' data:",
            f"connect-src {' '.join(connect)}",
            "worker-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def response_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    """Every header every response carries, as ASGI header pairs (built once per application)."""
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy(settings)}
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]
