"""What a new user runs into: an output that would replace an input or someone else's layers, a
typo in an option, an option that would be ignored, a bad value found only after the work. Each
case runs `swclip` as a user does and checks the exit code, the one-line message and that the
files given are untouched."""

from __future__ import annotations

import re
import shutil

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import LineString, Point

from swclip_core.cli import main
from swclip_core.data import read_exif_gps

from .cli_process import swclip, tree
from .conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow
GB_REGIONS = REPO / "resources" / "sample_data" / "regions" / "naturalearth_admin1_gb.geojson"
PHOTO_NAMES = ["lund_01.jpg", "lund_05.jpg", "lund_10.jpg", "lund_15.jpg", "lund_20.jpg"]


def photo_layer(path):
    """A GeoPackage layer ``photos`` of five bundled photos (image, lat/lon, point geometry)."""
    rows = []
    for name in PHOTO_NAMES:
        lat, lon = read_exif_gps(PHOTOS / name)
        rows.append({"image": str(PHOTOS / name), "lat": lat, "lon": lon})
    table = pd.DataFrame(rows)
    points = gpd.points_from_xy(table["lon"], table["lat"], crs="EPSG:4326")
    gpd.GeoDataFrame(table, geometry=points).to_file(path, layer="photos")
    return path


def roads_layer(path, layer="roads"):
    """A named line layer near Lund."""
    roads = gpd.GeoDataFrame(
        {"name": ["Stora Södergatan", "Bantorget"]},
        geometry=[
            LineString([(13.19, 55.70), (13.20, 55.71)]),
            LineString([(13.18, 55.70), (13.18, 55.71)]),
        ],
        crs="EPSG:4326",
    )
    roads.to_file(path, layer=layer)
    return path


