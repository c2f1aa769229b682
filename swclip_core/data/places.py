"""Real place lists for the synthetic scenes: read a CSV of places (OpenStreetMap addresses, OS
Open Names...) and pick a balanced set of towns and streets from it.

The bundled place list (:data:`BUNDLED_PLACES`) is OpenStreetMap data (ODbL, see its
ATTRIBUTION.md).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from swclip_core.columns import (
    CANDIDATES,
    PLACE_CITY,
    PLACE_CITY_FALLBACKS,
    PLACE_STREET,
    clean_text,
    resolve_column,
)
from swclip_core.errors import InputError

BUNDLED_PLACES: Path = (
    Path(__file__).resolve().parents[2]
    / "resources"
    / "sample_data"
    / "places"
    / "isleofman_addresses.csv"
)
"""Isle of Man address points (c) OpenStreetMap contributors, ODbL 1.0."""

DEMO_TOWNS: tuple[str, ...] = (
    "Douglas",
    "Onchan",
    "Ramsey",
    "Peel",
    "Castletown",
    "Port Erin",
    "Ballasalla",
)
"""Towns of :data:`BUNDLED_PLACES` used by :func:`demo_places` (each has multi-place streets)."""


# --------------------------------------------------------------------------------------------------
# Place lists


def _find_column(
    columns: Sequence[str],
    wanted: str | None,
    candidates: Sequence[str],
    what: str,
    csv_path: Path,
    required: bool,
) -> str | None:
    """The column to use for ``what``: the one named by the caller, else the first known name."""
    found = resolve_column(
        columns,
        wanted,
        candidates,
        not_found=f"{csv_path}: no column '{wanted}' for the {what}; "
        f"columns are {', '.join(columns)}.",
    )
    if found is None and required:
        raise InputError(
            f"{csv_path}: no {what} column found (looked for {', '.join(candidates)}); "
            f"columns are {', '.join(columns)}. Rename the column or pass its name."
        )
    return found


def _clean_text(series: pd.Series) -> pd.Series:
    """Stripped strings with missing values as None (captions leave missing fields out)."""
    return series.map(clean_text).astype(object)


def load_places(
    csv_path: str | os.PathLike[str],
    *,
    street_column: str | None = None,
    city_column: str | None = None,
    country: str | None = None,
) -> pd.DataFrame:
    """Read a CSV of real places into a table with ``place_id, lat, lon, street, city, country``.

    Coordinates come from columns named lat/latitude/y and lon/lng/longitude/x (WGS84 degrees).
    ``street_column`` and ``city_column`` name the columns to use; by default the first of
    ``street, addr:street, road, name`` and ``city, addr:city, town, populated_place`` is used.
    Empty town values are filled from ``addr:place`` / ``addr:locality`` when the file has them.
    ``country`` gives one country name for every place; without it a ``country`` or
    ``addr:country`` column is used if present. Missing names are ``None``.

    ``place_id`` is the 0-based data row of the file. Rows without a valid coordinate are left out
    and listed in ``result.attrs["skipped_rows"]`` (``{"row": ..., "reason": ...}`` dicts).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"Place list not found: {path}. Check the path (it must be a CSV file).")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({exc}).") from exc
    columns = list(raw.columns)
    lat_col = _find_column(columns, None, CANDIDATES["lat"], "latitude", path, required=True)
    lon_col = _find_column(columns, None, CANDIDATES["lon"], "longitude", path, required=True)
    street_col = _find_column(columns, street_column, PLACE_STREET, "street", path, False)
    city_col = _find_column(columns, city_column, PLACE_CITY, "town/city", path, False)

    lat = pd.to_numeric(raw[lat_col].str.strip(), errors="coerce")
    lon = pd.to_numeric(raw[lon_col].str.strip(), errors="coerce")
    valid = lat.between(-90.0, 90.0) & lon.between(-180.0, 180.0)

    none = pd.Series([None] * len(raw), index=raw.index, dtype=object)
    street = _clean_text(raw[street_col]) if street_col else none.copy()
    city = _clean_text(raw[city_col]) if city_col else none.copy()
    for fallback in PLACE_CITY_FALLBACKS:
        real = _find_column(columns, None, (fallback,), "town fallback", path, False)
        if real is not None and real != city_col:
            city = city.where(city.notna(), _clean_text(raw[real]))
    if country is not None:
        country_values = pd.Series([country] * len(raw), index=raw.index, dtype=object)
    else:
        country_col = _find_column(columns, None, CANDIDATES["country"], "country", path, False)
        country_values = _clean_text(raw[country_col]) if country_col else none.copy()

    table = pd.DataFrame(
        {
            "place_id": np.arange(len(raw), dtype=np.int64),
            "lat": lat.astype(float),
            "lon": lon.astype(float),
            "street": street,
            "city": city,
            "country": country_values,
        }
    )
    skipped = [
        {
            "row": int(i),
            "reason": f"invalid coordinate lat={raw.at[i, lat_col]!r} lon={raw.at[i, lon_col]!r}",
        }
        for i in np.flatnonzero(~valid.to_numpy())
    ]
    table = table[valid.to_numpy()].reset_index(drop=True)
    if table.empty:
        raise InputError(
            f"{path}: none of its {len(raw)} rows has a valid latitude/longitude in degrees "
            f"(columns '{lat_col}', '{lon_col}')."
        )
    table.attrs["skipped_rows"] = skipped
    return table


