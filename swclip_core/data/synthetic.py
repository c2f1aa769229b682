"""Synthetic street scenes at real places, for the offline demo and the tests.

THESE IMAGES ARE SYNTHETIC. They are drawn with numpy, not photographed, and say nothing about what
the real place looks like. Every file written here carries the EXIF ImageDescription and Software
tags "SW-CLIP synthetic scene" (plus EXIF GPS of the place it stands for), and every table row has
``synthetic=True``, so they cannot be mistaken for, or mixed silently with, real street photos.

What they model: a street-level view across a street (sky, a distant backdrop, a row of facades
with roofs, windows, doors and shop fronts, a pavement, kerb and road with markings, trees and lamp
posts) whose appearance depends on where it is, at three scales, the way real street imagery does:

- town style, one per town name: facade palette, building height range, pitched or flat roofs,
  window colour, how often ground floors are shops, roof colour;
- street character, one per (town, street): facade rhythm (building width), setback and front
  gardens, road width (and so viewing distance and facade scale), tree and lamp-post density,
  which colours of the town palette the street uses, road markings;
- smooth local variation: a seeded sum of sinusoids over east/north metres (wavelengths 0.4-5 km)
  that shifts facade hue and brightness, sky colour, vegetation colour and greenery continuously,
  so two places 100 m apart look more alike than two places 2 km apart even in the same town;

plus nuisance variation that changes with every view and carries no location signal: exposure,
colour temperature, gamma, side lighting, clouds, small horizontal/vertical shifts and scale
changes of the viewpoint, occluding cars and pedestrians, sensor noise, blur and JPEG quality.

A model that learns to locate these images can only use the geographic structure above, which is
what the demo and the tests need: a known, controllable signal at real coordinates. Places without a
town or street name get a style from a coarse grid cell (4 km for towns, 250 m for streets) so the
look still varies with geography.

Everything is deterministic: the same ``seed`` gives byte-identical images on the same Pillow/numpy
build. The bundled place list (:data:`BUNDLED_PLACES`) is OpenStreetMap data (ODbL, see its
ATTRIBUTION.md).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from PIL.TiffImagePlugin import IFDRational

from swclip_core.columns import (
    CANDIDATES,
    PLACE_CITY,
    PLACE_CITY_FALLBACKS,
    PLACE_STREET,
    clean_text,
    find_column,
    match_column,
)
from swclip_core.errors import InputError
from swclip_core.geo import EARTH_RADIUS_M
from swclip_core.io import write_bytes

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

SYNTHETIC_MARKER = "SW-CLIP synthetic scene"
# Bump when the drawing changes, so cached files from an older generator are not reused.
GENERATOR_VERSION = 1

_TOWN_CELL_M = 4000.0
_STREET_CELL_M = 250.0
_EXIF_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
_EXIF_GPS_IFD = 0x8825


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
    if wanted is not None:
        match = match_column(columns, wanted)
        if match is None:
            raise InputError(
                f"{csv_path}: no column '{wanted}' for the {what}; "
                f"columns are {', '.join(columns)}."
            )
        return match
    found = find_column(columns, candidates)
    if found is not None:
        return found
    if required:
        raise InputError(
            f"{csv_path}: no {what} column found (looked for {', '.join(candidates)}); "
            f"columns are {', '.join(columns)}. Rename the column or pass its name."
        )
    return None


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


def _name_key(name: object) -> str:
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
    city_keys = table["city"].map(_name_key)
    if cities:
        wanted = {_name_key(c): c for c in cities}
        missing = [name for key, name in wanted.items() if key not in set(city_keys)]
        if missing:
            known = table["city"].dropna().value_counts().index[:25]
            raise InputError(
                f"No places in town(s) {', '.join(missing)}. Towns with most places: "
                f"{', '.join(map(str, known))}."
            )
        table = table[city_keys.isin(wanted)].reset_index(drop=True)
        city_keys = table["city"].map(_name_key)

    street_keys = table["street"].map(_name_key)
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


# --------------------------------------------------------------------------------------------------
# Styles


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and names, stable across runs (unlike ``hash``)."""
    text = "|".join(str(p) for p in (GENERATOR_VERSION, seed, *parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(
        colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float32
    )


def _metres(lat: float, lon: float) -> tuple[float, float]:
    """East/north metres on a global equirectangular grid (smooth, all the field needs)."""
    return (
        EARTH_RADIUS_M * math.radians(lon) * math.cos(math.radians(lat)),
        EARTH_RADIUS_M * math.radians(lat),
    )


@dataclass(frozen=True)
class _Town:
    palette: tuple[tuple[float, float, float], ...]  # facade colours as HSV
    min_floors: int
    max_floors: int
    pitched_roofs: bool
    roof_hsv: tuple[float, float, float]
    window_rgb: tuple[float, float, float]
    shop_share: float
    hill_height: float  # backdrop height as a share of the facade base height


@dataclass(frozen=True)
class _Street:
    colours: tuple[int, ...]  # indices into the town palette
    building_width: float  # px at scale 1
    width_jitter: float
    depth: float  # 0 narrow street (close facades) .. 1 wide road (distant facades)
    setback: float  # 0 .. 1, front gardens above 0.6
    floors: int  # typical storeys; single buildings differ by one at most
    window_spacing: float
    tree_rate: float  # per 256 px of street
    pole_rate: float
    gap_share: float
    double_yellow: bool
    car_rate: float


@lru_cache(maxsize=4096)
def _town_style(seed: int, town_key: str) -> _Town:
    rng = _rng(seed, "town", town_key)
    hue = rng.random()
    sat = rng.uniform(0.1, 0.55)
    value = rng.uniform(0.6, 0.9)
    # Colours of one town stay close to its hue and brightness, so towns are told apart by palette.
    palette = tuple(
        (hue + rng.normal(0.0, 0.05), sat * rng.uniform(0.6, 1.3), value + rng.uniform(-0.1, 0.1))
        for _ in range(5)
    )
    min_floors = int(rng.integers(1, 4))
    return _Town(
        palette=palette,
        min_floors=min_floors,
        max_floors=min_floors + int(rng.integers(0, 4)),
        pitched_roofs=bool(rng.random() < 0.6),
        roof_hsv=(
            float(rng.choice([0.02, 0.06, 0.6, 0.62])),
            rng.uniform(0.1, 0.6),
            rng.uniform(0.2, 0.5),
        ),
        window_rgb=tuple(
            float(c)
            for c in _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.45))
        ),
        shop_share=float(rng.uniform(0.0, 0.6)),
        hill_height=float(rng.uniform(0.0, 0.45)),
    )


