"""Reference formulas the tests check the library against: plain Python written from
docs/method.md, sharing no code with swclip_core."""

from __future__ import annotations

import math

R = 6_371_008.8  # the mean Earth radius in metres (IUGG), as docs/method.md fixes it


def ref_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.atan2(math.sqrt(a), math.sqrt(1 - a))
