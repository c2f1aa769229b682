"""Raster inputs: patches cut from real Landsat imagery, positioned at their centres."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from swclip_core.cli import main
from swclip_core.data import read_samples
from swclip_core.data.rasters import read_raster_patches
from swclip_core.errors import InputError

from .conftest import PHOTOS, REPO

SUBSET = REPO / "resources" / "sample_data" / "rasters" / "nc_landsat7_2000_subset.tif"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def valid_windows(path, size, stride):
    """Independently: upper-left (row, col) of every grid window without nodata."""
    with rasterio.open(path) as src:
        data = src.read(masked=True)
        found = []
        for row in range(0, src.height - size + 1, stride):
            for col in range(0, src.width - size + 1, stride):
                window = data[:, row : row + size, col : col + size]
                if not np.ma.getmaskarray(window).any() and np.isfinite(window).all():
                    found.append((row, col))
    return found


@pytest.fixture
def patches(tmp_path):
    return read_raster_patches(SUBSET, patch_size=32, stride=32, out_dir=tmp_path / "patches")


def test_grid_patches_are_the_valid_windows_at_their_centres(patches):
    expected = valid_windows(SUBSET, 32, 32)
    assert sorted(patches["sample_id"]) == sorted(f"r{r}_c{c}" for r, c in expected)
    with rasterio.open(SUBSET) as src:
        to_wgs84 = pyproj.Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        for row in patches.itertuples():
            r, c = (int(part[1:]) for part in row.sample_id.split("_"))
            # The centre of a 32-pixel window is the corner shared by its four middle pixels.
            x, y = src.transform @ (c + 16, r + 16)
            lon, lat = to_wgs84.transform(x, y)
            assert row.lat == pytest.approx(lat, abs=1e-7)
            assert row.lon == pytest.approx(lon, abs=1e-7)


def test_windows_touching_nodata_are_skipped_with_a_reason(patches):
    total = len(range(0, 200 - 32 + 1, 32)) ** 2
    skipped = patches.attrs["skipped"]
    assert len(skipped) + len(patches) == total and skipped
    assert all("nodata" in item["reason"] for item in skipped)


def test_stretch_and_band_order(tmp_path):
    one = read_raster_patches(SUBSET, patch_size=32, stride=32, out_dir=tmp_path / "a")
    swapped = read_raster_patches(
        SUBSET, patch_size=32, stride=32, bands=[1, 2, 3], out_dir=tmp_path / "b"
    )
    first = one.iloc[0]
    a = np.asarray(Image.open(first.image_path))
    b = np.asarray(Image.open(swapped.set_index("sample_id").loc[first.sample_id].image_path))
    assert np.array_equal(a[..., 0], b[..., 2])  # red (band 3) became the blue channel
    with rasterio.open(SUBSET) as src:
        red = src.read(3, masked=True).compressed()
        r, c = (int(part[1:]) for part in first.sample_id.split("_"))
        window = src.read(3, window=Window(c, r, 32, 32))
    low, high = np.percentile(red, [2, 98])
    expected = np.clip((window - low) / (high - low) * 255.0, 0, 255)
    assert np.abs(a[..., 0].astype(float) - expected).max() <= 1.0


def test_random_windows_are_reproducible(tmp_path):
    one = read_raster_patches(SUBSET, patch_size=16, count=20, seed=3, out_dir=tmp_path / "a")
    two = read_raster_patches(SUBSET, patch_size=16, count=20, seed=3, out_dir=tmp_path / "b")
    other = read_raster_patches(SUBSET, patch_size=16, count=20, seed=4, out_dir=tmp_path / "c")
    assert list(one["sample_id"]) == list(two["sample_id"])
    assert set(one["sample_id"]) != set(other["sample_id"])


def test_reading_changes_nothing_next_to_the_input(tmp_path):
    raster = tmp_path / "in" / "scene.tif"
    raster.parent.mkdir()
    raster.write_bytes(SUBSET.read_bytes())
    before = (digest(raster), raster.stat().st_mtime_ns)
    read_samples(raster, patch_size=32)
    assert (digest(raster), raster.stat().st_mtime_ns) == before
    assert [p.name for p in raster.parent.iterdir()] == ["scene.tif"]


def test_bad_raster_options_are_explained():
    with pytest.raises(InputError, match="band"):
        read_samples(SUBSET, bands=[9])
    with pytest.raises(InputError, match="exclude each other"):
        read_samples(SUBSET, patch_stride=8, patch_count=5)
    with pytest.raises(InputError, match="only apply to georeferenced rasters"):
        read_samples(PHOTOS, patch_size=32)


def test_source_crs_is_recorded_for_every_kind_of_input(tmp_path):
    assert read_samples(PHOTOS).attrs["source_crs"] == "EPSG:4326"
    photos = read_samples(PHOTOS)
    layer = photos.to_crs(3006)
    layer.to_file(tmp_path / "photos.gpkg")
    assert read_samples(tmp_path / "photos.gpkg").attrs["source_crs"] == "EPSG:3006"
    bng = photos.to_crs(27700)
    table = bng.drop(columns="geometry").assign(x=bng.geometry.x, y=bng.geometry.y)
    table.drop(columns=["lat", "lon"]).to_csv(tmp_path / "bng.csv", index=False)
    assert read_samples(tmp_path / "bng.csv", crs="EPSG:27700").attrs["source_crs"] == "EPSG:27700"
    raster_crs = pyproj.CRS(read_samples(SUBSET, patch_size=32).attrs["source_crs"])
    with rasterio.open(SUBSET) as src:
        assert raster_crs.equals(pyproj.CRS(src.crs.to_wkt()))


@pytest.mark.slow
def test_train_and_predict_on_raster_patches_write_the_rasters_crs(tmp_path, feature_cache):
    common = [
        str(SUBSET),
        "--patch-size",
        "32",
        "--patch-stride",
        "16",
        "--cache-dir",
        str(feature_cache),
    ]
    run, out = tmp_path / "run", tmp_path / "pred.gpkg"
    assert main(["train", *common[:5], "--out", str(run), "--epochs", "1", *common[5:]]) in (0, 4)
    assert main(["predict", *common[:5], "--model", str(run), "--out", str(out), *common[5:]]) in (
        0,
        4,
    )
    points = pyogrio.read_dataframe(out, layer="predicted_points")
    with rasterio.open(SUBSET) as src:
        assert pyproj.CRS(points.crs).equals(pyproj.CRS(src.crs.to_wkt()))
    assert np.isfinite(points["error_m"]).all()
    assert points["in_training"].all()  # the very patches it was trained on
    # the patches are cached where --cache-dir says, not in the user's cache folder
    assert all(Path(p).is_relative_to(feature_cache / "patches") for p in points["image_path"])
    # Every other window of the training grid, cut into another cache folder: other files, the
    # same pixels, so the same images to the model.
    coarse = [*common[:3], "--patch-stride", "32"]
    out = tmp_path / "coarse.gpkg"
    assert main(["predict", *coarse, "--model", str(run), "--out", str(out), *common[5:]]) in (
        0,
        4,
    )
    coarse_points = pyogrio.read_dataframe(out, layer="predicted_points")
    assert not set(coarse_points["image_path"]) & set(points["image_path"])
    assert coarse_points["in_training"].all()


def test_the_full_shared_raster(shared_data, tmp_path):
    path = shared_data / "rasters" / "nc_landsat7_2000_multiband.tif"
    patches = read_raster_patches(path, patch_size=32, stride=48, out_dir=tmp_path / "p")
    assert sorted(patches["sample_id"]) == sorted(
        f"r{r}_c{c}" for r, c in valid_windows(path, 32, 48)
    )
    # Raleigh, North Carolina
    assert patches["lat"].between(35.6, 36.0).all() and patches["lon"].between(-78.9, -78.4).all()