@lru_cache(maxsize=16384)
def _street_style(seed: int, town_key: str, street_key: str) -> _Street:
    town = _town_style(seed, town_key)
    rng = _rng(seed, "street", town_key, street_key)
    n_colours = int(rng.integers(1, 4))
    return _Street(
        colours=tuple(int(i) for i in rng.choice(5, size=n_colours, replace=False)),
        building_width=float(rng.uniform(38.0, 110.0)),
        width_jitter=float(rng.uniform(0.05, 0.35)),
        depth=float(rng.random()),
        setback=float(rng.random()),
        floors=int(rng.integers(town.min_floors, town.max_floors + 1)),
        window_spacing=float(rng.uniform(13.0, 26.0)),
        tree_rate=float(rng.choice([0.0, 0.5, 1.5, 3.0])),
        pole_rate=float(rng.uniform(0.3, 2.5)),
        gap_share=float(rng.uniform(0.0, 0.2)),
        double_yellow=bool(rng.random() < 0.35),
        car_rate=float(rng.uniform(0.2, 1.6)),
    )


@lru_cache(maxsize=64)
def _field_waves(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per channel (4) and wave (6): wavelength (m), direction cos, direction sin, phase."""
    rng = _rng(seed, "field")
    wavelength = np.exp(rng.uniform(math.log(400.0), math.log(5000.0), size=(4, 6)))
    theta = rng.uniform(0.0, 2.0 * math.pi, size=(4, 6))
    phase = rng.uniform(0.0, 2.0 * math.pi, size=(4, 6))
    return wavelength, np.cos(theta), np.sin(theta), phase


def local_field(lat: float, lon: float, *, seed: int) -> np.ndarray:
    """The smooth spatial field (4 values in -1..1) that shifts appearance around ``lat, lon``.

    Each value is a seeded sum of six plane waves over east/north metres, squashed by tanh; it
    changes by little over 100 m and decorrelates over a few kilometres.
    """
    x, y = _metres(lat, lon)
    wavelength, cos_t, sin_t, phase = _field_waves(seed)
    waves = np.sin(2.0 * math.pi * (x * cos_t + y * sin_t) / wavelength + phase)
    return np.tanh(waves.sum(axis=1) / math.sqrt(3.0))


def _style_keys(lat: float, lon: float, street: str | None, city: str | None) -> tuple[str, str]:
    x, y = _metres(lat, lon)
    town = _name_key(city)
    if not town:
        town = f"cell:{math.floor(x / _TOWN_CELL_M)},{math.floor(y / _TOWN_CELL_M)}"
    road = _name_key(street)
    if not road:
        road = f"cell:{math.floor(x / _STREET_CELL_M)},{math.floor(y / _STREET_CELL_M)}"
    return town, road


# --------------------------------------------------------------------------------------------------
# Drawing


@lru_cache(maxsize=16)
def _grids(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return ys, xs


def _fill(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` (3,) or per-column (W, 3) where ``mask`` (H, W) is set."""
    np.copyto(img, np.broadcast_to(colour, img.shape), where=mask[..., None])


def _px(value: float) -> int:
    """Nearest pixel index (half up, so numpy and Python floats round alike)."""
    return math.floor(value + 0.5)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: np.ndarray) -> None:
    h, w = img.shape[:2]
    a, b = max(_px(x0), 0), min(_px(x1), w)
    c, d = max(_px(y0), 0), min(_px(y1), h)
    if a < b and c < d:
        img[c:d, a:b] = colour


