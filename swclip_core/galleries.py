"""Where a gallery's locations come from: the training run, or a user's file of locations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .captions import CaptionTemplate, captions_for
from .errors import InputError

LABEL_COLUMNS = ("street", "city", "country")


def training_gallery(run_dir: Path) -> pd.DataFrame:
    """The locations and captions a model was trained on (the default, open-set gallery)."""
    path = Path(run_dir) / "train_samples.csv"
    if not path.exists():
        raise InputError(
            f"{run_dir} has no train_samples.csv; pass --gallery with a locations file"
        )
    return pd.read_csv(path, dtype={"sample_id": str})


def gallery_from_file(path: str | Path, template: CaptionTemplate) -> pd.DataFrame:
    """A gallery from a CSV with lat/lon columns or a point layer; street/city/country if present.

    Images are not needed: a gallery is a list of places.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"gallery file {path} does not exist")
    if path.suffix.lower() in {".csv", ".txt"}:
        table = pd.read_csv(path)
        lower = {c.lower(): c for c in table.columns}
        lat_col = next((lower[c] for c in ("lat", "latitude") if c in lower), None)
        lon_col = next((lower[c] for c in ("lon", "lng", "longitude") if c in lower), None)
        if lat_col is None or lon_col is None:
            raise InputError(
                f"gallery {path.name} needs lat and lon columns (WGS84 degrees); "
                f"it has {list(table.columns)}"
            )
        table = table.rename(columns={lat_col: "lat", lon_col: "lon"})
    else:
        import geopandas as gpd

        layer = gpd.read_file(path)
        if layer.crs is None:
            raise InputError(
                f"gallery layer {path.name} has no CRS; set one in QGIS and save again"
            )
        if not (layer.geom_type == "Point").all():
            raise InputError(f"gallery layer {path.name} must hold points")
        layer = layer.to_crs("EPSG:4326")
        table = pd.DataFrame(layer.drop(columns="geometry")).assign(
            lat=layer.geometry.y.to_numpy(), lon=layer.geometry.x.to_numpy()
        )
    table = table.dropna(subset=["lat", "lon"]).reset_index(drop=True)
    for column in LABEL_COLUMNS:
        if column not in table:
            table[column] = None
    if table.empty:
        raise InputError(f"gallery {path.name} holds no location with coordinates")
    return table.assign(caption=captions_for(table, template))
