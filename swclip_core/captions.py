"""Location-as-text: the captions that encode a real position (docs/method.md, "Captions").

Default output::

    Street: Aalin Court, City: Ballasalla, Country: Isle of Man. Lat: 54.09205, Lon: -4.62742.

The template is a dataclass so it can be saved as JSON (``dataclasses.asdict``) next to every
checkpoint: a model must be queried with the captions it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from swclip_core.columns import clean_text
from swclip_core.errors import InputError


@dataclass(frozen=True)
class CaptionTemplate:
    """How a caption is written.

    fields: ``(column, label)`` pairs, written in this order as ``label: value`` joined by ``", "``;
        a field whose value is missing is left out.
    precision: decimals of latitude and longitude (5 decimals is about 1 m).
    lat_label, lon_label: labels of the coordinates, which always close the caption.
    """

    fields: tuple[tuple[str, str], ...] = (
        ("street", "Street"),
        ("city", "City"),
        ("country", "Country"),
    )
    precision: int = 5
    lat_label: str = "Lat"
    lon_label: str = "Lon"

    def __post_init__(self) -> None:
        if not isinstance(self.precision, int) or self.precision < 0:
            raise InputError(
                f"Caption precision must be a whole number of decimals >= 0, "
                f"got {self.precision!r}."
            )
        # JSON turns the pairs into lists; normalise so a reloaded template equals the saved one.
        object.__setattr__(self, "fields", tuple((str(c), str(lbl)) for c, lbl in self.fields))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionTemplate:
        """Rebuild a template from ``dataclasses.asdict`` output (e.g. read back from JSON)."""
        return cls(**dict(data))

    @property
    def columns(self) -> tuple[str, ...]:
        """The text columns this template reads."""
        return tuple(column for column, _ in self.fields)


DEFAULT_TEMPLATE = CaptionTemplate()


def _coordinate(value: Any, name: str, limit: float, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{where}: {name} {value!r} is not a number; fix or drop this record.")
    if abs(number) > limit:
        raise InputError(
            f"{where}: {name} {number} is outside -{limit:g}..{limit:g}. Coordinates must be WGS84 "
            "degrees; projected coordinates (metres) must be transformed to EPSG:4326 first."
        )
    return number


def _format_degrees(value: float, precision: int) -> str:
    text = f"{value:.{precision}f}"
    # A tiny negative value rounds to "-0.00000"; the sign carries no information there.
    if float(text) == 0.0:
        text = text.lstrip("-")
    return text


def location_caption(
    lat: float,
    lon: float,
    *,
    street: Any = None,
    city: Any = None,
    country: Any = None,
    template: CaptionTemplate | None = None,
    **fields: Any,
) -> str:
    """The caption of one location.

    ``street``, ``city``, ``country`` and any other keyword named in ``template.fields`` fill the
    text fields; missing ones (None, NaN, empty or blank) are left out. Raises :class:`InputError`
    when lat/lon are not finite WGS84 degrees.
    """
    template = template or DEFAULT_TEMPLATE
    values = {"street": street, "city": city, "country": country, **fields}
    return _caption(lat, lon, values, template, where="Location")


def _caption(
    lat: Any, lon: Any, values: Mapping[str, Any], template: CaptionTemplate, where: str
) -> str:
    lat_f = _coordinate(lat, "latitude", 90.0, where)
    lon_f = _coordinate(lon, "longitude", 180.0, where)
    parts = []
    for column, label in template.fields:
        text = clean_text(values.get(column))
        if text is not None:
            parts.append(f"{label}: {text}")
    coordinates = (
        f"{template.lat_label}: {_format_degrees(lat_f, template.precision)}, "
        f"{template.lon_label}: {_format_degrees(lon_f, template.precision)}."
    )
    if not parts:
        return coordinates
    return ", ".join(parts) + ". " + coordinates


def captions_for(df: pd.DataFrame, template: CaptionTemplate | None = None) -> list[str]:
    """Captions for every row of ``df``: columns ``lat`` and ``lon`` (WGS84 degrees) are required,
    the template's text columns (street, city, country by default) are used when present."""
    template = template or DEFAULT_TEMPLATE
    missing = [c for c in ("lat", "lon") if c not in df.columns]
    if missing:
        raise InputError(
            f"Captions need columns 'lat' and 'lon' (WGS84 degrees); missing {missing}. "
            f"Available columns: {list(df.columns)}."
        )
    present = [c for c in template.columns if c in df.columns]
    columns = {c: df[c].tolist() for c in present}
    captions = []
    for row, (index, lat, lon) in enumerate(zip(df.index, df["lat"], df["lon"], strict=True)):
        values = {c: columns[c][row] for c in present}
        captions.append(_caption(lat, lon, values, template, where=f"Record {index!r}"))
    return captions