def _ellipse(
    img: np.ndarray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    colour: np.ndarray,
    alpha: float = 1.0,
) -> None:
    h, w = img.shape[:2]
    a, b = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    c, d = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    if a >= b or c >= d:
        return
    yy = (np.arange(c, d, dtype=np.float32)[:, None] - cy) / ry
    xx = (np.arange(a, b, dtype=np.float32)[None, :] - cx) / rx
    inside = (xx * xx + yy * yy) <= 1.0
    patch = img[c:d, a:b]
    if alpha >= 1.0:
        patch[inside] = colour
    else:
        patch[inside] = (1.0 - alpha) * patch[inside] + alpha * colour


def _draw_buildings(
    img: np.ndarray,
    layout: np.random.Generator,
    town: _Town,
    street: _Street,
    field: np.ndarray,
    base: float,
    scale: float,
    x_start: float,
) -> None:
    """The row of facades: per-column arrays built building by building, then painted at once."""
    height, width = img.shape[:2]
    ys, _ = _grids(width, height)
    floor_h = 20.0 * scale
    ground_h = 1.15 * floor_h
    top = np.full(width, np.inf, dtype=np.float32)
    roof_line = np.full(width, np.inf, dtype=np.float32)
    facade = np.zeros((width, 3), dtype=np.float32)
    roof_rgb = np.zeros((width, 3), dtype=np.float32)
    window_rgb = np.zeros((width, 3), dtype=np.float32)
    sign_rgb = np.zeros((width, 3), dtype=np.float32)
    win_col = np.zeros(width, dtype=bool)
    door_col = np.zeros(width, dtype=bool)
    shop_col = np.zeros(width, dtype=bool)
    town_roof = _hsv(town.roof_hsv[0] + 0.03 * field[3], town.roof_hsv[1], town.roof_hsv[2])
    x = x_start
    # The draws do not depend on the scale, so every view of a place shows the same buildings.
    while x < width:
        w = max(
            street.building_width * scale * math.exp(layout.normal(0.0, street.width_jitter)),
            14.0 * scale,
        )
        is_gap = layout.random() < street.gap_share
        floors = street.floors + int(layout.choice([-1, 0, 0, 0, 1]))
        h_, s_, v_ = town.palette[street.colours[int(layout.integers(len(street.colours)))]]
        tint = layout.normal(0.0, 0.04, size=2)
        light = layout.uniform(0.75, 1.25)
        door_slot = layout.random()
        is_shop = layout.random() < town.shop_share
        sign_hue = layout.random()
        x0, x1 = x, x + (0.35 * w if is_gap else w)
        x = x1
        a, b = max(_px(x0), 0), min(_px(x1), width)
        if is_gap or b <= a:
            continue
        cols = np.arange(a, b, dtype=np.float32)
        flat_top = base - ground_h - max(floors - 1, 0) * floor_h
        if town.pitched_roofs:
            ridge = min(0.4 * w, 1.6 * floor_h)
            top[a:b] = flat_top - ridge * (1.0 - np.abs(cols - (x0 + x1) / 2) / (w / 2))
            roof_rgb[a:b] = town_roof
        else:
            top[a:b] = flat_top - 3.0 * scale
            roof_rgb[a:b] = _hsv(h_, s_, v_ * 0.6)
        roof_line[a:b] = flat_top
        facade[a:b] = _hsv(
            h_ + 0.07 * field[0] + tint[0], s_ + tint[1], v_ * (1.0 + 0.15 * field[1])
        )
        window_rgb[a:b] = np.array(town.window_rgb, dtype=np.float32) * light
        margin = 0.18 * w
        n_win = max(int((w - 2 * margin) / (street.window_spacing * scale)), 1)
        spacing = (w - 2 * margin) / n_win
        local = cols - x0 - margin
        inside = (local > 0) & (local < w - 2 * margin)
        win_col[a:b] = inside & (np.abs(np.mod(local, spacing) - spacing / 2) < 0.28 * spacing)
        door_x = x0 + margin + (int(door_slot * n_win) + 0.5) * spacing
        door_col[a:b] = np.abs(cols - door_x) < max(0.22 * spacing, 3.0 * scale)
        if is_shop:
            shop_col[a:b] = inside & ~door_col[a:b]
            sign_rgb[a:b] = _hsv(sign_hue, 0.7, 0.8)

    above_ground = base - ys  # (H, 1): height above the facade base
    building = (ys >= top[None, :]) & (ys < base)
    _fill(img, building, facade)
    _fill(img, building & (ys < roof_line[None, :]), roof_rgb)
    in_floor = np.mod(above_ground - ground_h, floor_h)
    upper = (above_ground > ground_h) & (ys > roof_line[None, :] + 2.0 * scale)
    window_rows = upper & (in_floor > 0.22 * floor_h) & (in_floor < 0.72 * floor_h)
    _fill(img, building & window_rows & win_col[None, :], window_rgb)
    # A darker string course at every floor gives the facade its horizontal rhythm.
    course = building & upper & (in_floor < 1.5 * scale)
    img[course] *= 0.8
    door = building & door_col[None, :] & (above_ground < 0.85 * ground_h)
    shop = building & shop_col[None, :] & (above_ground > 2.0) & (above_ground < 0.72 * ground_h)
    sign = (
        building
        & shop_col[None, :]
        & (above_ground >= 0.75 * ground_h)
        & (above_ground < 0.97 * ground_h)
    )
    _fill(img, shop, window_rgb * 1.2)
    _fill(img, sign, sign_rgb)
    _fill(img, door, facade * 0.35)


