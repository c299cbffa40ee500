"""Pictures as phones make them, generated with Pillow: EXIF with GPS coordinates, the device and
the time, an XMP packet, a comment, and an orientation tag, so tests can look for each in what
Tipline keeps."""

from __future__ import annotations

import io

from PIL import Image

# Values planted in every picture; none may survive anywhere Tipline writes.
GPS_LATITUDE = (45.0, 30.0, 17.5)  # 45°30'17.5"N, 73°34'2.5"W: a real-looking place
GPS_LONGITUDE = (73.0, 34.0, 2.5)
DEVICE_MAKE = "PlantedMakerCo"
DEVICE_MODEL = "PlantedPhone 12 Pro"
TAKEN_AT = "2026:11:30 23:14:05"
XMP_MARKER = "PlantedXmpCreator"
COMMENT = "PlantedJpegComment"
PLANTED = (DEVICE_MAKE, DEVICE_MODEL, TAKEN_AT, XMP_MARKER, COMMENT)

XMP_PACKET = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{XMP_MARKER}"'
    ' xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="45,30.2917N" exif:GPSLongitude="73,34.0417W"/>'
    "</rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
)


def two_colour(width: int, height: int) -> Image.Image:
    """Red on the left half, blue on the right: an orientation is visible in the pixels."""
    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    return image


def phone_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = DEVICE_MAKE
    exif[0x0110] = DEVICE_MODEL
    exif[0x0132] = TAKEN_AT
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: GPS_LATITUDE, 3: "W", 4: GPS_LONGITUDE}
    return exif


def phone_photo(width: int = 120, height: int = 80, *, orientation: int = 6, fmt: str = "JPEG") -> bytes:
    """A photo as a phone saves it; orientation 6 means "turn 90° clockwise to view"."""
    out = io.BytesIO()
    image = two_colour(width, height)
    if fmt == "JPEG":
        image.save(out, "JPEG", exif=phone_exif(orientation), xmp=XMP_PACKET.encode(), comment=COMMENT, quality=90)
    elif fmt == "PNG":
        image.save(out, "PNG", exif=phone_exif(orientation))
    elif fmt == "GIF":
        frames = [image, Image.new("RGB", (width, height), (0, 200, 0))]
        frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], comment=COMMENT.encode())
    else:
        image.save(out, fmt, exif=phone_exif(orientation))
    return out.getvalue()


def bomb_png(side: int = 12_000) -> bytes:
    """A small file that decodes to side² pixels (144 M by default): a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG", optimize=True)
    return out.getvalue()
