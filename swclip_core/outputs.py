"""Results as GIS data: a GeoPackage of predicted points, error lines, a region choropleth and
the skipped records, each styled; an error-surface GeoTIFF (:mod:`swclip_core.surface`); a PNG map
(:mod:`swclip_core.error_map`).

Every file is written under a temporary name in the destination folder and renamed when complete, so
an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import math
import sqlite3
import warnings
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from shapely import linestrings, points

# The error map and the error surface (the ``as`` imports) live in modules of their own; they are
# re-exported so that every output is one import away.
from swclip_core.error_map import format_distance as format_distance
from swclip_core.error_map import map_clusters as map_clusters
from swclip_core.error_map import render_error_map as render_error_map
from swclip_core.errors import InputError
from swclip_core.io import GPKG_OPTIONS, atomic_path, refuse_foreign_layers, write_csv
from swclip_core.surface import write_error_surface as write_error_surface

WGS84 = "EPSG:4326"
POINTS_LAYER = "predicted_points"
LINES_LAYER = "error_lines"
SKIPPED_LAYER = "skipped_records"
CHOROPLETH_LAYER = "region_choropleth"
FAIRNESS_LAYER = "fairness_summary"
# One QML per styled layer, embedded as the layer's default style (QGIS's layer_styles table).
STYLES_DIR = Path(__file__).resolve().parent.parent / "resources" / "styles"
STYLED_LAYERS = (POINTS_LAYER, LINES_LAYER, CHOROPLETH_LAYER)
STYLES_TABLE = "layer_styles"
#: Every layer of a predictions GeoPackage: what it may hold when a new one replaces it.
PREDICTION_LAYERS = (
    POINTS_LAYER,
    LINES_LAYER,
    SKIPPED_LAYER,
    CHOROPLETH_LAYER,
    FAIRNESS_LAYER,
    STYLES_TABLE,
)


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
    line_keep = ["sample_id", "error_m", "true_lat", "true_lon", "pred_lat", "pred_lon", "region",
                 "in_training"]  # fmt: skip
    known = np.isfinite(true_xy).all(axis=1)  # a photo localized from scratch has no error line
    line_layer = gpd.GeoDataFrame(
        attributes.loc[known, [c for c in line_keep if c in attributes]],
        geometry=linestrings(np.stack([true_xy[known], pred_xy[known]], axis=1)),
        crs=WGS84,
    )
    return point_layer.to_crs(crs), line_layer.to_crs(crs)


def skipped_table(skipped: list[dict]) -> pd.DataFrame:
    """The records an input step could not use, with the reason (one row each)."""
    return pd.DataFrame(
        [{"record": str(s.get("record")), "reason": str(s.get("reason"))} for s in skipped],
        columns=["record", "reason"],
    )


def _region_polygons(regions: gpd.GeoDataFrame, region_field: str) -> gpd.GeoDataFrame:
    """The region layer, checked: a CRS, the name field, polygons only."""
    if not isinstance(regions, gpd.GeoDataFrame) or regions.empty:
        raise InputError("The region layer is empty: give a polygon layer with one row per region.")
    if region_field not in regions:
        fields = ", ".join(c for c in regions.columns if c != regions.geometry.name)
        raise InputError(
            f"The region layer has no field {region_field!r}; its fields are: {fields}. Choose "
            "the field that names the regions."
        )
    if regions.crs is None:
        raise InputError(
            "The region layer has no CRS; set it (QGIS: Layer > Set CRS) and save it again."
        )
    kinds = set(regions.geometry.dropna().geom_type) - {"Polygon", "MultiPolygon"}
    if kinds:
        raise InputError(
            f"The region layer must hold polygons, found {', '.join(sorted(kinds))} geometries."
        )
    return regions


def _regions_at_true_locations(
    predictions: pd.DataFrame, polygons: gpd.GeoDataFrame, region_field: str
) -> np.ndarray:
    """The name of the first polygon containing each true location (None outside every polygon)."""
    for column in ("true_lat", "true_lon"):
        if column not in predictions:
            raise InputError(
                f"The predictions have neither a 'region' column nor {column!r}: regions are "
                "assigned by the true location of each sample."
            )
    in_wgs84 = polygons.to_crs(WGS84)
    sites = points(predictions["true_lon"].to_numpy(float), predictions["true_lat"].to_numpy(float))
    sample_idx, polygon_idx = in_wgs84.sindex.query(sites, predicate="intersects")
    # A point on a shared border intersects both polygons: it belongs to the first one.
    first = pd.Series(polygon_idx, index=sample_idx).groupby(level=0).min()
    labels = np.full(len(predictions), None, dtype=object)
    labels[first.index.to_numpy()] = in_wgs84[region_field].to_numpy()[first.to_numpy()]
    return labels


def region_choropleth(
    predictions: pd.DataFrame,
    regions: gpd.GeoDataFrame,
    *,
    region_field: str,
    radius_m: float = 1000.0,
) -> gpd.GeoDataFrame:
    """Per region polygon: how well the samples inside it were localized.

    Samples belong to the region named in the predictions' ``region`` column, or, when it is
    missing or empty, to the polygon that contains their TRUE location. Columns: ``region`` (the
    value of ``region_field``), ``n``, ``median_error_m``, ``mean_error_m``, ``acc_at_radius``
    (share of errors ≤ ``radius_m``), ``r_at_1`` (share with ``rank_of_truth == 0``; NaN unless
    every sample has a rank ≥ 0, i.e. the closed protocol), and the deviation of the regional median
    from the overall median error of all predictions, ``median_error_ratio`` (regional / overall)
    and ``median_error_diff_m`` (regional − overall). Figures come from
    :func:`swclip_core.metrics.region_fairness`. Regions without samples keep ``n = 0`` and NaN
    figures; polygons sharing a name share the figures. ``attrs["fairness"]`` holds the disparity
    figures of ``region_fairness`` plus ``overall_median_error_m``, ``radius_m``,
    ``regions_with_samples``, ``regions_without_samples`` and ``samples_without_region``.
    The result keeps the region layer's CRS.
    """
    # metrics imports torch; keep this module light for callers that only write layers.
    from swclip_core.metrics import region_fairness

    polygons = _region_polygons(regions, region_field).reset_index(drop=True)
    if "error_m" not in predictions:
        raise InputError(
            "The predictions have no error_m column: a choropleth needs the true coordinates "
            "of the samples."
        )
    scored = predictions[np.isfinite(predictions["error_m"].to_numpy(dtype=float))]
    if "region" in scored and scored["region"].notna().any():
        labels = scored["region"].to_numpy(dtype=object)
    else:
        labels = _regions_at_true_locations(scored, polygons, region_field)
    errors = scored["error_m"].to_numpy(dtype=float)
    hits = None
    if "rank_of_truth" in scored and len(scored) and (scored["rank_of_truth"] >= 0).all():
        hits = scored["rank_of_truth"].to_numpy() == 0
    table, disparity = region_fairness(labels, errors, radius_m=radius_m, hit_at_1=hits)
    # Match by text so that a region code read as 7 from one layer and "7" from another agree.
    figures = table.set_index(table["region"].map(str)).reindex(polygons[region_field].map(str))
    overall = float(np.median(errors)) if errors.size else math.nan
    median = figures["median_error_m"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = median / overall if overall > 0 else np.full(median.shape, np.nan)
    layer = gpd.GeoDataFrame(
        {
            "region": polygons[region_field].to_numpy(),
            "n": figures["n"].fillna(0).astype(int).to_numpy(),
            "median_error_m": median,
            "mean_error_m": figures["mean_error_m"].to_numpy(dtype=float),
            "acc_at_radius": figures["acc_at_radius"].to_numpy(dtype=float),
            "r_at_1": figures["r_at_1"].to_numpy(dtype=float),
            "median_error_ratio": ratio,
            "median_error_diff_m": median - overall,
        },
        geometry=polygons.geometry.to_numpy(),
        crs=polygons.crs,
    )
    matched = table["region"].map(str).isin(set(polygons[region_field].map(str)))
    layer.attrs["fairness"] = {
        **disparity,
        "overall_median_error_m": overall,
        "radius_m": float(radius_m),
        "regions_with_samples": int(matched.sum()),
        "regions_without_samples": int(polygons[region_field].map(str).nunique() - matched.sum()),
        "samples_without_region": int(len(scored) - table.loc[matched, "n"].sum()),
    }
    return layer


FAIRNESS_MEANINGS = {
    "median_error_max_min_ratio": "largest / smallest regional median error",
    "median_error_cv": "coefficient of variation of the regional median errors",
    "mean_error_gini": "Gini coefficient of the regional mean errors (0 = all equal)",
    "overall_median_error_m": "median error of all predictions (m)",
    "radius_m": "radius of acc_at_radius (m)",
    "regions_with_samples": "regions holding at least one sample",
    "regions_without_samples": "regions without a sample (n = 0)",
    "samples_without_region": "samples outside every region or with an unmatched region",
}


def fairness_table(fairness: dict[str, float]) -> pd.DataFrame:
    """The disparity figures of :func:`region_choropleth` as rows ``figure, value, meaning``."""
    return pd.DataFrame(
        [
            {"figure": k, "value": float(v), "meaning": FAIRNESS_MEANINGS.get(k, "")}
            for k, v in fairness.items()
        ],
        columns=["figure", "value", "meaning"],
    )


# The layer_styles table exactly as QGIS 3.22 creates it in a GeoPackage
# (QgsOgrProviderUtils / saveStyle; checked with QgsVectorLayer.saveStyleToDatabase).
LAYER_STYLES_DDL = (
    'CREATE TABLE IF NOT EXISTS "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
    '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
    '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
    '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
    "\"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)


def embed_default_styles(gpkg: Path, layers: tuple[str, ...]) -> None:
    """Store ``resources/styles/<layer>.qml`` as the default QGIS style of each layer present.

    QGIS applies a layer's default style from the GeoPackage's ``layer_styles`` table when the
    layer is added; the table is registered in ``gpkg_contents`` as attributes so that GDAL and
    QGIS list it like any other table.
    """
    with closing(sqlite3.connect(gpkg)) as db, db:
        geometry_columns = dict(
            db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall()
        )
        db.execute(LAYER_STYLES_DDL)
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
            "last_change, srs_id) VALUES ('layer_styles', 'attributes', 'layer_styles', '', "
            "strftime('%Y-%m-%dT%H:%M:%fZ','now'), 0)"
        )
        for layer in layers:
            qml = STYLES_DIR / f"{layer}.qml"
            if layer not in geometry_columns:
                continue
            if not qml.is_file():
                warnings.warn(f"No style {qml}: {layer} keeps QGIS's default look.", stacklevel=2)
                continue
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, "
                "strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                (
                    layer,
                    geometry_columns[layer],
                    layer,
                    qml.read_text(encoding="utf-8"),
                    f"SW-CLIP default style ({qml.name})",
                ),
            )


#: What the region figures, the error surface and the map need of each prediction: all that is
#: kept of a layer written chunk by chunk (:func:`write_prediction_chunks`).
SUMMARY_COLUMNS = (
    "sample_id",
    "true_lat",
    "true_lon",
    "pred_lat",
    "pred_lon",
    "error_m",
    "rank_of_truth",
    "region",
)


def write_predictions_gpkg(
    predictions: pd.DataFrame,
    path: str | Path,
    *,
    crs: str = WGS84,
    skipped: list[dict] | None = None,
    regions: gpd.GeoDataFrame | None = None,
    region_field: str | None = None,
    radius_m: float = 1000.0,
) -> Path:
    """One GeoPackage with the layers predicted_points, error_lines and skipped_records, and,
    when ``regions`` (a polygon layer) and its ``region_field`` are given, region_choropleth and
    the table fairness_summary (see :func:`region_choropleth`). Point, line and choropleth layers
    carry their QML style from ``resources/styles`` as the default style.
    """
    write_prediction_chunks(
        [predictions],
        path,
        crs=crs,
        skipped=skipped,
        regions=regions,
        region_field=region_field,
        radius_m=radius_m,
    )
    return Path(path)


def write_prediction_chunks(
    chunks: Iterable[pd.DataFrame],
    path: str | Path,
    *,
    crs: str = WGS84,
    skipped: list[dict] | None = None,
    regions: gpd.GeoDataFrame | None = None,
    region_field: str | None = None,
    radius_m: float = 1000.0,
) -> pd.DataFrame:
    """:func:`write_predictions_gpkg` for predictions arriving in chunks (e.g. a layer larger than
    memory, localized piece by piece): each chunk's points and lines are appended as it comes, and
    only its :data:`SUMMARY_COLUMNS` are kept, which this returns for the whole layer. ``skipped``
    is read once the chunks are exhausted, so the producer of the chunks may still add to it.
    The file appears, complete, only when every chunk is written.
    """
    path = Path(path)
    if regions is not None and not region_field:
        raise InputError("A region layer needs region_field: the field that names the regions.")
    refuse_foreign_layers(path, PREDICTION_LAYERS)
    kept = []
    with atomic_path(path) as tmp:
        for predictions in chunks:
            if predictions.empty:
                continue
            point_layer, line_layer = prediction_layers(predictions, crs)
            first = not kept
            options = {"dataset_options": GPKG_OPTIONS} if first else {}
            pyogrio.write_dataframe(
                point_layer, tmp, layer=POINTS_LAYER, driver="GPKG", append=not first, **options
            )
            pyogrio.write_dataframe(line_layer, tmp, layer=LINES_LAYER, driver="GPKG", append=True)
            kept.append(pd.DataFrame(predictions[[c for c in SUMMARY_COLUMNS if c in predictions]]))
        if not kept:
            raise InputError("No prediction to write: every record was skipped.")
        summary = pd.concat(kept, ignore_index=True)
        if regions is not None:
            choropleth = region_choropleth(
                summary, regions, region_field=region_field, radius_m=radius_m
            ).to_crs(crs)
            pyogrio.write_dataframe(
                choropleth, tmp, layer=CHOROPLETH_LAYER, driver="GPKG", append=True
            )
            pyogrio.write_dataframe(
                fairness_table(choropleth.attrs["fairness"]),
                tmp,
                layer=FAIRNESS_LAYER,
                driver="GPKG",
                append=True,
            )
        table = skipped_table(skipped or [])
        pyogrio.write_dataframe(table, tmp, layer=SKIPPED_LAYER, driver="GPKG", append=True)
        embed_default_styles(tmp, STYLED_LAYERS)
    return summary


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per method, one column per metric."""
    header = ["method", *columns]
    lines = [header]
    for name, figures in rows.items():
        cells = [name]
        for column in columns:
            value = figures.get(column, float("nan"))
            cells.append(f"{value:,.0f}" if column.endswith("_m") else f"{value:.3f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def skipped_path(output: str | Path, *, folder: bool = False) -> Path:
    """Where the skipped records of ``output`` are listed: ``<name>.skipped.csv`` next to an output
    file, so that outputs sharing a folder keep their own lists; ``skipped.csv`` inside an output
    ``folder`` (a run folder)."""
    output = Path(output)
    return output / "skipped.csv" if folder else output.with_name(output.stem + ".skipped.csv")


def write_skipped(skipped: list[dict], output: str | Path, *, folder: bool = False) -> Path | None:
    """List ``skipped`` at :func:`skipped_path`; with nothing skipped, remove a list left there by
    an earlier run, which no longer describes the output. Returns the list's path, or None."""
    path = skipped_path(output, folder=folder)
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    return write_csv(skipped_table(skipped), path)