def _draw_tree(
    img: np.ndarray, x: float, ground: float, scale: float, green: np.ndarray, size: float
) -> None:
    trunk_h = 22.0 * scale * size
    radius = 16.0 * scale * size
    _rect(
        img,
        x - 2 * scale,
        ground - trunk_h,
        x + 2 * scale,
        ground,
        np.array([0.28, 0.2, 0.12], np.float32),
    )
    cy = ground - trunk_h - 0.6 * radius
    _ellipse(img, x, cy, radius, radius * 0.95, green)
    _ellipse(img, x - 0.25 * radius, cy - 0.3 * radius, 0.6 * radius, 0.55 * radius, green * 1.25)


def _draw_car(
    img: np.ndarray, rng: np.random.Generator, x: float, ground: float, scale: float
) -> None:
    length = rng.uniform(48.0, 70.0) * scale
    body_h = rng.uniform(12.0, 16.0) * scale
    colour = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.2, 0.95))
    glass = np.array([0.15, 0.18, 0.22], np.float32)
    _rect(img, x, ground - body_h, x + length, ground - 3 * scale, colour)
    _rect(img, x + 0.2 * length, ground - 1.8 * body_h, x + 0.8 * length, ground - body_h, colour)
    _rect(img, x + 0.25 * length, ground - 1.65 * body_h, x + 0.75 * length, ground - body_h, glass)
    for wheel_x in (x + 0.2 * length, x + 0.8 * length):
        _ellipse(
            img,
            wheel_x,
            ground - 3 * scale,
            5.5 * scale,
            5.5 * scale,
            np.array([0.05, 0.05, 0.05], np.float32),
        )


