"""GIS outputs: region choropleth figures, embedded QGIS styles, the error surface GeoTIFF and a
rendered map of the choropleth and error lines over Great Britain (through QGIS, offscreen).
"""

from __future__ import annotations

import sqlite3
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import pytest
import rasterio

from swclip_core.errors import InputError
from swclip_core.outputs import (
    STYLED_LAYERS,
    region_choropleth,
    write_error_surface,
    write_predictions_gpkg,
)

from .conftest import REPO

BUNDLED_REGIONS = REPO / "resources" / "sample_data" / "regions" / "naturalearth_admin1_gb.geojson"
RENDER_COPY = Path("/tmp/swclip_choropleth.png")
# The table QGIS 3.22 creates in a GeoPackage (read from one QgsVectorLayer.saveStyleToDatabase
# wrote).
QGIS_LAYER_STYLES_COLUMNS = [
    "id",
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
]


@pytest.fixture
def regions(request) -> gpd.GeoDataFrame:
    """Natural Earth admin-1 units of the UK (bundled, else from ../shared/data)."""
    if BUNDLED_REGIONS.is_file():
        return gpd.read_file(BUNDLED_REGIONS)
    shared = request.getfixturevalue("shared_data")
    return gpd.read_file(shared / "regions" / "naturalearth_admin1_gb.geojson")


def synthetic_predictions(regions: gpd.GeoDataFrame, n_regions: int = 60) -> pd.DataFrame:
    """Photos in the larger GB regions: most predicted within a few km, some confused with
    another place 40-400 km away (what retrieval errors look like), and a few regions empty."""
    rng = np.random.default_rng(7)
    gb = regions.to_crs(27700)
    chosen = gb.loc[gb.area.sort_values(ascending=False).index[:n_regions]]
    sites = chosen.sample_points(4, rng=11).explode(index_parts=False)
    sites = sites[~sites.is_empty]
    n = len(sites)
    confused = rng.random(n) < 0.2
    error = np.where(
        confused, rng.uniform(40_000, 400_000, n), np.exp(rng.normal(np.log(2_500), 1.3, n))
    )
    bearing = rng.uniform(0, 360, n)
    true = sites.to_crs(4326)
    pred_lon, pred_lat, _ = pyproj.Geod(ellps="WGS84").fwd(
        true.x.to_numpy(), true.y.to_numpy(), bearing, error
    )
    return pd.DataFrame(
        {
            "sample_id": [f"photo_{i:03d}" for i in range(n)],
            "image_path": [f"/photos/{i:03d}.jpg" for i in range(n)],
            "true_lat": true.y.to_numpy(),
            "true_lon": true.x.to_numpy(),
            "pred_lat": pred_lat,
            "pred_lon": pred_lon,
            "error_m": error,
            "rank_of_truth": rng.integers(0, 4, n),
            "confidence": rng.uniform(0.1, 0.9, n),
            "uncertainty_m": rng.uniform(100, 5_000, n),
        }
    )


@pytest.fixture
def predictions(regions) -> pd.DataFrame:
    return synthetic_predictions(regions)


def expected_by_region(predictions, regions, radius_m):
    """Independent figures: geopandas' spatial join and a pandas groupby."""
    true = gpd.GeoDataFrame(
        predictions,
        geometry=gpd.points_from_xy(predictions["true_lon"], predictions["true_lat"]),
        crs=4326,
    )
    joined = gpd.sjoin(true, regions[["name", "geometry"]], predicate="within", how="inner")
    joined = joined[~joined.index.duplicated()]
    grouped = joined.groupby("name")
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "median_error_m": grouped["error_m"].median(),
            "mean_error_m": grouped["error_m"].mean(),
            "acc_at_radius": grouped["error_m"].apply(lambda e: (e <= radius_m).mean()),
            "r_at_1": grouped["rank_of_truth"].apply(lambda r: (r == 0).mean()),
        }
    )


