"""Results as GIS data: a GeoPackage of predicted points and error lines, and a PNG map.

Every file is written under a temporary name in the destination folder and renamed when complete, so
an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from shapely import linestrings, points

WGS84 = "EPSG:4326"
POINTS_LAYER = "predicted_points"
LINES_LAYER = "error_lines"
SKIPPED_LAYER = "skipped_records"
# GeoPackage 1.2: the version that the GDAL of QGIS 3.22 (Debian 12) reads without a warning;
# pyogrio's newer GDAL would otherwise write 1.4.
GPKG_OPTIONS = {"VERSION": "1.2"}


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def prediction_layers(
    predictions: pd.DataFrame, crs: str = WGS84
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Predicted points and true → predicted error lines, in ``crs``."""
    attributes = predictions.drop(columns=["image_path"], errors="ignore").reset_index(drop=True)
    pred_xy = np.column_stack([predictions["pred_lon"], predictions["pred_lat"]])
    true_xy = np.column_stack([predictions["true_lon"], predictions["true_lat"]])
    point_layer = gpd.GeoDataFrame(
        attributes.assign(image_path=predictions["image_path"].to_numpy()),
        geometry=points(pred_xy),
        crs=WGS84,
    )
    line_keep = ["sample_id", "error_m", "true_lat", "true_lon", "pred_lat", "pred_lon"]
    line_layer = gpd.GeoDataFrame(
        attributes[[c for c in line_keep if c in attributes]],
        geometry=linestrings(np.stack([true_xy, pred_xy], axis=1)),
        crs=WGS84,
    )
    return point_layer.to_crs(crs), line_layer.to_crs(crs)


def skipped_table(skipped: list[dict]) -> pd.DataFrame:
    """The records an input step could not use, with the reason (one row each)."""
    return pd.DataFrame(
        [{"record": str(s.get("record")), "reason": str(s.get("reason"))} for s in skipped],
        columns=["record", "reason"],
    )


def write_predictions_gpkg(
    predictions: pd.DataFrame,
    path: str | Path,
    *,
    crs: str = WGS84,
    skipped: list[dict] | None = None,
) -> Path:
    """One GeoPackage with the layers predicted_points, error_lines and skipped_records."""
    path = Path(path)
    point_layer, line_layer = prediction_layers(predictions, crs)
    with atomic_path(path) as tmp:
        pyogrio.write_dataframe(
            point_layer, tmp, layer=POINTS_LAYER, driver="GPKG", dataset_options=GPKG_OPTIONS
        )
        pyogrio.write_dataframe(line_layer, tmp, layer=LINES_LAYER, driver="GPKG", append=True)
        table = skipped_table(skipped or [])
        pyogrio.write_dataframe(table, tmp, layer=SKIPPED_LAYER, driver="GPKG", append=True)
    return path


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """A CSV written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def format_distance(metres: float) -> str:
    """``850 m`` below a kilometre, ``12.3 km`` above."""
    return f"{metres:,.0f} m" if metres < 1000 else f"{metres / 1000:,.1f} km"


def render_error_map(predictions: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """A PNG map: true locations, predictions coloured by error, and the lines between them."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # Debian's python3-matplotlib (a QGIS dependency) leaves an mpl_toolkits that a newer
        # matplotlib cannot use for 3-D axes; these maps are 2-D.
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

    lat0 = float(np.mean(predictions["true_lat"]))
    fig, ax = plt.subplots(figsize=(8, 7), dpi=120)
    for row in predictions.itertuples():
        ax.plot(
            [row.true_lon, row.pred_lon],
            [row.true_lat, row.pred_lat],
            color="0.55",
            linewidth=0.7,
            zorder=1,
        )
    ax.scatter(
        predictions["true_lon"],
        predictions["true_lat"],
        s=22,
        facecolors="none",
        edgecolors="#1b9e77",
        linewidths=1.2,
        label="true location",
        zorder=2,
    )
    errors = np.maximum(predictions["error_m"].to_numpy(dtype=float), 1.0)
    # Errors span metres to kilometres: a log scale keeps both ends readable.
    norm = LogNorm(vmin=errors.min(), vmax=max(errors.max(), errors.min() * 10))
    sc = ax.scatter(
        predictions["pred_lon"],
        predictions["pred_lat"],
        s=18,
        c=errors,
        cmap="plasma",
        norm=norm,
        edgecolors="black",
        linewidths=0.3,
        label="prediction (colour = error)",
        zorder=3,
    )
    fig.colorbar(sc, ax=ax, shrink=0.75, label="error (m, log scale)")
    # Degrees of longitude shrink with latitude: keep the map's shape true at the data's latitude.
    ax.set_aspect(1.0 / max(np.cos(np.radians(lat0)), 1e-6))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    median = format_distance(float(np.median(predictions["error_m"])))
    ax.set_title(f"{title}\nmedian error {median}, n = {len(predictions)}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