def name_key(name: object) -> str:
    """Comparable form of a place name: case-folded, 'Saint' = 'St', punctuation dropped."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return ""
    text = str(name).casefold().strip()
    text = re.sub(r"\bsaint\b", "st", text)
    return re.sub(r"[^0-9a-z]+", "", text)


def select_places(
    places: pd.DataFrame,
    *,
    n: int,
    seed: int,
    cities: list[str] | None = None,
    min_per_street: int = 1,
    max_per_street: int = 30,
) -> pd.DataFrame:
    """A reproducible subset of at most ``n`` places in which streets come with neighbours.

    Streets (a street name within a town) with at least ``min_per_street`` places are visited in a
    seeded random order that favours streets with more places, and up to ``max_per_street`` places
    are taken from each, the ones nearest a random place of the street, so every chosen street
    contributes a contiguous stretch. Places without a street name count as one-place streets.
    ``cities`` restricts the choice to those towns (case and "Saint"/"St" insensitive). Returns
    fewer than ``n`` rows only when not enough places qualify, or when the last few would make a
    stretch shorter than ``min_per_street``. Rows keep their order in ``places``.
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}.")
    if min_per_street < 1 or max_per_street < min_per_street:
        raise InputError(
            "Need 1 <= min_per_street <= max_per_street, "
            f"got {min_per_street} and {max_per_street}."
        )
    for column in ("lat", "lon", "street", "city"):
        if column not in places.columns:
            raise InputError(f"The place table has no '{column}' column; read it with load_places.")
    table = places.reset_index(drop=True)
    city_keys = table["city"].map(name_key)
    if cities:
        wanted = {name_key(c): c for c in cities}
        missing = [name for key, name in wanted.items() if key not in set(city_keys)]
        if missing:
            known = table["city"].dropna().value_counts().index[:25]
            raise InputError(
                f"No places in town(s) {', '.join(missing)}. Towns with most places: "
                f"{', '.join(map(str, known))}."
            )
        table = table[city_keys.isin(wanted)].reset_index(drop=True)
        city_keys = table["city"].map(name_key)

    street_keys = table["street"].map(name_key)
    # A place without a street name is its own group: it has no street neighbours.
    group = np.where(
        street_keys != "",
        city_keys + "|" + street_keys,
        "#" + pd.Series(np.arange(len(table)).astype(str)),
    )
    codes, uniques = pd.factorize(pd.Series(group), sort=True)
    sizes = np.bincount(codes, minlength=len(uniques))
    eligible = np.flatnonzero(sizes >= min_per_street)
    if eligible.size == 0:
        raise InputError(
            f"No street has {min_per_street} or more places"
            + (f" in {', '.join(cities)}" if cities else "")
            + "; lower min_per_street."
        )
    rng = np.random.default_rng(seed)
    # Weighted random order without replacement (Efraimidis & Spirakis 2006): key = u^(1/w).
    weights = np.minimum(sizes[eligible], max_per_street).astype(float)
    keys = rng.random(eligible.size) ** (1.0 / weights)
    lat = table["lat"].to_numpy(float)
    lon = table["lon"].to_numpy(float)
    chosen: list[np.ndarray] = []
    remaining = int(n)
    for g in eligible[np.argsort(-keys, kind="stable")]:
        if remaining < min_per_street and chosen:
            break  # a short stretch only when n itself is below min_per_street
        members = np.flatnonzero(codes == g)
        take = min(members.size, max_per_street, remaining)
        if 0 < remaining - take < min_per_street <= remaining - min_per_street:
            # Leave room for one more street of min_per_street places, so n is reached exactly.
            take = remaining - min_per_street
        if take < members.size:
            anchor = members[rng.integers(members.size)]
            dx = (lon[members] - lon[anchor]) * math.cos(math.radians(lat[anchor]))
            dy = lat[members] - lat[anchor]
            members = members[np.argsort(dx * dx + dy * dy, kind="stable")[:take]]
        chosen.append(members)
        remaining -= take
        if remaining == 0:
            break
    rows = np.sort(np.concatenate(chosen))
    return table.iloc[rows].reset_index(drop=True)


def demo_places(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """``n`` places from :data:`BUNDLED_PLACES` in :data:`DEMO_TOWNS`, 3+ places per street."""
    places = load_places(BUNDLED_PLACES, country="Isle of Man")
    return select_places(places, n=n, seed=seed, cities=list(DEMO_TOWNS), min_per_street=3)
