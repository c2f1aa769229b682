"""Readers of geo-tagged samples (CSV, vector layers, photo folders), EXIF GPS and image loading.

The reference positions are the manifest shipped with the bundled photos (read independently of
this code) and coordinates transformed with pyproj directly in the tests.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from PIL import Image
from pyproj import Transformer
from shapely.geometry import MultiPoint, Point
from torch.utils.data import DataLoader

from swclip_core.data import (
    SAMPLE_COLUMNS,
    load_image,
    read_exif_gps,
    read_samples,
)
from swclip_core.data.tensors import ImageDataset, resize_side, split_preprocess
from swclip_core.errors import InputError

from .conftest import PHOTOS as PHOTOS_DIR

TOL_DEG = 1e-6


def _manifest() -> list[dict[str, str]]:
    with (PHOTOS_DIR / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


MANIFEST = _manifest()
# Small photos keep the image checks fast; two panoramas cover the large files.
LUND = [row for row in MANIFEST if row["path"].startswith("lund_")][:6]


def _write_csv(path: Path, header: list[str], rows: list[list[object]], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (float(degrees), float(minutes), seconds)


def _jpeg_with_gps(path: Path, lat: float, lon: float) -> Path:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update(
        {
            1: "N" if lat >= 0 else "S",
            2: _dms(abs(lat)),
            3: "E" if lon >= 0 else "W",
            4: _dms(abs(lon)),
        }
    )
    Image.new("RGB", (32, 24), (90, 120, 150)).save(path, exif=exif)
    return path


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# --- EXIF -----------------------------------------------------------------------------------------


def test_bundled_photos_are_complete():
    names = sorted(p.name for p in PHOTOS_DIR.iterdir())
    assert sum(name.endswith(".jpg") for name in names) == 41 == len(MANIFEST)
    for name in ("manifest.csv", "LICENSE-OpenSfM.txt", "LICENSE-geovisio.txt", "ATTRIBUTION.md"):
        assert name in names
    attribution = (PHOTOS_DIR / "ATTRIBUTION.md").read_text()
    assert "Mapillary AB" in attribution and "geovisio" in attribution


@pytest.mark.parametrize("row", MANIFEST, ids=[row["path"] for row in MANIFEST])
def test_exif_gps_matches_manifest(row):
    lat, lon = read_exif_gps(PHOTOS_DIR / row["path"])
    assert abs(lat - float(row["lat"])) <= TOL_DEG
    assert abs(lon - float(row["lon"])) <= TOL_DEG


@pytest.mark.parametrize("lat, lon", [(-33.8567844, 151.2152967), (40.4381311, -3.8196196)])
def test_exif_gps_hemispheres(tmp_path, lat, lon):
    path = _jpeg_with_gps(tmp_path / "photo.jpg", lat, lon)
    got = read_exif_gps(path)
    assert got is not None
    assert got[0] == pytest.approx(lat, abs=TOL_DEG)
    assert got[1] == pytest.approx(lon, abs=TOL_DEG)


def test_exif_without_gps_and_unreadable(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(plain)
    assert read_exif_gps(plain) is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match=r"broken\.jpg"):
        read_exif_gps(broken)


# --- photo folders --------------------------------------------------------------------------------


def test_read_samples_photo_folder():
    before = {p.name: _fingerprint(p) for p in PHOTOS_DIR.iterdir()}
    gdf = read_samples(PHOTOS_DIR)
    assert tuple(gdf.columns) == SAMPLE_COLUMNS
    assert len(gdf) == 41
    assert gdf.attrs["skipped"] == []
    assert gdf.crs.to_epsg() == 4326
    expected = {Path(row["path"]).stem: row for row in MANIFEST}
    assert sorted(gdf["sample_id"]) == sorted(expected)
    for record in gdf.itertuples():
        row = expected[record.sample_id]
        assert record.image_path == str(PHOTOS_DIR / row["path"])
        assert abs(record.lat - float(row["lat"])) <= TOL_DEG
        assert abs(record.lon - float(row["lon"])) <= TOL_DEG
        assert (record.geometry.x, record.geometry.y) == (record.lon, record.lat)
        assert record.street is None and record.city is None and record.region is None
    assert {p.name: _fingerprint(p) for p in PHOTOS_DIR.iterdir()} == before


def test_photo_folder_skips_photos_without_gps_and_corrupt_ones(tmp_path):
    nested = tmp_path / "day2"
    nested.mkdir()
    shutil.copy(PHOTOS_DIR / "lund_01.jpg", tmp_path / "lund_01.jpg")
    shutil.copy(PHOTOS_DIR / "lund_02.jpg", nested / "LUND_02.JPG")
    Image.new("RGB", (8, 8)).save(tmp_path / "no_gps.png")
    (nested / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "notes.txt").write_text("not a photo")
    gdf = read_samples(tmp_path)
    assert sorted(gdf["sample_id"]) == ["LUND_02", "lund_01"]
    reasons = {s["record"]: s["reason"] for s in gdf.attrs["skipped"]}
    assert set(reasons) == {"no_gps.png", "day2/corrupt.jpg"}
    assert "GPS" in reasons["no_gps.png"]
    assert "unreadable" in reasons["day2/corrupt.jpg"]


def test_photo_folder_refuses_column_options(tmp_path):
    shutil.copy(PHOTOS_DIR / "lund_01.jpg", tmp_path)
    with pytest.raises(InputError, match="--lat-column"):
        read_samples(tmp_path, lat_column="lat")


# --- CSV ------------------------------------------------------------------------------------------


def _latlon_rows(rows: list[dict[str, str]]) -> list[list[object]]:
    return [
        [Path(r["path"]).stem, str(PHOTOS_DIR / r["path"]), r["lat"], r["lon"], r["city"]]
        for r in rows
    ]


def test_csv_in_wgs84_and_british_national_grid_agree(tmp_path):
    rows = [*LUND, MANIFEST[29], MANIFEST[-1]]  # Sweden and France, far from the grid's origin
    wgs = _write_csv(
        tmp_path / "wgs84.csv",
        ["id", "image_path", "Latitude", "Longitude", "town"],
        _latlon_rows(rows),
    )
    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    bng_rows = []
    for r in rows:
        easting, northing = to_bng.transform(float(r["lon"]), float(r["lat"]))
        bng_rows.append([Path(r["path"]).stem, str(PHOTOS_DIR / r["path"]), easting, northing])
    bng = _write_csv(tmp_path / "bng.csv", ["id", "photo", "E", "N"], bng_rows)

    a = read_samples(wgs, id_column="id")
    b = read_samples(bng, id_column="id", x_column="E", y_column="N", crs="EPSG:27700")
    assert list(a["sample_id"]) == list(b["sample_id"]) == [Path(r["path"]).stem for r in rows]
    for record, r in zip(a.itertuples(), rows, strict=True):
        assert abs(record.lat - float(r["lat"])) <= TOL_DEG
        assert abs(record.lon - float(r["lon"])) <= TOL_DEG
        assert record.city == r["city"]
    np.testing.assert_allclose(b["lat"], a["lat"], rtol=0, atol=TOL_DEG)
    np.testing.assert_allclose(b["lon"], a["lon"], rtol=0, atol=TOL_DEG)
    assert b["city"].isna().all()


def test_csv_auto_detects_x_y_with_crs_and_semicolons(tmp_path):
    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    r = LUND[0]
    easting, northing = to_bng.transform(float(r["lon"]), float(r["lat"]))
    path = _write_csv(
        tmp_path / "xy.csv", ["File", "X", "Y"], [[str(PHOTOS_DIR / r["path"]), easting, northing]]
    )
    gdf = read_samples(path, crs="EPSG:27700")
    assert abs(gdf["lat"][0] - float(r["lat"])) <= TOL_DEG
    assert gdf["sample_id"][0] == "1"  # no id column: the row number

    european = _write_csv(
        tmp_path / "semicolon.csv",
        ["path", "lat", "lng"],
        [[str(PHOTOS_DIR / r["path"]), r["lat"].replace(".", ","), r["lon"].replace(".", ",")]],
        sep=";",
    )
    gdf = read_samples(european)
    assert abs(gdf["lon"][0] - float(r["lon"])) <= TOL_DEG


def test_relative_image_paths_resolve_against_the_csv_folder(tmp_path, monkeypatch):
    data = tmp_path / "project" / "survey"
    (data / "img").mkdir(parents=True)
    shutil.copy(PHOTOS_DIR / "lund_03.jpg", data / "img" / "a.jpg")
    _write_csv(data / "samples.csv", ["image", "lat", "lon"], [["img/a.jpg", 55.7, 13.19]])
    monkeypatch.chdir(tmp_path)  # a different working directory must not matter
    gdf = read_samples(Path("project/survey/samples.csv"))
    assert gdf["image_path"][0] == str((data / "img" / "a.jpg").resolve())


def test_bad_records_are_skipped_with_reasons(tmp_path):
    good = [str(PHOTOS_DIR / r["path"]) for r in LUND[:2]]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\x00\x01 definitely not an image" * 20)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((PHOTOS_DIR / "lund_04.jpg").read_bytes()[:20_000])
    rows = [
        ["ok1", good[0], 55.69, 13.19],
        ["missing", str(tmp_path / "nowhere.jpg"), 55.69, 13.19],
        ["corrupt", str(corrupt), 55.69, 13.19],
        ["truncated", str(truncated), 55.69, 13.19],
        ["north", good[1], 95, 13.19],
        ["east", good[1], 55.69, 200],
        ["nolat", good[1], "", 13.19],
        ["text", good[1], "abc", 13.19],
        ["ok2", good[1], -12.5, -77.0],
    ]
    path = _write_csv(tmp_path / "s.csv", ["id", "image_path", "lat", "lon"], rows)
    before = _fingerprint(path)
    gdf = read_samples(path, id_column="id")
    assert list(gdf["sample_id"]) == ["ok1", "ok2"]
    assert list(gdf["lat"]) == [55.69, -12.5] and list(gdf["lon"]) == [13.19, -77.0]
    reasons = {s["record"]: s["reason"] for s in gdf.attrs["skipped"]}
    assert list(reasons) == ["missing", "corrupt", "truncated", "north", "east", "nolat", "text"]
    assert "not found" in reasons["missing"] and "nowhere.jpg" in reasons["missing"]
    assert "unreadable" in reasons["corrupt"] and "corrupt.jpg" in reasons["corrupt"]
    assert "unreadable" in reasons["truncated"]
    assert "latitude 95" in reasons["north"]
    assert "longitude 200" in reasons["east"]
    assert "missing" in reasons["nolat"] and "non-numeric" in reasons["text"]
    assert _fingerprint(path) == before

    unchecked = read_samples(path, id_column="id", check_images=False)
    assert list(unchecked["sample_id"]) == ["ok1", "corrupt", "truncated", "ok2"]


def test_no_usable_record_lists_the_reasons(tmp_path):
    path = _write_csv(
        tmp_path / "s.csv", ["image_path", "lat", "lon"], [["gone.jpg", 1, 2], ["x.jpg", 95, 2]]
    )
    with pytest.raises(InputError, match=r"No usable record.*row 1: image file not found"):
        read_samples(path)


ONE_ROW = "image_path,lat,lon\na.jpg,1,2\n"


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("", {}, "is empty"),
        ("image_path,lat,lon\n", {}, "no rows"),
        (ONE_ROW, {"image_column": "pic"}, r"'pic'.*image_path, lat, lon"),
        (ONE_ROW, {"lat_column": "breite"}, "Available columns"),
        ("image_path,foo,bar\na.jpg,1,2\n", {}, r"path, foo, bar.*--x-column/--y-column and --crs"),
        ("pic,lat,lon\na.jpg,1,2\n", {}, "--image-column"),
        (ONE_ROW, {"crs": "EPSG:999999"}, "Unknown coordinate reference"),
        (ONE_ROW, {"crs": "EPSG:27700"}, "projected"),
    ],
)
def test_csv_input_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_samples(path, **kwargs)


def test_duplicate_ids_are_named(tmp_path):
    image = str(PHOTOS_DIR / "lund_01.jpg")
    rows = [["a", image, 1, 2], ["b", image, 1, 2], ["a", image, 1, 2], ["c", image, 1, 2]]
    path = _write_csv(tmp_path / "d.csv", ["name", "image", "lat", "lon"], rows)
    with pytest.raises(InputError, match=r"Duplicate sample ids.*'a'") as error:
        read_samples(path, id_column="NAME")
    assert "'b'" not in str(error.value)


def test_missing_source():
    with pytest.raises(InputError, match="does not exist"):
        read_samples("/no/such/place/samples.gpkg")


# --- vector layers --------------------------------------------------------------------------------


def _sample_frame(crs: str, relative_to: Path | None = None) -> gpd.GeoDataFrame:
    rows = [*LUND[:4], MANIFEST[30]]
    images = []
    for r in rows:
        image = PHOTOS_DIR / r["path"]
        if relative_to is not None:
            (relative_to / "photos").mkdir(exist_ok=True)
            shutil.copy(image, relative_to / "photos" / r["path"])
            image = Path("photos") / r["path"]
        images.append(str(image))
    frame = gpd.GeoDataFrame(
        {
            "sid": [Path(r["path"]).stem for r in rows],
            "image_path": images,
            "street": ["Sandgatan", None, "Sandgatan", "Sandgatan", "Rue de Paris"],
            "city": [r["city"] for r in rows],
            "country": [r["country"] for r in rows],
            "region": [r["admin1"] for r in rows],
        },
        geometry=[Point(float(r["lon"]), float(r["lat"])) for r in rows],
        crs="EPSG:4326",
    )
    return frame.to_crs(crs)


@pytest.mark.parametrize(
    "name, crs",
    [("s.gpkg", "EPSG:3006"), ("s.geojson", "EPSG:4326"), ("s.shp", "EPSG:3857")],
)
def test_vector_round_trip(tmp_path, name, crs):
    frame = _sample_frame(crs, relative_to=tmp_path)
    path = tmp_path / name
    frame.to_file(path)
    before = _fingerprint(path)
    gdf = read_samples(path, id_column="sid")
    assert tuple(gdf.columns) == SAMPLE_COLUMNS
    assert list(gdf["sample_id"]) == list(frame["sid"])
    expected = frame.to_crs("EPSG:4326")
    np.testing.assert_allclose(gdf["lat"], expected.geometry.y, rtol=0, atol=TOL_DEG)
    np.testing.assert_allclose(gdf["lon"], expected.geometry.x, rtol=0, atol=TOL_DEG)
    assert list(gdf["image_path"]) == [str(tmp_path / p) for p in frame["image_path"]]
    assert list(gdf["street"]) == ["Sandgatan", None, "Sandgatan", "Sandgatan", "Rue de Paris"]
    assert list(gdf["city"]) == list(frame["city"])
    assert list(gdf["region"]) == list(frame["region"])
    assert _fingerprint(path) == before


def test_geopackage_layers_multipoints_and_empty_geometries(tmp_path):
    path = tmp_path / "two.gpkg"
    frame = _sample_frame("EPSG:4326")
    frame.to_file(path, layer="samples")
    frame.iloc[:1].to_file(path, layer="other")
    with pytest.raises(InputError, match=r"--layer") as error:
        read_samples(path)
    assert "samples" in str(error.value) and "other" in str(error.value)
    with pytest.raises(InputError, match="'nope' not found"):
        read_samples(path, layer="nope")

    mixed = frame.copy()
    point = mixed.geometry.iloc[0]
    mixed["geometry"] = [MultiPoint([point]), Point(), *mixed.geometry.iloc[2:]]
    mixed.to_file(tmp_path / "mixed.gpkg", layer="samples")
    gdf = read_samples(tmp_path / "mixed.gpkg", layer="samples")
    assert list(gdf["sample_id"]) == ["1", "3", "4", "5"]
    assert (gdf["lat"][0], gdf["lon"][0]) == (point.y, point.x)
    assert gdf.attrs["skipped"][0]["record"] == "row 2"
    assert "missing" in gdf.attrs["skipped"][0]["reason"]


def test_polygon_layer_is_refused(tmp_path):
    frame = _sample_frame("EPSG:3006")
    frame["geometry"] = frame.geometry.buffer(10)
    frame.to_file(tmp_path / "polygons.gpkg")
    with pytest.raises(InputError, match=r"use point geometries, e\.g\. centroids"):
        read_samples(tmp_path / "polygons.gpkg")


# --- images ---------------------------------------------------------------------------------------


def test_load_image_applies_exif_orientation(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (220, 30, 30)  # left half red
    stored[:, 20:] = (30, 30, 220)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (20, 40)
    expected = np.rot90(stored, k=-1)  # clockwise: the stored left edge becomes the top
    assert np.abs(np.asarray(image, dtype=int) - expected).mean() < 8


def test_load_image_composites_rgba_on_white(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :2] = (255, 0, 0, 0)  # invisible red
    rgba[:, 2:4] = (0, 200, 0, 255)  # opaque green
    rgba[:, 4:] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    got = np.asarray(load_image(path), dtype=float)
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    assert load_image(path).mode == "RGB"
    assert np.abs(got - expected).max() <= 1


def test_load_image_16_bit_greyscale(tmp_path):
    # Not spanning 0..65535, so a min-max stretch would give other values than the 16-bit scale.
    values = np.array([[700, 257 * 128, 50000], [1000, 30000, 60000]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    got = np.asarray(image)
    expected = np.round(values / 65535 * 255)
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], expected)


@pytest.mark.parametrize(
    "values, expected_unit",
    [
        # 32-bit integers within 0..65535 keep the 16-bit scale
        (np.array([[700, 30000, 60000]], dtype=np.int32), lambda v: v / 65535),
        # other ranges (here negative values) are stretched from min to max
        (np.array([[-500, 0, 1500]], dtype=np.int32), lambda v: (v + 500) / 2000),
        # floats within 0..1 are read as intensities
        (np.array([[0.0, 0.25, 0.9]], dtype=np.float32), lambda v: v),
        # other float ranges are stretched
        (np.array([[-2.0, 0.0, 6.0]], dtype=np.float32), lambda v: (v + 2) / 8),
    ],
)
def test_load_image_high_bit_depth_tiff(tmp_path, values, expected_unit):
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    got = np.asarray(load_image(path))
    expected = np.round(expected_unit(values.astype(np.float64)) * 255)
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], expected)


def test_load_image_palette_and_greyscale(tmp_path):
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9)
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    image.save(tmp_path / "palette.png")
    got = np.asarray(load_image(tmp_path / "palette.png"))
    lookup = np.array(palette, dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(got, lookup[indices])

    image.save(tmp_path / "transparent.png", transparency=1)
    got = np.asarray(load_image(tmp_path / "transparent.png"))
    np.testing.assert_array_equal(got[indices == 1], 255)
    np.testing.assert_array_equal(got[indices == 2], [[0, 255, 0]] * 2)

    grey = np.array([[0, 77, 255]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "grey.png")), np.repeat(grey[..., None], 3, axis=2)
    )


def test_load_image_downscales_panoramas_faithfully():
    path = PHOTOS_DIR / "panoramax_1.jpg"
    image = load_image(path, max_side=512)
    assert image.mode == "RGB" and image.size == (512, 256)
    with Image.open(path) as full:
        reference = full.convert("RGB").resize((512, 256), Image.Resampling.BICUBIC)
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).mean() < 4
    assert load_image(path).size == (2048, 1024)
    assert load_image(PHOTOS_DIR / "lund_01.jpg").size == (1024, 768)  # never upscaled


def test_min_side_decodes_a_panorama_small_but_keeps_what_the_model_sees():
    from torchvision import transforms

    path = PHOTOS_DIR / "panoramax_1.jpg"  # 5760x2880
    small = load_image(path, min_side=256)
    assert small.size == (720, 360)  # the 1/8 DCT scale: the smallest whose shorter side >= 256
    assert load_image(path, min_side=2000).size == (2048, 1024)  # max_side stays the cap
    model_input = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    assert resize_side(model_input) == 256
    seen_small = np.asarray(model_input(small), dtype=int)
    seen_full = np.asarray(model_input(load_image(path)), dtype=int)
    assert np.abs(seen_small - seen_full).mean() < 3  # grey levels out of 255
    assert resize_side(transforms.Compose([transforms.RandomResizedCrop(224)])) is None


def test_split_preprocess_gives_the_unsplit_transforms_pixels():
    from swclip_core.device import resolve_device
    from swclip_core.models import create_backbone

    preprocess = create_backbone("swclip-lite", device=resolve_device("cpu")).preprocess
    split = split_preprocess(preprocess)
    images = [load_image(p, min_side=256) for p in sorted(PHOTOS_DIR.glob("*.jpg"))[::6]]
    pixels = torch.stack([split.on_cpu(image) for image in images])
    assert pixels.dtype == torch.uint8 and pixels.shape[1:] == (3, 224, 224)
    expected = torch.stack([preprocess(image) for image in images])
    torch.testing.assert_close(split.finish(pixels), expected, atol=1e-6, rtol=0)
    assert resize_side(split.on_cpu) == 256  # the decoder still sees the model's input resize
    assert split_preprocess(_to_tensor) is None  # anything else is used unsplit


def test_load_image_names_unreadable_files(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match=r"broken\.png"):
        load_image(path)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((16, 16)), dtype=np.float32).copy())


def test_image_dataset_in_data_loader(tmp_path):
    paths = [PHOTOS_DIR / r["path"] for r in LUND[:3]]
    loader = DataLoader(ImageDataset(paths, _to_tensor, max_side=64), batch_size=2)
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1], [2]]
    first = _to_tensor(load_image(paths[0], max_side=64))
    assert torch.equal(batches[0][0][0], first)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    dataset = ImageDataset([paths[0], broken], _to_tensor, max_side=64)
    with pytest.raises(InputError, match=r"broken\.jpg"):
        list(DataLoader(dataset, batch_size=1, num_workers=1))
