"""GeoPackage and PNG outputs: layers, geometry, CRS, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyogrio
import pytest

from swclip_core.io import atomic_path
from swclip_core.outputs import (
    render_error_map,
    write_predictions_gpkg,
)


@pytest.fixture
def predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": ["a", "b", "c"],
            "image_path": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"],
            "true_lat": [54.10, 54.15, 54.20],
            "true_lon": [-4.60, -4.55, -4.50],
            "pred_lat": [54.11, 54.15, 54.30],
            "pred_lon": [-4.61, -4.56, -4.40],
            "error_m": [1300.0, 650.0, 13000.0],
            "rank_of_truth": [0, 1, 5],
            "confidence": [0.5, 0.4, 0.2],
            "uncertainty_m": [100.0, 200.0, 300.0],
        }
    )


def test_geopackage_has_points_lines_and_skipped(tmp_path, predictions):
    path = write_predictions_gpkg(
        predictions, tmp_path / "out.gpkg", skipped=[{"record": "d", "reason": "image missing"}]
    )
    layers = {name for name, _ in pyogrio.list_layers(path)}
    # layer_styles holds the QGIS default styles of the point and line layers.
    assert layers == {"predicted_points", "error_lines", "skipped_records", "layer_styles"}
    points = pyogrio.read_dataframe(path, layer="predicted_points")
    assert points.crs.to_epsg() == 4326
    assert np.allclose(points.geometry.y, predictions["pred_lat"])
    assert np.allclose(points.geometry.x, predictions["pred_lon"])
    assert points["error_m"].tolist() == predictions["error_m"].tolist()
    lines = pyogrio.read_dataframe(path, layer="error_lines")
    first = np.asarray(lines.geometry.iloc[2].coords)
    assert np.allclose(first, [[-4.50, 54.20], [-4.40, 54.30]])
    skipped = pyogrio.read_dataframe(path, layer="skipped_records")
    assert skipped["reason"].tolist() == ["image missing"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]


def test_geopackage_in_another_crs(tmp_path, predictions):
    path = write_predictions_gpkg(predictions, tmp_path / "bng.gpkg", crs="EPSG:27700")
    points = pyogrio.read_dataframe(path, layer="predicted_points")
    assert points.crs.to_epsg() == 27700
    back = points.to_crs(4326)
    assert np.allclose(back.geometry.y, predictions["pred_lat"], atol=1e-7)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "result.gpkg"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_error_map_is_a_png(tmp_path, predictions):
    path = render_error_map(predictions, tmp_path / "map.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_far_apart_groups_get_their_own_map_panels():
    from swclip_core.outputs import map_clusters

    # a street in Lund (3 photos 100 m apart), two French towns 60 km apart, one lone point
    lat = np.array([55.698, 55.699, 55.700, 48.14, 48.15, 48.68, 10.0])
    lon = np.array([13.195, 13.195, 13.195, -1.95, -1.94, -1.90, 10.0])
    groups = [sorted(g.tolist()) for g in map_clusters(lat, lon, gap_m=50_000)]
    assert groups[0] == [0, 1, 2]
    assert sorted(groups[1:]) == [[3, 4], [5], [6]]


def test_error_map_of_unknown_truths_and_several_groups(tmp_path, predictions):
    far = predictions.assign(
        true_lat=[54.1, np.nan, 10.0],
        pred_lat=[54.1, 54.2, 10.1],
        error_m=[1300.0, np.nan, 13000.0],
    )
    path = render_error_map(far, tmp_path / "map.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
