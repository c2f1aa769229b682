"""The records a sample reader collects, and the checks every reader ends in.

Whatever the input (CSV, vector layer, photo folder), a reader fills :class:`Records`; then
:func:`records_to_samples` checks each record (id, image file, coordinate, optionally a decode of
the image) and builds the sample table. A record that fails a check is skipped and listed in
``gdf.attrs["skipped"]`` with its reason, so the CLI, the worker and the plugin treat bad records
alike.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from PIL import Image

from swclip_core.columns import SAMPLE_COLUMNS
from swclip_core.data.images import DECODE_ERRORS, load_image
from swclip_core.errors import InputError, SwclipError
from swclip_core.geo import WGS84

TEXT_FIELDS = ("street", "city", "country", "region")
# How many skipped records an error message names before it only counts them.
REASONS_IN_ERROR = 5
# A decode this small still reads the whole file (so truncation shows) and JPEG draft makes it
# cheap: a few milliseconds per photo, against seconds of training time lost to a bad file.
_VERIFY_SIDE = 64


@dataclass
class Records:
    """Parallel per-record lists collected by a reader, before the shared checks."""

    labels: list[str] = field(default_factory=list)  # how a skipped record is named to the user
    ids: list[str | None] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    text: dict[str, list[str | None]] = field(
        default_factory=lambda: {name: [] for name in TEXT_FIELDS}
    )
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Coordinates that were given in a CRS only by assumption (no CRS named anywhere).
    crs_assumed: bool = False
    # The CRS the input's coordinates were in (crs_text form), so outputs can be written back in it.
    source_crs: str = WGS84


def _check_unique(ids: Iterable[str | None], source: Path, seen: set[str] | None = None) -> None:
    """Refuse repeated ids, also against the ``seen`` ids of earlier chunks (which it extends)."""
    counts = Counter(i for i in ids if i is not None)
    duplicates = sorted(i for i, n in counts.items() if n > 1 or (seen and i in seen))
    if seen is not None:
        seen.update(counts)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        raise InputError(
            f"Duplicate sample ids in {source}: {shown}{more}. Every sample needs its own id "
            "(choose another column with --id-column, or rename the files)."
        )


def _image_problem(path: str) -> str | None:
    """Why the image cannot be used, or None. Verify first (cheap), then decode a small copy."""
    try:
        with Image.open(path) as image:
            image.verify()
        load_image(path, max_side=_VERIFY_SIDE)
    except (SwclipError, *DECODE_ERRORS) as error:
        return f"unreadable image {path}: {error}"
    return None


def _coordinate_problem(
    lat: float, lon: float, crs_assumed: bool, require_location: bool = True
) -> str | None:
    if math.isnan(lat) and math.isnan(lon) and not require_location:
        return None
    if math.isnan(lat) or math.isnan(lon):
        return "missing, non-numeric or untransformable coordinate"
    hint = " (projected coordinates? give their CRS with --crs)" if crs_assumed else ""
    if not -90 <= lat <= 90:
        return f"latitude {lat:g} outside -90..90{hint}"
    if not -180 <= lon <= 180:
        return f"longitude {lon:g} outside -180..180{hint}"
    return None


def records_to_samples(
    records: Records,
    base_dir: Path,
    source: Path,
    check_images: bool,
    require_location: bool = True,
    seen_ids: set[str] | None = None,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    """The sample table (:data:`SAMPLE_COLUMNS`, EPSG:4326) of the ``records`` that pass the
    checks; the others are listed in ``attrs["skipped"]``. Relative image paths resolve against
    ``base_dir``; ``source`` names the input in messages; ``seen_ids`` carries the ids of earlier
    chunks; an input with no usable record raises :class:`InputError` unless ``allow_empty``."""
    _check_unique(records.ids, source, seen_ids)
    skipped = list(records.skipped)
    kept: list[int] = []
    paths: list[str] = []
    image_problems: dict[str, str | None] = {}  # a file listed many times is decoded once
    for i, label in enumerate(records.labels):
        reason = None
        image = records.images[i]
        if records.ids[i] is None:
            reason = "empty sample id"
        elif image is None:
            reason = "no image path"
        else:
            candidate = Path(image).expanduser()
            image = os.path.abspath(candidate if candidate.is_absolute() else base_dir / candidate)
            if not os.path.isfile(image):
                reason = f"image file not found: {image}"
        reason = reason or _coordinate_problem(
            records.lat[i], records.lon[i], records.crs_assumed, require_location
        )
        if reason is None and check_images:
            if image not in image_problems:
                image_problems[image] = _image_problem(image)
            reason = image_problems[image]
        if reason is not None:
            skipped.append({"record": label, "reason": reason})
            continue
        kept.append(i)
        paths.append(image)

    if not kept and not allow_empty:
        raise no_usable_record(source, len(records.labels) + len(records.skipped), skipped)

    lat = np.array([records.lat[i] for i in kept], dtype=np.float64)
    lon = np.array([records.lon[i] for i in kept], dtype=np.float64)
    data = {
        "sample_id": pd.Series([records.ids[i] for i in kept], dtype=object),
        "image_path": pd.Series(paths, dtype=object),
        "lat": lat,
        "lon": lon,
    }
    for name in TEXT_FIELDS:
        data[name] = pd.Series([records.text[name][i] for i in kept], dtype=object)
    points = gpd.points_from_xy(lon, lat)
    points[np.isnan(lat)] = None  # an unknown position has no geometry
    gdf = gpd.GeoDataFrame(data, geometry=points, crs=WGS84)
    gdf = gdf[list(SAMPLE_COLUMNS)]
    gdf.attrs["skipped"] = skipped
    gdf.attrs["source_crs"] = records.source_crs
    return gdf


def no_usable_record(source: Path, total: int, skipped: list[dict[str, str]]) -> InputError:
    """The error for an input of ``total`` records none of which could be used."""
    return InputError(f"No usable record in {source} ({total} read). {skipped_reasons(skipped)}")


def skipped_reasons(skipped: list[dict[str, str]]) -> str:
    """The first skipped records with their reasons, for an error message that has to say why."""
    shown = "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:REASONS_IN_ERROR])
    more = "" if len(skipped) <= REASONS_IN_ERROR else f"; ... ({len(skipped)} in all)"
    return shown + more
