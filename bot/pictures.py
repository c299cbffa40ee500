"""Pictures sent with a report: fetched from the channel that carried them, then stripped.

A phone photo carries GPS coordinates, the device and the time in its EXIF/XMP/IPTC blocks, and
often a thumbnail of the uncropped original. None of it is kept: the picture is decoded with
Pillow (refused unread when its header announces more pixels than ``max_pixels``, a decompression
bomb), turned upright by its EXIF orientation, scaled down to ``max_side``, and its pixels alone
are written into a new JPEG. Nothing of the original file survives: no EXIF, XMP, IPTC, ICC,
comment or thumbnail.

Fetching happens before the message's transaction (never inside it) and within one deadline for
all the message's pictures, so a slow provider delays the answer by at most that deadline and the
text of the message is handled all the same. A picture that cannot be fetched is said so to the
person, who can send it again.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from bot.messages import MediaRef
from bot.settings import PictureSettings

log = logging.getLogger(__name__)

register_heif_opener()  # iPhone pictures (HEIC), decoded by the libheif that ships in the wheel
# ``max_pixels`` is the guard, checked on the header before any pixel is decoded; Pillow's own
# (a warning at 89 M pixels, an error at twice that) would only print a warning past ours.
Image.MAX_IMAGE_PIXELS = None

# What a provider may declare, and what the file must then turn out to be.
PICTURE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif", "image/heic", "image/heif"})
PICTURE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF")
UNDECLARED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
JPEG_QUALITY = 85


class Refusal(str, Enum):
    """Why a picture was not kept; each has its own calm line in the catalogues."""

    NOT_A_PICTURE = "not_a_picture"  # a video, a voice note, a PDF...
    TOO_BIG = "too_big"  # more bytes or pixels than allowed
    UNREADABLE = "unreadable"  # said to be a picture, is not one that can be decoded
    NOT_RECEIVED = "not_received"  # the provider did not hand it over (timeout, error, a foreign URL)


class PictureRefused(Exception):
    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)  # the reason only: never a URL, a file id or a byte
        self.reason = reason


@dataclass(frozen=True)
class Picture:
    image: bytes  # a fresh JPEG: pixels only
    width: int
    height: int

    def __repr__(self) -> str:
        return f"Picture({self.width}x{self.height}, {len(self.image)} bytes)"


@dataclass(frozen=True)
class Refused:
    reason: Refusal


Received = Picture | Refused


class PictureSource(Protocol):
    """A channel's way to get the bytes of one of its media references."""

    async def fetch(self, ref: MediaRef, max_bytes: int) -> bytes:
        """The file as sent; raises :class:`PictureRefused` (never anything else for a bad file)."""
        ...


def declared_refusal(ref: MediaRef, settings: PictureSettings) -> Refusal | None:
    """What can be refused before fetching anything: a reference that failed its channel's checks,
    a type that is no picture, a size above the limit."""
    if not ref.fetchable:
        return Refusal.NOT_RECEIVED
    declared = ref.content_type.split(";")[0].strip().lower()
    # Only a type that says "not a picture" is refused unread; an image/* or an unknown type is
    # fetched and decoded, which decides (the formats Pillow may open are PICTURE_FORMATS only).
    if declared not in PICTURE_TYPES and declared not in UNDECLARED and not declared.startswith("image/"):
        return Refusal.NOT_A_PICTURE
    if ref.size is not None and ref.size > settings.max_bytes:
        return Refusal.TOO_BIG
    return None


def clean(data: bytes, settings: PictureSettings) -> Picture:
    """Decode, check, turn upright, scale down, and re-encode the pixels alone. CPU-bound: run it
    in a thread. Raises :class:`PictureRefused`."""
    if len(data) > settings.max_bytes:
        raise PictureRefused(Refusal.TOO_BIG)
    try:
        with Image.open(io.BytesIO(data), formats=PICTURE_FORMATS) as original:
            width, height = original.size
            if width * height > settings.max_pixels:
                raise PictureRefused(Refusal.TOO_BIG)  # refused before a pixel is decoded
            original.seek(0)  # an animated GIF or a HEIC sequence: the first frame
            original.load()
            upright = ImageOps.exif_transpose(original)
            flat = _on_white(upright)
            flat.thumbnail((settings.max_side, settings.max_side), Image.Resampling.LANCZOS)
            # A new image from the raw pixels: no ``info`` (EXIF, XMP, ICC, comments) can ride along.
            fresh = Image.frombytes("RGB", flat.size, flat.tobytes())
            out = io.BytesIO()
            fresh.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            return Picture(out.getvalue(), fresh.width, fresh.height)
    except PictureRefused:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, MemoryError):
        raise PictureRefused(Refusal.UNREADABLE) from None


def _on_white(image: Image.Image) -> Image.Image:
    """RGB pixels; transparency is laid on white (a JPEG has none)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


class PictureReceiver:
    """Gets the pictures of one message from the channels' sources, within one deadline."""

    def __init__(self, settings: PictureSettings) -> None:
        self.settings = settings
        self._sources: dict[str, PictureSource] = {}

    def add_source(self, name: str, source: PictureSource) -> None:
        self._sources[name] = source

    async def receive(self, refs: tuple[MediaRef, ...]) -> tuple[Received, ...]:
        """One result per reference, in order; never raises."""
        if self.settings.per_report == 0:
            return tuple(Refused(Refusal.NOT_RECEIVED) for _ in refs)
        tasks = [asyncio.ensure_future(self._one(ref)) for ref in refs]
        done, pending = await asyncio.wait(tasks, timeout=self.settings.fetch_timeout_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d of %d pictures not fetched within %.0f s", len(pending), len(refs), self.settings.fetch_timeout_seconds)
        return tuple(task.result() if task in done else Refused(Refusal.NOT_RECEIVED) for task in tasks)

    async def _one(self, ref: MediaRef) -> Received:
        refused = declared_refusal(ref, self.settings)
        source = self._sources.get(ref.source)
        if refused is None and source is None:
            refused = Refusal.NOT_RECEIVED
        if refused is not None:
            return Refused(refused)
        assert source is not None
        try:
            data = await source.fetch(ref, self.settings.max_bytes)
            return await asyncio.to_thread(clean, data, self.settings)
        except PictureRefused as exc:
            log.info("%s picture not kept (%s)", ref.source, exc.reason.value)
            return Refused(exc.reason)
        except Exception as exc:  # noqa: BLE001 - one picture must never cost the message its answer
            log.warning("%s picture not fetched (%s)", ref.source, type(exc).__name__)
            return Refused(Refusal.NOT_RECEIVED)
