"""The sandboxed inspection of one stored file: ``python -m upload_plane.processing.examine``.

Runs in a process of its own (``sandbox.py`` starts it) under limits it sets on itself before it
reads a byte: address space (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``), no core dumps; its parent
also kills it at a wall-clock deadline. So a decompression bomb, a file that makes a decoder loop
or a decoder crash fails this file's job only. It reads the object over a presigned URL with
ranged GETs (``RangedFile``), never all of it unless the decoder asks for all of it.

Request: ``url``, ``size``, ``max_pixels``, ``preview_size``, ``memory``, ``cpu``, ``preview_path``.
Run as ``--serve`` (what workers do), it is a fork server: the decoders are imported once and each
request is inspected in a forked child of its own (a fresh process for the limits: its CPU time
starts at zero), whose answer goes to the request's ``out`` file; without it, one request is read
from stdin and answered on stdout. Answer (JSON lines): first ``{"detected_type": ...}`` once the first
bytes are identified (libmagic, through python-magic), then ``{"media": {...}, "preview": bool}``
or ``{"error": ..., "kind": ...}`` (``too_large``, ``corrupt``, ``memory``).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import resource
import select
import subprocess
import sys
import warnings
from collections import OrderedDict
from datetime import datetime
from typing import IO, Any, cast
from urllib.parse import urlsplit

BLOCK = 1024 * 1024
HEAD = 64 * 1024
IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/gif",
        "image/bmp",
        "image/tiff",
    }
)


class Refused(Exception):
    """The file is not decoded, by rule (too many pixels): ``kind`` says why."""

    def __init__(self, message: str, kind: str = "too_large") -> None:
        super().__init__(message)
        self.kind = kind


class RangedFile(io.RawIOBase):
    """A seekable, read-only file over a presigned GET URL: blocks of ``BLOCK`` bytes fetched with
    ``Range`` requests on one kept-alive connection, the last few kept."""

    def __init__(self, url: str, size: int, keep: int = 16) -> None:
        super().__init__()
        parts = urlsplit(url)
        self._netloc, self._https = parts.netloc, parts.scheme == "https"
        self._target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        self.size, self.pos, self.keep = size, 0, keep
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._conn: http.client.HTTPConnection | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view) and self.pos < self.size:
            index, offset = divmod(self.pos, BLOCK)
            block = self._block(index)
            take = min(len(view) - n, len(block) - offset)
            view[n : n + take] = block[offset : offset + take]
            n += take
            self.pos += take
        return n

    def _block(self, index: int) -> bytes:
        found = self._blocks.get(index)
        if found is not None:
            self._blocks.move_to_end(index)
            return found
        start = index * BLOCK
        end = min(self.size, start + BLOCK) - 1
        data = self._get(start, end)
        self._blocks[index] = data
        while len(self._blocks) > self.keep:
            self._blocks.popitem(last=False)
        return data

    def _get(self, start: int, end: int) -> bytes:
        for attempt in range(2):
            if self._conn is None:
                cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                self._conn = cls(self._netloc, timeout=30)
            try:
                self._conn.request("GET", self._target, headers={"Range": f"bytes={start}-{end}"})
                resp = self._conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
                continue
            if resp.status not in (200, 206):
                raise OSError(f"the store answered {resp.status} to a ranged GET")
            return data if resp.status == 206 else data[start : end + 1]
        raise OSError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        super().close()


# -- identification ----------------------------------------------------------------------------------


def identify(head: bytes) -> str:
    """The media type of a file from its first bytes (libmagic's database, as ``file`` uses)."""
    if not head:
        return "application/x-empty"
    import magic

    return str(magic.from_buffer(head, mime=True))


# -- images ---------------------------------------------------------------------------------------------

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL = 0x9003, 0x9011


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def taken_at(exif: Any) -> str | None:
    """DateTimeOriginal (with its offset when recorded) as ISO 8601, else DateTime."""
    sub = exif.get_ifd(_EXIF_IFD)
    raw = _text(sub.get(_DATETIME_ORIGINAL)) or _text(exif.get(_DATETIME))
    if raw is None:
        return None
    try:
        when = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = _text(sub.get(_OFFSET_ORIGINAL)) if sub.get(_DATETIME_ORIGINAL) else None
    return when.isoformat() + (offset if offset and len(offset) == 6 else "")


def camera(exif: Any) -> str | None:
    make, model = _text(exif.get(_MAKE)), _text(exif.get(_MODEL))
    if make and model and model.lower().startswith(make.lower()):
        return model
    return " ".join(p for p in (make, model) if p) or None


def gps(exif: Any) -> dict[str, float] | None:
    info = exif.get_ifd(_GPS_IFD)
    if not info or 2 not in info or 4 not in info:
        return None

    def degrees(value: Any, ref: Any, negative: str) -> float:
        d, m, s = (float(v) for v in value)
        sign = -1 if _text(ref) == negative else 1
        return round(sign * (d + m / 60 + s / 3600), 7)

    try:
        found = {
            "latitude": degrees(info[2], info.get(1), "S"),
            "longitude": degrees(info[4], info.get(3), "W"),
        }
        if 6 in info:
            found["altitude"] = round(float(info[6]) * (-1 if info.get(5) in (1, b"\x01") else 1), 2)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return found


def describe_image(src: RangedFile, req: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image, ImageOps

    if req["detected_type"] in ("image/heic", "image/heif"):
        import pillow_heif

        pillow_heif.register_heif_opener()
    max_pixels = int(req["max_pixels"])
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        image = Image.open(cast(IO[bytes], src))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Refused(f"the image has too many pixels (limit {max_pixels:,}): {exc}") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise Refused(f"the image is {width} x {height} pixels, over the limit of {max_pixels:,}")
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        media: dict[str, Any] = {
            "width": width,
            "height": height,
            "taken_at": taken_at(exif),
            "camera": camera(exif),
            "gps": gps(exif),
            "orientation": orientation if isinstance(orientation, int) else None,
        }
        size = int(req["preview_size"])
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        thumb = ImageOps.exif_transpose(image)
        thumb.thumbnail((size, size))
        save_preview(thumb, req["preview_path"])
    return media


def save_preview(image: Any, path: str) -> None:
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    image.save(path, "JPEG", quality=82, optimize=True)


def preview_from_png(data: bytes, req: dict[str, Any]) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as frame:
        size = int(req["preview_size"])
        frame.thumbnail((size, size))
        save_preview(frame, req["preview_path"])


# -- video and audio (Debian's ffmpeg, reading the URL with range requests) ---------------------------


def _run(argv: list[str], timeout: float, url: str) -> bytes:
    """Run ffprobe or ffmpeg; its last line of errors (the presigned URL taken out) if it fails."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)  # noqa: S603
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").replace(url, "<object>").strip().splitlines()
        raise ValueError(lines[-1] if lines else f"{argv[0]} exited with {done.returncode}")
    return done.stdout


def describe_av(req: dict[str, Any]) -> dict[str, Any]:
    url, timeout = req["url"], float(req["cpu"])
    # Only the presigned URL may be opened: a hostile file naming other resources (an MP4's external
    # data references, a playlist) gets nothing from the disk or elsewhere.
    only_http = ["-protocol_whitelist", "http,https,tcp,tls,crypto"]
    ffprobe = ["ffprobe", "-v", "error", *only_http, "-rw_timeout", "20000000", "-print_format", "json"]
    probe = json.loads(
        _run(
            [*ffprobe, "-show_format", "-show_streams", url],
            timeout,
            url,
        )
    )
    streams = probe.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = probe.get("format", {}).get("duration") or (video or audio or {}).get("duration")
    media: dict[str, Any] = {
        "duration_seconds": round(float(duration), 3) if duration not in (None, "N/A") else None,
        "codec": (video or audio or {}).get("codec_name"),
    }
    if video is None:
        if audio is None:
            raise ValueError("no audio or video stream")
        return media
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width * height > int(req["max_pixels"]):
        raise Refused(f"the video is {width} x {height} pixels, over the limit of {int(req['max_pixels']):,}")
    media.update(width=width, height=height)
    at = min(1.0, (media["duration_seconds"] or 0) / 2)
    ffmpeg = ["ffmpeg", "-v", "error", "-nostdin", "-threads", "1", *only_http, "-rw_timeout", "20000000"]
    frame = _run(
        [*ffmpeg, "-ss", f"{at:.3f}", "-i", url, "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"],
        timeout,
        url,
    )
    if not frame:
        raise ValueError("no frame could be decoded")
    preview_from_png(frame, req)
    return media


def _is_cover(stream: dict[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


# -- PDF -----------------------------------------------------------------------------------------------


def describe_pdf(src: RangedFile, req: dict[str, Any]) -> dict[str, Any]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(src)
    try:
        pages = len(pdf)
        media: dict[str, Any] = {"pages": pages}
        if pages:
            page = pdf[0]
            width, height = page.get_size()
            media.update(width=round(width), height=round(height))  # points
            scale = min(4.0, int(req["preview_size"]) / max(width, height, 1.0))
            image = page.render(scale=scale).to_pil()
            save_preview(image, req["preview_path"])
    finally:
        pdf.close()
    return media


# -- the process ------------------------------------------------------------------------------------------


def limit(req: dict[str, Any]) -> None:
    memory, cpu = int(req["memory"]), int(req["cpu"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def describe(detected: str, src: RangedFile, req: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Media facts and whether a preview was written, for the types there is a decoder for."""
    if detected in IMAGE_TYPES:
        return describe_image(src, req), True
    if detected == "application/pdf":
        media = describe_pdf(src, req)
        return media, bool(media["pages"])
    if detected.startswith(("video/", "audio/")):
        media = describe_av(req)
        return media, "width" in media
    return {}, False


def examine(req: dict[str, Any]) -> None:
    """The whole inspection of one file, under limits set first; its answer as JSON lines."""
    limit(req)
    src = RangedFile(req["url"], int(req["size"]))
    try:
        head = src.read(min(HEAD, src.size))
        detected = identify(head)
        req["detected_type"] = detected
        emit({"detected_type": detected})
        src.seek(0)
        media, preview = describe(detected, src, req)
        emit({"media": media, "preview": preview})
    except Refused as exc:
        emit({"error": str(exc), "kind": exc.kind})
    except MemoryError:
        emit({"error": f"the decoder needed more than {int(req['memory']) // 2**20} MiB", "kind": "memory"})
    except subprocess.TimeoutExpired:
        emit({"error": f"the decoder took longer than {req['cpu']} s", "kind": "timeout"})
    except OSError as exc:
        emit({"error": f"reading the object failed: {exc}", "kind": "store"})
    except Exception as exc:
        emit(
            {"error": f"the file could not be decoded: {type(exc).__name__}: {exc}"[:1000], "kind": "corrupt"}
        )
    finally:
        src.close()


# -- the fork server --------------------------------------------------------------------------------


def preload() -> None:
    """Import the decoders once (and load libmagic's database), so each forked child starts warm."""
    import magic
    import pillow_heif
    import pypdfium2  # noqa: F401
    from PIL import Image, ImageOps  # noqa: F401

    magic.from_buffer(b"%PDF-1.7", mime=True)
    pillow_heif.register_heif_opener()


def _say(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())  # one write, under PIPE_BUF: never interleaved


def _child(req: dict[str, Any]) -> None:
    """In a forked child: a session of its own (its parent kills the group at the deadline), stdout
    and stderr to the request's files, then the inspection. Never returns."""
    code = 1
    try:
        os.setsid()
        write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], write), (2, req["err"], write)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process ends with os._exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        examine(req)
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    """Read requests (JSON lines with an ``id``) on stdin; for each, fork a child that inspects the
    file and answer ``{"id", "pid"}``; when a child ends, answer ``{"id", "exit"}`` (its exit code,
    or minus the signal that ended it). One thread only, so forking is safe."""
    preload()
    children: dict[int, str] = {}
    pending = b""
    while True:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in children:
                _say({"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)})
        readable, _, _ = select.select([0], [], [], 0.02)
        if not readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the worker went away: so do we (children finish on their own)
            return 0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(req)
            children[pid] = req["id"]
            _say({"id": req["id"], "pid": pid})


def main() -> int:
    if sys.argv[1:] == ["--serve"]:
        return serve()
    examine(json.loads(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
