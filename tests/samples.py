"""Files made for the processing tests and benches: what phones, cameras and scanners produce, and
what an attacker would send. Each function returns the file's bytes."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from PIL import Image

#: The GPS position written into ``jpeg_with_gps`` (and read back by the tests).
LATITUDE, LONGITUDE = 52.3702, 4.8952  # Amsterdam, north and east
TAKEN_AT = "2026:03:14 09:26:53"


def png(width: int = 800, height: int = 600) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(out, "PNG")
    return out.getvalue()


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes_float = (value - degrees) * 60
    minutes = int(minutes_float)
    return (float(degrees), float(minutes), round((minutes_float - minutes) * 60, 4))


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D Mark IV"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = TAKEN_AT
    exif.get_ifd(0x8825).update({1: "N", 2: _dms(LATITUDE), 3: "E", 4: _dms(LONGITUDE)})
    return exif


def jpeg_with_gps(
    width: int = 1600, height: int = 1200, orientation: int = 6, image: Image.Image | None = None
) -> bytes:
    """A camera JPEG (of ``image``, else a plain one): make and model, DateTimeOriginal, GPS, and
    orientation 6 (rotate 90°: the picture is ``height`` wide when shown)."""
    out = io.BytesIO()
    picture = image if image is not None else Image.new("RGB", (width, height), (200, 60, 30))
    picture.save(out, "JPEG", exif=_exif(orientation), quality=85)
    return out.getvalue()


def heic(width: int = 1024, height: int = 768) -> bytes:
    """A phone photo (HEIC, as iPhones save them), with EXIF."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 160, 90)).save(out, "HEIF", exif=_exif(1).tobytes())
    return out.getvalue()


def mp4(seconds: int = 2, width: int = 320, height: int = 240, bitrate: str | None = None) -> bytes:
    """A short H.264 video made by ffmpeg (its moov box at the end, as ffmpeg writes by default);
    with ``bitrate`` (``"24M"``), one of about ``seconds`` x ``bitrate`` bytes (a moving pattern)."""
    rate = (  # noise, so the encoder needs the bitrate; a constant bitrate (HRD padding) fills it
        ["-vf", "noise=alls=30:allf=t+u", "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", "2M",
         "-x264-params", "nal-hrd=cbr"]
        if bitrate else []
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi",
             "-i", f"testsrc2=duration={seconds}:size={width}x{height}:rate=25",
             "-c:v", "libx264", "-preset", "ultrafast", *rate, "-pix_fmt", "yuv420p", str(path)],
            check=True, timeout=300,
        )  # fmt: skip
        return path.read_bytes()


def truncated_mp4() -> bytes:
    """The first half of a video: no moov box, as after a broken transfer."""
    whole = mp4(seconds=4)
    return whole[: len(whole) // 2]


def pdf(pages: int = 3) -> bytes:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(595, 842)  # A4 in points
    out = io.BytesIO()
    doc.save(out)
    doc.close()
    return out.getvalue()


def random_binary(size: int = 64 * 1024) -> bytes:
    return os.urandom(size)


def png_bomb(side: int = 50_000) -> bytes:
    """A valid PNG of ``side`` x ``side`` grey pixels, all zero: about 11 MB that inflate to
    ``side``² bytes (2.5 GB for 50,000). The zlib stream is one compressed slab of rows repeated
    (full flushes make the pieces independent), so it is made in a second or two."""
    rows_per_slab = 1000
    assert side % rows_per_slab == 0
    slab = bytes((side + 1) * rows_per_slab)  # each row: filter byte 0, then the pixels
    deflate = zlib.compressobj(1)
    first = deflate.compress(slab) + deflate.flush(zlib.Z_FULL_FLUSH)  # with the zlib header
    again = deflate.compress(slab) + deflate.flush(zlib.Z_FULL_FLUSH)
    count = side // rows_per_slab
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(slab, adler)
    idat = first + again * (count - 1) + b"\x03\x00" + struct.pack(">I", adler)  # empty final block

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def every_kind() -> list[tuple[str, bytes, str, str]]:
    """One file of each kind processing knows: (name, bytes, declared type, detected type)."""
    return [
        ("photo.png", png(), "image/png", "image/png"),
        ("camera.jpg", jpeg_with_gps(), "image/jpeg", "image/jpeg"),
        ("phone.heic", heic(), "image/heic", "image/heic"),
        ("clip.mp4", mp4(), "video/mp4", "video/mp4"),
        ("report.pdf", pdf(3), "application/pdf", "application/pdf"),
        ("blob.bin", random_binary(), "application/octet-stream", "application/octet-stream"),
    ]
