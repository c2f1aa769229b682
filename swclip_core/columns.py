"""Which column is which, and when a text cell counts as missing: one rule set for every reader.

The sample readers, the spatial joins, the gallery builders, the place lists of the synthetic
scenes and the captions all find their columns and clean their text here, so a file is read the
same way whatever command reads it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import InputError

# Candidate names for auto-detection, in order of preference, compared case-insensitively.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("sample_id", "id"),
    "image": ("image_path", "image", "path", "file", "filename", "photo"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "x": ("x", "easting"),
    "y": ("y", "northing"),
    "street": ("street", "addr:street", "road"),
    "city": ("city", "town", "addr:city", "locality"),
    "country": ("country", "addr:country"),
    "region": ("region",),
}

# Name fields of polygon and line layers (regions, streets), tried before any other text column.
NAME_FIELDS = (
    "name",
    "name_en",
    "name:en",
    "name_eng",
    "nom",
    "street",
    "road",
    "road_name",
    "roadname",
    "region",
    "city",
    "town",
    "district",
)

# Place lists (OpenStreetMap addresses, OS Open Names) also name streets ``name`` and towns
# ``populated_place``, and leave the town empty where ``addr:place``/``addr:locality`` has it.
PLACE_STREET = (*CANDIDATES["street"], "name")
PLACE_CITY = (*CANDIDATES["city"], "populated_place")
PLACE_CITY_FALLBACKS = ("addr:place", "addr:locality", "place", "locality")

# What str() makes of a missing value (None, NaN, pandas NA/NaT) after a careless astype(str), and
# what databases and JSON exports write for no value. Compared exactly: "Nan" (a town in Thailand)
# and "none of these" are names.
MISSING_TEXT = frozenset({"", "None", "nan", "NaN", "<NA>", "NaT", "null", "NULL"})


def match_column(columns: Iterable[Any], name: str) -> Any | None:
    """The column called ``name``: exactly, else ignoring case and surrounding blanks."""
    columns = list(columns)
    if name in columns:
        return name
    wanted = name.strip().lower()
    return next((c for c in columns if str(c).strip().lower() == wanted), None)


def find_column(columns: Iterable[Any], candidates: Sequence[str]) -> Any | None:
    """The first column whose name (ignoring case and blanks) is one of ``candidates``."""
    by_lower: dict[str, Any] = {}
    for column in columns:
        by_lower.setdefault(str(column).strip().lower(), column)
    return next((by_lower[c] for c in candidates if c in by_lower), None)


def resolve_column(
    columns: Iterable[Any], explicit: str | None, candidates: Sequence[str], *, not_found: str
) -> Any | None:
    """The column ``explicit`` names when given (InputError ``not_found`` when there is none),
    else the first of ``candidates`` present (None when none is)."""
    columns = list(columns)
    if explicit is None:
        return find_column(columns, candidates)
    match = match_column(columns, explicit)
    if match is None:
        raise InputError(not_found)
    return match


def clean_text(value: Any) -> str | None:
    """A cell as stripped text, or None when it is missing (see :data:`MISSING_TEXT`).

    Whole numbers stored as floats (integer columns with gaps) are written without ``.0``, so an
    id or a region code 7 stays "7".
    """
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer():
            value = int(number)
    text = str(value).strip()
    return None if text in MISSING_TEXT else text


def is_missing_text(value: Any) -> bool:
    """Whether a cell has no usable text (:func:`clean_text` gives None)."""
    return clean_text(value) is None
