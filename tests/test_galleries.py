"""Gallery sources and files, checked with independent geodesy, and `swclip gallery` end to end."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import pytest
import shapely

from swclip_core.captions import DEFAULT_TEMPLATE, CaptionTemplate
from swclip_core.cli import main
from swclip_core.errors import InputError
from swclip_core.galleries import (
    GALLERY_COLUMNS,
    gallery_along_lines,
    gallery_chunks_along_lines,
    gallery_from_file,
    gallery_from_points,
    gallery_from_samples,
    gallery_grid,
    load_gallery,
    save_gallery,
)
from swclip_core.geo import haversine_m

from .conftest import PHOTOS, REPO

REGIONS = REPO / "resources" / "sample_data" / "regions" / "naturalearth_admin1_gb.geojson"


@pytest.fixture
def lines() -> gpd.GeoDataFrame:
    """Straight streets in British National Grid (metres), one of them in two parts."""
    return gpd.GeoDataFrame(
        {"name": ["High Street", "Mill Lane", None], "town": ["York", "York", "York"]},
        geometry=[
            shapely.LineString([(460000, 452000), (461137, 452480)]),
            shapely.MultiLineString(
                [[(460000, 453000), (460010, 453000)], [(462000, 453000), (462000, 453712)]]
            ),
            shapely.LineString([(459000, 452000), (459000, 452090)]),
        ],
        crs="EPSG:27700",
    )


def _consecutive_m(table: pd.DataFrame) -> np.ndarray:
    lat, lon = table["lat"].to_numpy(), table["lon"].to_numpy()
    return haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])


def test_points_along_lines_are_spaced_in_metres_and_named(lines):
    gallery = gallery_along_lines(lines, spacing_m=25.0)
    assert list(gallery.columns) == list(GALLERY_COLUMNS)
    high = gallery[gallery["street"] == "High Street"]
    steps = _consecutive_m(high)
    assert np.allclose(steps, 25.0, rtol=0.01)
    # Independent length: the line's ends in WGS84, great-circle distance.
    ends = lines.geometry.iloc[[0]].boundary.explode().to_crs("EPSG:4326")
    length = haversine_m(ends.y.iloc[0], ends.x.iloc[0], ends.y.iloc[1], ends.x.iloc[1])
    assert len(high) == int(length // 25.0) + 1
    assert (high["city"] == "York").all()  # the layer's town field is carried as city
    assert high["caption"].str.startswith("Street: High Street, City: York. Lat: ").all()
    mill = gallery[gallery["street"] == "Mill Lane"]
    # A 10 m part shorter than the spacing gets one point (its middle); the 712 m part 29.
    assert len(mill) == 1 + 29
    assert np.allclose(_consecutive_m(mill.iloc[1:]), 25.0, rtol=0.01)
    unnamed = gallery[gallery["street"].isna()]
    assert len(unnamed) == 4 and unnamed["caption"].str.startswith("City: York").all()


def test_lines_in_wgs84_and_wrong_layers(lines, tmp_path):
    gallery = gallery_along_lines(lines.to_crs("EPSG:4326"), spacing_m=100.0, name_field="name")
    assert np.allclose(_consecutive_m(gallery[gallery["street"] == "High Street"]), 100, rtol=0.01)
    with pytest.raises(InputError, match="give a line layer"):
        gallery_along_lines(lines.set_geometry(lines.centroid), spacing_m=10.0)
    with pytest.raises(InputError, match="positive number of metres"):
        gallery_along_lines(lines, spacing_m=0)
    with pytest.raises(InputError, match=r"'street_name'.*Fields: name, town"):
        gallery_along_lines(lines, spacing_m=10.0, name_field="street_name")


def test_grid_points_fall_inside_the_polygon_on_a_square_lattice():
    regions = gpd.read_file(REGIONS)
    island = regions[regions["name"] == "Isle of Wight"]
    gallery = gallery_grid(island, spacing_m=1000.0, name_field="name")
    points = gpd.points_from_xy(gallery["lon"], gallery["lat"], crs="EPSG:4326")
    assert island.geometry.iloc[0].covers(points).all()
    assert (gallery["city"] == "Isle of Wight").all()
    # Isle of Wight: about 380 km2, so a 1 km grid has ~380 points.
    area_km2 = island.to_crs("EPSG:27700").area.iloc[0] / 1e6
    assert abs(len(gallery) - area_km2) < 0.1 * area_km2
    lat, lon = gallery["lat"].to_numpy(), gallery["lon"].to_numpy()
    distances = haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    # Ellipsoidal metres vs the spherical haversine: within 0.5 % at this latitude. Points on a
    # narrow spit may have their lattice neighbours outside the island, hence >= and the median.
    assert (nearest >= 995.0).all()
    assert np.median(nearest) == pytest.approx(1000.0, rel=0.005)


def test_points_layer_in_any_crs_and_samples(tmp_path):
    lat = np.array([54.15, 54.16, 54.17])
    lon = np.array([-4.48, -4.49, -4.50])
    east, north = pyproj.Transformer.from_crs(4326, 27700, always_xy=True).transform(lon, lat)
    layer = gpd.GeoDataFrame(
        {"Street": ["A", "B", None], "Town": ["Douglas"] * 3},
        geometry=gpd.points_from_xy(east, north),
        crs="EPSG:27700",
    )
    path = tmp_path / "places.gpkg"
    layer.to_file(path)
    gallery = gallery_from_points(path)
    assert np.allclose(gallery["lat"], lat, atol=1e-7) and np.allclose(gallery["lon"], lon)
    assert gallery["street"].tolist() == ["A", "B", None]
    assert (gallery["city"] == "Douglas").all() and gallery["country"].isna().all()
    samples = pd.DataFrame(
        {"lat": [1.0, 1.0, 2.0], "lon": [3.0, 3.0, 4.0], "street": ["S", "S", None]}
    )
    from_samples = gallery_from_samples(samples)
    assert len(from_samples) == 2  # the repeated place is one entry
    assert from_samples["caption"].tolist() == [
        "Street: S. Lat: 1.00000, Lon: 3.00000.",
        "Lat: 2.00000, Lon: 4.00000.",
    ]


def test_save_and_load_round_trip(lines, tmp_path):
    gallery = gallery_along_lines(lines, spacing_m=50.0)
    path = save_gallery(gallery, tmp_path / "gallery.gpkg")
    assert [name for name, _ in pyogrio.list_layers(path)] == ["gallery"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.gpkg"]  # no partial file
    loaded = load_gallery(path)
    pd.testing.assert_frame_equal(loaded, gallery, check_dtype=False)
    # gallery_from_file rewrites captions with the model's template; same template, same text.
    assert gallery_from_file(path, DEFAULT_TEMPLATE)["caption"].equals(gallery["caption"])
    coarse = gallery_from_file(path, CaptionTemplate(precision=2))
    assert (
        coarse["caption"]
        .iloc[0]
        .endswith(f"Lat: {gallery['lat'].iloc[0]:.2f}, Lon: {gallery['lon'].iloc[0]:.2f}.")
    )
    with pytest.raises(InputError, match=r"\.gpkg"):
        save_gallery(gallery, tmp_path / "gallery.csv")


@pytest.mark.parametrize("chunk_points", [1, 7, 40])
def test_lines_gallery_streams_in_chunks_of_whole_parts(lines, tmp_path, chunk_points):
    whole = gallery_along_lines(lines, spacing_m=10.0)
    chunks = list(gallery_chunks_along_lines(lines, spacing_m=10.0, chunk_points=chunk_points))
    # High Street, 1,234 m, is the longest part: 124 points, one chunk however small the chunks
    assert len(chunks) > 1 and max(map(len, chunks)) <= max(chunk_points, 124)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    path = save_gallery(iter(chunks), tmp_path / "streamed.gpkg")
    pd.testing.assert_frame_equal(load_gallery(path), whole, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.gpkg"]  # no partial file
    with pytest.raises(InputError, match="limit 50"):
        next(gallery_chunks_along_lines(lines, spacing_m=10.0, max_points=50))


def test_gallery_command_without_model(lines, tmp_path, capsys):
    source = tmp_path / "streets.gpkg"
    lines.to_file(source, layer="streets")
    out = tmp_path / "out" / "gallery.gpkg"
    code = main(["gallery", "--lines", str(source), "--spacing-m", "25", "--out", str(out)])
    assert code == 0
    expected = gallery_along_lines(lines, spacing_m=25.0)
    pd.testing.assert_frame_equal(load_gallery(out), expected, check_dtype=False)
    assert f"{len(expected)} gallery locations" in capsys.readouterr().out
    assert main(["gallery", "--lines", str(source), "--out", str(out)]) == 2  # no --spacing-m
    assert main(["gallery", "--points", str(source), "--spacing-m", "5", "--out", str(out)]) == 2


@pytest.mark.slow
def test_predict_with_a_saved_gallery_embeds_it_once_per_model(
    tmp_path, feature_cache, capsys, monkeypatch
):
    run = tmp_path / "run"
    common = ["--cache-dir", str(feature_cache)]
    assert main(["train", str(PHOTOS), "--out", str(run), "--epochs", "1", *common]) == 0
    gallery = tmp_path / "photos_gallery.gpkg"
    before = set(feature_cache.glob("gallery-*.npy"))
    code = main(
        [
            "gallery",
            "--from-input",
            str(PHOTOS),
            "--out",
            str(gallery),
            "--model",
            str(run),
            *common,
        ]
    )
    assert code == 0
    embedded = set(feature_cache.glob("gallery-*.npy")) - before
    assert len(embedded) == 1  # embedded for this model
    (cache_file,) = embedded
    stamp = cache_file.stat().st_mtime_ns
    manifest = pd.read_csv(PHOTOS / "manifest.csv")
    assert len(load_gallery(gallery)) == len(manifest[["lat", "lon"]].round(6).drop_duplicates())

    # From here on the gallery must come from the cache: embedding captions again is a failure.
    def no_embedding(*args, **kwargs):
        raise AssertionError("the saved gallery was embedded again instead of read from the cache")

    monkeypatch.setattr("swclip_core.retrieval.embed_captions", no_embedding)
    # The second predict names no --cache-dir: the default cache must serve the gallery too.
    monkeypatch.setenv("SWCLIP_CACHE_DIR", str(feature_cache))
    for attempt, cache_option in enumerate((common, [])):
        out = tmp_path / f"pred{attempt}.gpkg"
        code = main(
            [
                *("predict", str(PHOTOS), "--model", str(run), "--gallery", str(gallery)),
                *("--out", str(out), *cache_option),
            ]
        )
        assert code == 0
        points = pyogrio.read_dataframe(out, layer="predicted_points")
        assert len(points) == len(manifest)
        assert set(feature_cache.glob("gallery-*.npy")) - before == embedded  # reused
        assert cache_file.stat().st_mtime_ns == stamp
    # The photos are their own gallery here: most land on (or next to) their own place.
    assert np.median(points["error_m"]) < 50_000
    capsys.readouterr()
