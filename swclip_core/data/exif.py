"""GPS position of a photo from its EXIF GPS IFD (no geocoding, no network).

EXIF stores latitude and longitude as three unsigned rationals (degrees, minutes, seconds) with a
separate hemisphere reference ("N"/"S", "E"/"W"); see the EXIF 2.32 specification, GPS tags
0x0001-0x0004. Street and city are never invented from a position: photos read from a folder carry
none, and captions simply leave them out.
"""

from __future__ import annotations

import math
import os
from typing import Any

from PIL import Image

from swclip_core.data.images import DECODE_ERRORS
from swclip_core.errors import InputError

GPS_IFD_TAG = 0x8825
_GPS_LATITUDE_REF = 0x0001
_GPS_LATITUDE = 0x0002
_GPS_LONGITUDE_REF = 0x0003
_GPS_LONGITUDE = 0x0004


def _ref_letter(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    return str(value or "").strip("\x00 ").upper()[:1]


def _degrees(value: Any) -> float:
    """Degrees from a (deg, min, sec) tuple; shorter tuples occur (decimal degrees in one value)."""
    parts = value if isinstance(value, tuple | list) else (value,)
    if not 1 <= len(parts) <= 3:
        return math.nan
    try:
        # A rational with a zero denominator converts to NaN, which the caller rejects.
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return sum(number / 60**power for power, number in enumerate(numbers))


def read_exif_gps(path: str | os.PathLike) -> tuple[float, float] | None:
    """Return ``(lat, lon)`` in WGS84 degrees from the EXIF GPS IFD of a photo, or ``None``.

    ``None`` means the file has no usable GPS position (no GPS IFD, missing tags, zero
    denominators, or a hemisphere reference other than N/S/E/W). Raises :class:`InputError`
    naming the file when it is not a readable image. Works for JPEG, PNG (eXIf chunk) and TIFF.
    """
    try:
        with Image.open(path) as image:
            gps = image.getexif().get_ifd(GPS_IFD_TAG)
    except DECODE_ERRORS as error:
        raise InputError(f"Cannot read image {os.fspath(path)!r}: {error}") from error
    if _GPS_LATITUDE not in gps or _GPS_LONGITUDE not in gps:
        return None
    # A missing reference is read as N/E (positive), as exiftool does.
    lat_ref = _ref_letter(gps.get(_GPS_LATITUDE_REF, "N"))
    lon_ref = _ref_letter(gps.get(_GPS_LONGITUDE_REF, "E"))
    if lat_ref not in ("N", "S") or lon_ref not in ("E", "W"):
        return None
    lat = _degrees(gps[_GPS_LATITUDE])
    lon = _degrees(gps[_GPS_LONGITUDE])
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    return (-lat if lat_ref == "S" else lat, -lon if lon_ref == "W" else lon)