def test_choropleth_figures_match_an_independent_groupby(predictions, regions):
    layer = region_choropleth(predictions, regions, region_field="name", radius_m=5_000)
    expected = expected_by_region(predictions, regions, 5_000)
    assert len(layer) == len(regions)
    assert layer.crs == regions.crs
    got = layer.set_index("region").loc[expected.index]
    for column in expected:
        assert np.allclose(got[column].to_numpy(float), expected[column].to_numpy(float)), column
    overall = predictions["error_m"].median()
    assert np.allclose(got["median_error_ratio"], expected["median_error_m"] / overall)
    assert np.allclose(got["median_error_diff_m"], expected["median_error_m"] - overall)
    medians = expected["median_error_m"].to_numpy()
    fairness = layer.attrs["fairness"]
    assert fairness["median_error_cv"] == pytest.approx(medians.std() / medians.mean())
    assert fairness["median_error_max_min_ratio"] == pytest.approx(medians.max() / medians.min())
    assert fairness["regions_with_samples"] == len(expected)
    assert fairness["samples_without_region"] == len(predictions) - expected["n"].sum()


def test_regions_without_samples_keep_n_zero_and_no_figures(predictions, regions):
    layer = region_choropleth(predictions, regions, region_field="name")
    empty = layer[~layer["region"].isin(expected_by_region(predictions, regions, 1000).index)]
    assert len(empty) > 100  # only the 60 largest regions hold photos
    assert (empty["n"] == 0).all()
    assert empty[["median_error_m", "mean_error_m", "acc_at_radius", "r_at_1"]].isna().all().all()
    assert not empty.geometry.is_empty.any()


def test_a_region_column_wins_and_open_protocol_has_no_r_at_1(predictions, regions):
    # Every photo labelled as Cornwall whatever its location; ranks unknown (open protocol).
    labelled = predictions.assign(region="Cornwall", rank_of_truth=-1)
    layer = region_choropleth(labelled, regions, region_field="name").set_index("region")
    assert layer.loc["Cornwall", "n"] == len(predictions)
    assert layer.loc["Cornwall", "median_error_m"] == pytest.approx(predictions["error_m"].median())
    assert np.isnan(layer.loc["Cornwall", "r_at_1"])
    assert layer["n"].sum() == len(predictions)


def test_choropleth_rejects_a_missing_field_and_points(predictions, regions):
    with pytest.raises(InputError, match=r"no field 'nom'.*name"):
        region_choropleth(predictions, regions, region_field="nom")
    with pytest.raises(InputError, match="polygons"):
        centres = regions.set_geometry(regions.representative_point())
        region_choropleth(predictions, centres, region_field="name")


@pytest.fixture
def gpkg(tmp_path, predictions, regions) -> Path:
    return write_predictions_gpkg(
        predictions,
        tmp_path / "run.gpkg",
        crs="EPSG:27700",
        regions=regions,
        region_field="name",
    )


def test_geopackage_layers_and_embedded_default_styles(gpkg, predictions, regions):
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    expected_layers = set(STYLED_LAYERS) | {"fairness_summary", "skipped_records", "layer_styles"}
    assert layers == expected_layers
    fairness = pyogrio.read_dataframe(gpkg, layer="fairness_summary")
    assert "median_error_cv" in set(fairness["figure"])
    with sqlite3.connect(gpkg) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
        geometry_columns = dict(
            db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall()
        )
        kind = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert columns == QGIS_LAYER_STYLES_COLUMNS
    assert kind == ("attributes",)
    assert sorted(r[0] for r in rows) == sorted(STYLED_LAYERS)
    for table, geometry_column, default, qml in rows:
        assert default == 1
        assert geometry_column == geometry_columns[table]
        renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
        assert renderer.get("type") == "graduatedSymbol"
        assert len(renderer.findall("ranges/range")) == len(renderer.findall("symbols/symbol"))


def test_gpkg_layers_open_in_qgis_with_their_graduated_style(qgis_app, gpkg, predictions, regions):
    from qgis.core import QgsRenderContext, QgsVectorLayer

    counts = {"predicted_points": len(predictions), "error_lines": len(predictions)}
    counts["region_choropleth"] = len(regions)
    for name, count in counts.items():
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        assert layer.isValid(), name
        assert layer.renderer().type() == "graduatedSymbol", name
        assert layer.crs().authid() == "EPSG:27700"
        assert layer.featureCount() == count
    # A region without samples (NULL median) is drawn with the grey "no samples" class.
    choropleth = QgsVectorLayer(f"{gpkg}|layername=region_choropleth", "c", "ogr")
    renderer = choropleth.renderer().clone()
    context = QgsRenderContext()
    renderer.startRender(context, choropleth.fields())
    empty = next(f for f in choropleth.getFeatures() if f["n"] == 0)
    # The map renderer sets the feature on the context before asking for its symbol.
    context.expressionContext().setFeature(empty)
    symbol = renderer.symbolForFeature(empty, context)
    renderer.stopRender(context)
    assert symbol is not None and symbol.color().name() == "#e0e0e0"


