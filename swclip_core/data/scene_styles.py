"""The look of a synthetic street scene at a place: each town's palette and building style, each
street's character, and the smooth local field that shifts appearance over a few kilometres.

All of it is drawn from seeded generators keyed by names, so the same seed and place give the same
style on every run; :mod:`swclip_core.data.scenes` paints with it.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from swclip_core.data.places import name_key
from swclip_core.geo import EARTH_RADIUS_M

# Bump when the drawing changes, so cached files from an older generator are not reused.
GENERATOR_VERSION = 1

_TOWN_CELL_M = 4000.0
_STREET_CELL_M = 250.0


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and names, stable across runs (unlike ``hash``)."""
    text = "|".join(str(p) for p in (GENERATOR_VERSION, seed, *parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def hsv_colour(h: float, s: float, v: float) -> np.ndarray:
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
class TownStyle:
    palette: tuple[tuple[float, float, float], ...]  # facade colours as HSV
    min_floors: int
    max_floors: int
    pitched_roofs: bool
    roof_hsv: tuple[float, float, float]
    window_rgb: tuple[float, float, float]
    shop_share: float
    hill_height: float  # backdrop height as a share of the facade base height


@dataclass(frozen=True)
class StreetStyle:
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
def town_style(seed: int, town_key: str) -> TownStyle:
    rng = seeded_rng(seed, "town", town_key)
    hue = rng.random()
    sat = rng.uniform(0.1, 0.55)
    value = rng.uniform(0.6, 0.9)
    # Colours of one town stay close to its hue and brightness, so towns are told apart by palette.
    palette = tuple(
        (hue + rng.normal(0.0, 0.05), sat * rng.uniform(0.6, 1.3), value + rng.uniform(-0.1, 0.1))
        for _ in range(5)
    )
    min_floors = int(rng.integers(1, 4))
    return TownStyle(
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
            for c in hsv_colour(
                rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.45)
            )
        ),
        shop_share=float(rng.uniform(0.0, 0.6)),
        hill_height=float(rng.uniform(0.0, 0.45)),
    )


@lru_cache(maxsize=16384)
def street_style(seed: int, town_key: str, street_key: str) -> StreetStyle:
    town = town_style(seed, town_key)
    rng = seeded_rng(seed, "street", town_key, street_key)
    n_colours = int(rng.integers(1, 4))
    return StreetStyle(
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
    rng = seeded_rng(seed, "field")
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


def style_keys(lat: float, lon: float, street: str | None, city: str | None) -> tuple[str, str]:
    x, y = _metres(lat, lon)
    town = name_key(city)
    if not town:
        town = f"cell:{math.floor(x / _TOWN_CELL_M)},{math.floor(y / _TOWN_CELL_M)}"
    road = name_key(street)
    if not road:
        road = f"cell:{math.floor(x / _STREET_CELL_M)},{math.floor(y / _STREET_CELL_M)}"
    return town, road