def _draw_pedestrian(
    img: np.ndarray, rng: np.random.Generator, x: float, ground: float, scale: float
) -> None:
    tall = rng.uniform(28.0, 40.0) * scale
    coat = _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.1, 0.8))
    _rect(
        img,
        x - 2.5 * scale,
        ground - 0.45 * tall,
        x + 2.5 * scale,
        ground,
        np.array([0.12, 0.12, 0.16], np.float32),
    )
    _ellipse(img, x, ground - 0.62 * tall, 4.5 * scale, 0.22 * tall, coat)
    _ellipse(
        img,
        x,
        ground - 0.9 * tall,
        3.2 * scale,
        3.6 * scale,
        _hsv(0.07, rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.9)),
    )


def render_scene(
    lat: float,
    lon: float,
    street: str | None,
    city: str | None,
    *,
    seed: int,
    size: tuple[int, int] = (256, 192),
    view: int = 0,
) -> Image.Image:
    """Draw the synthetic street scene of one place (``size`` is width, height in pixels).

    ``seed`` fixes the whole synthetic world (town and street styles, the local field) and the
    nuisance of each view; ``view`` picks another view of the same place (same buildings, other
    lighting, viewpoint, occluders and noise). The image's ``info["exif"]`` carries the synthetic
    marker; pass ``exif=image.info["exif"]`` when saving it yourself.
    """
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise InputError(f"Cannot draw a scene at lat={lat}, lon={lon}: not a WGS84 coordinate.")
    width, height = int(size[0]), int(size[1])
    if width < 32 or height < 32:
        raise InputError(f"Scene size must be at least 32 x 32 pixels, got {width} x {height}.")
    town_key, street_key = _style_keys(lat, lon, street, city)
    town = _town_style(seed, town_key)
    road = _street_style(seed, town_key, street_key)
    field = local_field(lat, lon, seed=seed)
    place = f"{lat:.7f},{lon:.7f}"
    # Separate streams so the number of buildings a view happens to show cannot shift the trees.
    layout = _rng(seed, "layout", town_key, street_key, place)
    furniture = _rng(seed, "furniture", town_key, street_key, place)
    nuisance = _rng(seed, "view", town_key, street_key, place, view)

    # Viewpoint: the camera drifts a little sideways, up/down and in/out between views.
    size_scale = height / 192.0
    scale = size_scale * (1.25 - 0.45 * road.depth) * nuisance.uniform(0.95, 1.05)
    road_h = height * (0.13 + 0.13 * road.depth)
    pave_h = height * (0.04 + 0.05 * road.setback)
    kerb = height - road_h + nuisance.uniform(-2.5, 2.5) * size_scale
    base = kerb - pave_h
    ys, xs = _grids(width, height)
    img = np.empty((height, width, 3), dtype=np.float32)

    # Sky: clear blue to hazy grey, shifted by the local field; clouds are per view.
    haze = 0.5 + 0.35 * field[2] + nuisance.normal(0.0, 0.08)
    sky_top = _hsv(0.6 + 0.02 * field[2], 0.55 * (1 - haze) + 0.08, 0.85)
    sky_low = _hsv(0.58 + 0.04 * field[2], 0.25 * (1 - haze) + 0.05, 0.95)
    ramp = np.clip(ys / max(base, 1.0), 0.0, 1.0)[..., None]
    img[:] = sky_top + (sky_low - sky_top) * ramp
    for _ in range(int(nuisance.integers(0, 4))):
        _ellipse(
            img,
            nuisance.uniform(0, width),
            nuisance.uniform(0, 0.35 * base),
            nuisance.uniform(15, 45) * size_scale,
            nuisance.uniform(5, 12) * size_scale,
            np.array([0.97, 0.97, 0.98], np.float32),
            alpha=float(nuisance.uniform(0.4, 0.8)),
        )

    # Backdrop: hills (town) coloured by the local vegetation field.
    green = _hsv(0.27 + 0.05 * field[3], 0.45 + 0.15 * field[3], 0.45)
    hill_phase = float(furniture.uniform(0, 2 * math.pi))
    hill_top = base * (
        1.0 - town.hill_height * (0.6 + 0.4 * np.sin(xs / (40.0 * scale) + hill_phase))
    )
    _fill(img, ys >= hill_top, green * 0.8 + sky_low * 0.2)

    x_start = (-furniture.uniform(0.0, road.building_width) + nuisance.uniform(-8, 8)) * scale
    _draw_buildings(img, layout, town, road, field, base, scale, x_start)

    # Ground: front gardens, pavement, kerb, road with markings.
    b, k = _px(base), _px(kerb)
    pavement = np.float32(0.62 + 0.1 * field[1])
    img[b:k] = pavement
    if road.setback > 0.6:
        _rect(img, 0, base - 4 * scale, width, base + 0.4 * pave_h, green * 0.7)
    img[k : k + max(int(2 * size_scale), 1)] = 0.8
    asphalt = np.linspace(0.3, 0.22, max(height - k - 2, 0), dtype=np.float32)[:, None, None]
    img[k + 2 :] = asphalt
    mid = _px((k + height) / 2)
    dash = np.mod(xs[0] + furniture.uniform(0, 40), 40.0 * scale) < 22.0 * scale
    img[mid : mid + max(int(2 * size_scale), 1), dash] = 0.9
    if road.double_yellow:
        for offset in (4, 7):
            row = k + int(offset * size_scale)
            img[row : row + 1] = np.array([0.85, 0.72, 0.1], np.float32)

    # Street furniture, stable for a place: trees and lamp posts on the pavement.
    tree_count = furniture.poisson(road.tree_rate * width / 256.0 * (1.0 + 0.4 * field[3]))
    for _ in range(int(tree_count)):
        _draw_tree(
            img,
            furniture.uniform(0, width),
            kerb - 0.3 * pave_h,
            scale,
            green,
            float(furniture.uniform(0.8, 1.3)),
        )
    for _ in range(int(furniture.poisson(road.pole_rate * width / 256.0))):
        px = float(furniture.uniform(0, width))
        pole = np.array([0.2, 0.22, 0.24], np.float32)
        _rect(img, px - scale, kerb - 62 * scale, px + scale, kerb - 0.2 * pave_h, pole)
        _rect(img, px - scale, kerb - 62 * scale, px + 9 * scale, kerb - 60 * scale, pole)

    # Occluders, different in every view; cars last since they are nearest the camera.
    for _ in range(int(nuisance.poisson(0.8))):
        _draw_pedestrian(img, nuisance, nuisance.uniform(0, width), kerb - 0.15 * pave_h, scale)
    for _ in range(int(nuisance.poisson(road.car_rate))):
        _draw_car(img, nuisance, nuisance.uniform(-30, width), kerb + 0.35 * road_h, scale)

    # Photometric nuisance: exposure, colour temperature, side light, gamma, sensor noise.
    warmth = nuisance.normal(0.0, 0.05)
    gain = nuisance.uniform(0.88, 1.12) * np.array([1 + warmth, 1.0, 1 - warmth], np.float32)
    side = 1.0 + nuisance.uniform(-0.15, 0.15) * (xs[..., None] / width - 0.5)
    img *= gain
    img *= side
    np.clip(img, 0.0, 1.0, out=img)
    np.power(img, np.float32(nuisance.uniform(0.9, 1.1)), out=img)
    noise = nuisance.standard_normal(img.shape, dtype=np.float32)
    img += noise * np.float32(nuisance.uniform(0.004, 0.03))
    pixels = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    blur = float(nuisance.uniform(0.0, 0.9))
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur * size_scale))
    image.info["exif"] = _exif(lat, lon).tobytes()
    return image


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600 * 10000)
    return IFDRational(degrees), IFDRational(minutes), IFDRational(seconds, 10000)