def render_map(gpkg: Path, out: Path) -> np.ndarray:
    """Choropleth and error lines through QgsMapRendererParallelJob, saved with a title and
    legend; returns the RGB pixels of the map alone."""
    from qgis.core import (
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsSymbolLayerUtils,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QFont, QPainter

    choropleth = QgsVectorLayer(f"{gpkg}|layername=region_choropleth", "regions", "ogr")
    # The embedded style draws it at 60 % opacity (the points and lines above it stay visible);
    # opaque here, so that the classes' own colours can be checked pixel for pixel.
    assert choropleth.opacity() == pytest.approx(0.6)
    choropleth.setOpacity(1.0)
    lines = QgsVectorLayer(f"{gpkg}|layername=error_lines", "lines", "ogr")
    settings = QgsMapSettings()
    settings.setLayers([lines, choropleth])
    settings.setDestinationCrs(choropleth.crs())
    settings.setOutputSize(QSize(900, 1100))
    settings.setBackgroundColor(QColor("#dbe9f2"))
    extent = choropleth.extent()
    extent.scale(1.08)
    settings.setExtent(extent)
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    map_only = image.convertToFormat(image.Format_RGB32)

    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setFont(QFont("DejaVu Sans", 15, QFont.Bold))
    painter.drawText(20, 36, "Localization error by region")
    # ranges() returns copies that own their symbols: clone each symbol while its range lives.
    entries = [("Median error per region", None)]
    entries += [(r.label(), r.symbol().clone()) for r in choropleth.renderer().ranges()]
    entries += [("Error line, true → predicted", None)]
    entries += [(r.label(), r.symbol().clone()) for r in lines.renderer().ranges()[3:]]
    top = image.height() - 24 * len(entries) - 20
    painter.fillRect(12, top - 8, 250, 24 * len(entries) + 16, QColor(255, 255, 255, 230))
    for i, (label, symbol) in enumerate(entries):
        y = top + 24 * i
        if symbol is None:
            painter.setFont(QFont("DejaVu Sans", 11, QFont.Bold))
            painter.drawText(22, y + 16, label)
            continue
        painter.drawPixmap(
            24, y + 3, QgsSymbolLayerUtils.symbolPreviewPixmap(symbol, QSize(26, 16))
        )
        painter.setFont(QFont("DejaVu Sans", 10))
        painter.drawText(60, y + 16, label)
    painter.end()
    assert image.save(str(out), "PNG")
    # The map's pixels without title and legend (whose swatches would show every class).
    pixels = np.frombuffer(map_only.constBits().asstring(map_only.sizeInBytes()), np.uint8)
    # RGB32 is stored as 0xffRRGGBB words: B, G, R, A bytes on little-endian machines.
    bgra = pixels.reshape(map_only.height(), map_only.bytesPerLine() // 4, 4)
    return bgra[..., 2::-1] if sys.byteorder == "little" else bgra[..., 1:]


def test_rendered_choropleth_and_lines_is_a_real_map(qgis_app, gpkg, tmp_path):
    pixels = render_map(gpkg, tmp_path / "map.png")
    RENDER_COPY.write_bytes((tmp_path / "map.png").read_bytes())
    assert pixels.std() > 20  # not blank
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    # The "no samples" grey, the background and at least three YlOrRd classes are on the map.
    assert (0xE0, 0xE0, 0xE0) in colours
    assert (0xDB, 0xE9, 0xF2) in colours
    ylorrd = {(0xFF, 0xED, 0xA0), (0xFE, 0xD9, 0x76), (0xFE, 0xB2, 0x4C), (0xFD, 0x8D, 0x3C)}
    ylorrd |= {(0xFC, 0x4E, 0x2A), (0xFF, 0xFF, 0xCC)}
    assert len(colours & ylorrd) >= 3


def test_error_surface_reproduces_errors_at_samples_and_is_nodata_far_away(tmp_path):
    # Samples on cell centres of a 100 m grid in British National Grid.
    easting = 400_050.0 + 100 * np.array([0, 30, 10, 45, 22, 5])
    northing = 300_050.0 + 100 * np.array([0, 4, 25, 33, 12, 40])
    lon, lat = pyproj.Transformer.from_crs(27700, 4326, always_xy=True).transform(easting, northing)
    error = np.array([50.0, 8_000, 300, 25_000, 1_200, 90])
    predictions = pd.DataFrame(
        {"true_lat": lat, "true_lon": lon, "error_m": error, "pred_lat": lat, "pred_lon": lon}
    )
    path = write_error_surface(
        predictions, tmp_path / "surface.tif", crs="EPSG:27700", cell_m=100, max_distance_m=1_500
    )
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 27700
        assert src.crs.linear_units == "metre"
        assert src.descriptions == ("error_m",)
        assert "inverse distance" in src.tags()["method"]
        assert src.res == (100.0, 100.0)
        band = src.read(1, masked=True)
        rows, cols = rasterio.transform.rowcol(src.transform, easting, northing)
        assert np.allclose(band[rows, cols], error, rtol=1e-5)
        # A cell between samples: the IDW of all six (12 nearest) computed here by hand.
        x, y = 400_050.0 + 100 * 15, 300_050.0 + 100 * 20
        d = np.hypot(easting - x, northing - y)
        expected = (error / d**2).sum() / (1 / d**2).sum()
        row, col = src.index(x, y)
        assert band[row, col] == pytest.approx(expected, rel=1e-5)
        # The grid reaches max_distance beyond the samples: its corners are nodata.
        assert band.mask[0, 0] and band.mask[-1, -1]
        assert src.nodata == -9999.0
    assert [p.name for p in tmp_path.iterdir()] == ["surface.tif"]


def test_error_surface_defaults_to_utm_in_metres(predictions, tmp_path):
    path = write_error_surface(predictions, tmp_path / "gb.tif")
    with rasterio.open(path) as src:
        assert 32601 <= src.crs.to_epsg() <= 32660  # WGS 84 / UTM north
        assert src.crs.linear_units == "metre"
        band = src.read(1, masked=True)
        assert 0 < band.count() < band.size  # values near the photos, nodata at sea
        assert band.min() >= predictions["error_m"].min() - 1e-3
        assert band.max() <= predictions["error_m"].max() + 1e-3


def test_interrupted_surface_write_leaves_no_file(predictions, tmp_path, monkeypatch):
    def crash(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", crash)
    with pytest.raises(OSError, match="disk full"):
        write_error_surface(predictions, tmp_path / "surface.tif")
    assert list(tmp_path.iterdir()) == []


def test_predicted_points_carry_the_region_column(predictions, tmp_path):
    labelled = predictions.assign(region=np.where(predictions["error_m"] > 1e4, "far", "near"))
    path = write_predictions_gpkg(labelled, tmp_path / "run.gpkg")
    for layer in ("predicted_points", "error_lines"):
        written = pyogrio.read_dataframe(path, layer=layer)
        assert written["region"].tolist() == labelled["region"].tolist()


def test_interrupted_gpkg_write_leaves_no_file(predictions, regions, tmp_path, monkeypatch):
    import swclip_core.outputs as outputs

    def crash(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(outputs, "embed_default_styles", crash)
    with pytest.raises(sqlite3.OperationalError):
        write_predictions_gpkg(
            predictions, tmp_path / "run.gpkg", regions=regions, region_field="name"
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "name"), [("--error-surface", "surface.png"), ("--map", "map.tif")]
)
def test_predict_checks_output_names_before_running_the_model(tmp_path, capsys, option, name):
    from swclip_core.cli import main

    photos = REPO / "resources" / "sample_data" / "photos"
    out = str(tmp_path / "x.gpkg")
    # The model folder is empty: exit code 2 (input) instead of 3 (model) shows the early check.
    code = main(["predict", str(photos), "--model", str(tmp_path), "--out", out, option, name])
    assert code == 2 and option in capsys.readouterr().err