@pytest.fixture
def fake_run(tmp_path):
    """A folder shaped like a run (config.json only): enough for the checks made before loading."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    return run


@pytest.fixture(scope="module")
def model(tmp_path_factory, feature_cache):
    """A one-epoch model on five bundled photos."""
    folder = tmp_path_factory.mktemp("model")
    run = folder / "run"
    args = ["train", photo_layer(folder / "photos.gpkg"), "--out", run, "--epochs", 1]
    assert main([*map(str, args), "--batch-size", "4", "--cache-dir", str(feature_cache)]) == 0
    return run


def test_predict_refuses_to_write_over_its_input(tmp_path, fake_run):
    project = photo_layer(tmp_path / "proj.gpkg")
    before = tree(tmp_path)
    result = swclip("predict", project, "--model", fake_run, "--out", project)
    result.assert_error(2, "--out", "the same file as the input", "choose another --out")
    assert tree(tmp_path) == before


def test_gallery_refuses_to_write_over_its_lines(tmp_path):
    roads = roads_layer(tmp_path / "roads.gpkg")
    before = tree(tmp_path)
    result = swclip("gallery", "--lines", roads, "--spacing-m", 25, "--out", roads)
    result.assert_error(2, "--out", "--lines", "choose another --out")
    assert tree(tmp_path) == before


def test_no_output_replaces_a_file_of_the_model(tmp_path, fake_run):
    photos = photo_layer(tmp_path / "photos.gpkg")
    before = tree(tmp_path)
    result = swclip("evaluate", photos, "--model", fake_run, "--json", fake_run / "config.json")
    result.assert_error(2, "--json", "--model", "choose another --json")
    assert tree(tmp_path) == before


def test_an_existing_geopackage_with_other_layers_is_not_replaced(tmp_path, fake_run):
    project = photo_layer(tmp_path / "project.gpkg")
    roads_layer(project, layer="roads")
    places = tmp_path / "places.csv"
    pd.DataFrame({"lat": [55.70, 55.71], "lon": [13.19, 13.20]}).to_csv(places, index=False)
    before = tree(tmp_path)
    result = swclip("gallery", "--points", places, "--out", project)
    result.assert_error(2, "holds layers photos, roads that writing here would delete", "--out")
    result = swclip("predict", places, "--model", fake_run, "--out", project)
    result.assert_error(2, "holds layers photos, roads", "choose another --out")
    assert tree(tmp_path) == before
    # an earlier output of the same command is replaced: the usual re-run
    gallery = tmp_path / "gallery.gpkg"
    for _ in range(2):
        result = swclip("gallery", "--points", places, "--out", gallery)
        assert result.code == 0, result.err
    assert len(pyogrio.read_dataframe(gallery, layer="gallery")) == 2


def test_gallery_grid_detects_the_name_field(tmp_path):
    out = tmp_path / "grid.gpkg"
    result = swclip("gallery", "--grid", GB_REGIONS, "--spacing-m", 20000, "--out", out)
    assert result.code == 0, result.err
    gallery = pyogrio.read_dataframe(out, layer="gallery")
    names = set(gpd.read_file(GB_REGIONS)["name"])
    assert len(gallery) > 100 and set(gallery["city"].dropna()) <= names
    assert gallery["city"].notna().mean() > 0.9


def test_gallery_points_given_a_line_layer_suggests_lines(tmp_path):
    roads = roads_layer(tmp_path / "roads.gpkg")
    result = swclip("gallery", "--points", roads, "--out", tmp_path / "g.gpkg")
    result.assert_error(2, "holds LineString geometries, not points", "use --lines")


def predictions_layer(path, spread_deg):
    """A predicted_points layer of three true locations ``spread_deg`` apart, with errors."""
    table = pd.DataFrame(
        {
            "true_lat": [55.70, 55.70 + spread_deg, 55.70],
            "true_lon": [13.19, 13.19, 13.19 + spread_deg],
            "error_m": [10.0, 20.0, 30.0],
        }
    )
    points = [Point(x, y) for x, y in zip(table["true_lon"], table["true_lat"], strict=True)]
    gpd.GeoDataFrame(table, geometry=points, crs="EPSG:4326").to_file(
        path, layer="predicted_points"
    )
    return path


def test_surface_warns_when_areas_far_apart_blur_neighbouring_photos(tmp_path):
    """Photos in Lund and in Brittany: the automatic grid, within its size limit, has cells far
    coarser than the few metres between neighbouring photos, and the command says so."""
    town = [(55.7000, 13.1900), (55.70005, 13.1900), (55.7000, 13.19008)]  # about 5 m apart
    far = [(lat - 7.56, lon - 15.14) for lat, lon in town]  # about 1,100 km away
    table = pd.DataFrame(town + far, columns=["true_lat", "true_lon"]).assign(error_m=10.0)
    table.to_csv(tmp_path / "both.csv", index=False)
    table.head(3).to_csv(tmp_path / "town.csv", index=False)
    result = swclip("surface", tmp_path / "both.csv", "--out", tmp_path / "both.tif")
    assert result.code == 0, result.err
    assert "swclip: warning: the photos spread over" in result.err and "per area" in result.err
    result = swclip("surface", tmp_path / "town.csv", "--out", tmp_path / "town.tif")
    assert result.code == 0 and "warning" not in result.err


def test_surface_names_the_layers_when_layer_is_missing(tmp_path):
    predictions = predictions_layer(tmp_path / "pred.gpkg", 0.01)
    result = swclip("surface", predictions, "--out", tmp_path / "s.tif", "--layer", "nosuch")
    result.assert_error(2, "nosuch", "predicted_points")


def test_surface_says_which_cell_size_fits(tmp_path):
    predictions = predictions_layer(tmp_path / "pred.gpkg", 0.001)  # about 100 m apart
    out = tmp_path / "s.tif"
    result = swclip("surface", predictions, "--out", out, "--cell-m", 0.00001)
    result.assert_error(2, "choose a larger cell size")
    at_least = float(re.search(r"at least ([0-9.]+) m", result.err)[1])
    assert 0 < at_least < 1
    result = swclip("surface", predictions, "--out", out, "--cell-m", at_least)
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--top-k", "0"], ["--top-k", "at least 1"]),
        (["--chunk-rows", "-3"], ["--chunk-rows", "at least 1"]),
        (["--out-crs", "EPSG:999999"], ["--out-crs", "unknown CRS 'EPSG:999999'"]),
        (["--bands", "r,g,b"], ["--bands takes 1-based band numbers like 3,2,1"]),
    ],
)
def test_bad_option_values_are_refused_before_any_work(tmp_path, fake_run, options, words):
    result = swclip("predict", PHOTOS, "--model", fake_run, "--out", tmp_path / "p.gpkg", *options)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    (line,) = [x for x in result.err.splitlines() if x.startswith("swclip predict: error:")]
    for word in words:
        assert word in line, line
    assert "<lambda>" not in line


def test_an_unknown_option_is_reported_in_its_command_with_a_suggestion(tmp_path):
    result = swclip("train", PHOTOS, "--out", tmp_path / "run", "--eopchs", 2)
    assert result.code == 2
    assert "usage: swclip train" in result.err
    assert "swclip train: error: unrecognized arguments: --eopchs 2 (did you mean --epochs?)" in (
        result.err
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [["--knn-weight", "0.3"], ["--knn-temperature", "0.1"]])
def test_fusion_options_without_fuse_are_refused(tmp_path, fake_run, option):
    result = swclip("predict", PHOTOS, "--model", fake_run, "--out", tmp_path / "p.gpkg", *option)
    result.assert_error(2, option[0], "--fuse")
    assert not (tmp_path / "p.gpkg").exists()


def test_a_file_of_the_model_folder_is_named_as_a_file(tmp_path, fake_run):
    out = tmp_path / "p.gpkg"
    result = swclip("predict", PHOTOS, "--model", fake_run / "config.json", "--out", out)
    result.assert_error(3, "is a file; give the model's folder", str(fake_run))


def test_an_unexpected_failure_is_one_line_unless_debug(tmp_path, monkeypatch, capsys):
    from swclip_core import cli

    def broken(args):
        raise ValueError("something\nwent wrong")

    monkeypatch.setitem(cli.COMMANDS, "surface", broken)
    argv = ["surface", str(tmp_path / "p.csv"), "--out", str(tmp_path / "s.tif")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "swclip: error: unexpected failure (ValueError: something went wrong); run again with "
        "--debug for the traceback and report it"
    ]
    with pytest.raises(ValueError, match="went wrong"):
        cli.main([*argv, "--debug"])


def test_the_plugin_worker_still_reports_an_unexpected_failure(tmp_path, monkeypatch):
    import io
    import json

    from swclip_core import cli, worker

    def broken(args):
        raise ValueError("went wrong")

    monkeypatch.setitem(cli.COMMANDS, "surface", broken)
    stream = io.StringIO()
    request = {"command": "surface", "args": [str(tmp_path / "p.csv"), "--out", "s.tif"]}
    assert worker.run(json.dumps(request), worker.Channel(stream)) == 1
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last["type"] == "error" and "ValueError: went wrong" in last["message"]


def test_predict_with_regions_that_match_nothing_prints_no_warning(tmp_path, model, feature_cache):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTO_NAMES[:2]:
        shutil.copy(PHOTOS / name, photos / name)
    out = tmp_path / "pred.gpkg"
    result = swclip(
        "predict", photos, "--model", model, "--out", out, "--regions", GB_REGIONS,
        "--cache-dir", feature_cache,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Warning" not in result.err, result.err
    choropleth = pyogrio.read_dataframe(out, layer="region_choropleth")
    assert (choropleth["n"] == 0).all()  # Lund lies in no region of Great Britain