def _exif(lat: float, lon: float) -> Image.Exif:
    """EXIF marking the image as synthetic, with the GPS position of the place it stands for."""
    exif = Image.Exif()
    exif[_EXIF_DESCRIPTION] = f"{SYNTHETIC_MARKER}: drawn, not photographed (swclip_core)"
    exif[_EXIF_SOFTWARE] = f"{SYNTHETIC_MARKER} generator v{GENERATOR_VERSION}"
    gps = exif.get_ifd(_EXIF_GPS_IFD)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = _dms(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = _dms(lon)
    return exif


# --------------------------------------------------------------------------------------------------
# Writing a dataset


def _content_key(
    seed: int,
    lat: float,
    lon: float,
    street: object,
    city: object,
    size: tuple[int, int],
    view: int,
) -> str:
    text = repr((GENERATOR_VERSION, seed, float(lat), float(lon), street, city, tuple(size), view))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def generate_scenes(
    places: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 192),
    views_per_place: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Write ``views_per_place`` synthetic JPEG scenes per place into ``out_dir``.

    ``places`` needs ``lat`` and ``lon`` columns; ``street``, ``city``, ``country`` and
    ``place_id`` (used in the sample id, else the row index) are optional. File names carry a key
    of everything that determines the image, so a re-run skips files that already exist and a
    change of seed, size or generator writes new ones. Each file is written under a temporary name
    and renamed when complete. ``progress(done, total)`` is called after every image.

    Returns one row per image: ``sample_id, image_path, lat, lon, street, city, country,
    synthetic, place_id, view`` (``synthetic`` is always True).
    """
    for column in ("lat", "lon"):
        if column not in places.columns:
            raise InputError(f"The place table has no '{column}' column; read it with load_places.")
    if views_per_place < 1:
        raise InputError(f"views_per_place must be at least 1, got {views_per_place}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = places["place_id"] if "place_id" in places.columns else pd.Series(places.index)
    rows = []
    total = len(places) * views_per_place
    done = 0
    for place_id, record in zip(ids.tolist(), places.to_dict("records"), strict=True):
        lat, lon = float(record["lat"]), float(record["lon"])
        street = _text_or_none(record.get("street"))
        city = _text_or_none(record.get("city"))
        country = _text_or_none(record.get("country"))
        for view in range(views_per_place):
            sample_id = f"{place_id}_v{view}"
            key = _content_key(seed, lat, lon, street, city, size, view)
            path = out / f"syn_{sample_id}_{key}.jpg"
            if not path.exists():
                _write_scene(path, lat, lon, street, city, seed=seed, size=size, view=view)
            rows.append(
                {
                    "sample_id": sample_id,
                    "image_path": str(path),
                    "lat": lat,
                    "lon": lon,
                    "street": street,
                    "city": city,
                    "country": country,
                    "synthetic": True,
                    "place_id": place_id,
                    "view": view,
                }
            )
            done += 1
            if progress is not None:
                progress(done, total)
    return pd.DataFrame(
        rows,
        columns=[
            "sample_id",
            "image_path",
            "lat",
            "lon",
            "street",
            "city",
            "country",
            "synthetic",
            "place_id",
            "view",
        ],
    )


def _write_scene(
    path: Path,
    lat: float,
    lon: float,
    street: str | None,
    city: str | None,
    *,
    seed: int,
    size: tuple[int, int],
    view: int,
) -> None:
    image = render_scene(lat, lon, street, city, seed=seed, size=size, view=view)
    # JPEG quality is one more per-view nuisance (compression artefacts differ between cameras).
    quality = int(_rng(seed, "jpeg", f"{lat:.7f},{lon:.7f}", view).integers(70, 93))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, exif=image.info["exif"])
    write_bytes(path, buffer.getvalue())
