"""The upload-plane client: the API over httpx (async, with retries), the upload and download
engines, and a blocking facade for scripts. The server never imports this package; uploading and
downloading need the ``client`` extra (``awscrt`` for CRC64NVME, ``rich`` for progress bars)."""

from .api import Api, ApiError, Retry
from .sync import Client

__all__ = ["Api", "ApiError", "Client", "Retry"]
