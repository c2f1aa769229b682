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
build. This module writes a data set of scenes; the places come from :mod:`swclip_core.data.places`
and each picture from :func:`swclip_core.data.scenes.render_scene`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from swclip_core.columns import clean_text
from swclip_core.data.scenes import GENERATOR_VERSION, render_scene, seeded_rng
from swclip_core.errors import InputError
from swclip_core.io import write_bytes

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
        street = clean_text(record.get("street"))
        city = clean_text(record.get("city"))
        country = clean_text(record.get("country"))
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
    quality = int(seeded_rng(seed, "jpeg", f"{lat:.7f},{lon:.7f}", view).integers(70, 93))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, exif=image.info["exif"])
    write_bytes(path, buffer.getvalue())
