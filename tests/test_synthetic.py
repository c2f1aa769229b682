"""Tests of the synthetic street-scene generator and the place-list helpers."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from swclip_core.data.places import BUNDLED_PLACES, demo_places, load_places, select_places
from swclip_core.data.scenes import SYNTHETIC_MARKER, local_field, render_scene
from swclip_core.data.synthetic import generate_scenes
from swclip_core.errors import InputError

SMALL = (128, 96)


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Reference great-circle distance, written out independently of the library."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).ravel()


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return load_places(BUNDLED_PLACES)


@pytest.fixture(scope="module")
def rendered(bundled: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """160 places over the whole island (streets of 3-8 places) and their images at seed 7."""
    places = select_places(bundled, n=160, seed=7, min_per_street=3, max_per_street=8)
    images = np.stack(
        [
            _pixels(render_scene(r.lat, r.lon, r.street, r.city, seed=7, size=SMALL))
            for r in places.itertuples()
        ]
    )
    return places, images


def _pair_stats(places: pd.DataFrame, images: np.ndarray) -> pd.DataFrame:
    """Every pair once: reference distance, same town/street flags, mean abs pixel difference."""
    rows = []
    recs = places.to_dict("records")
    for i in range(len(recs)):
        diff = np.abs(images[i + 1 :] - images[i]).mean(axis=1)
        for j in range(i + 1, len(recs)):
            a, b = recs[i], recs[j]
            same_city = a["city"] is not None and a["city"] == b["city"]
            rows.append(
                {
                    "dist_m": _haversine_m(a["lat"], a["lon"], b["lat"], b["lon"]),
                    "same_city": same_city,
                    "same_street": same_city
                    and a["street"] is not None
                    and a["street"] == b["street"],
                    "pixel_diff": float(diff[j - i - 1]),
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ place lists


def test_bundled_place_list_and_attribution_are_shipped() -> None:
    assert BUNDLED_PLACES.is_file()
    attribution = (BUNDLED_PLACES.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "OpenStreetMap contributors" in attribution and "ODbL" in attribution


def test_load_places_reads_bundled_file_like_csv_module(bundled: pd.DataFrame) -> None:
    with BUNDLED_PLACES.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(bundled) == len(rows)  # every row of the file has a coordinate
    assert list(bundled.columns[:6]) == ["place_id", "lat", "lon", "street", "city", "country"]
    for k in (0, 17, 1000, len(rows) - 1):
        row, got = rows[k], bundled.iloc[k]
        assert got["place_id"] == k
        assert got["lat"] == pytest.approx(float(row["lat"]))
        assert got["lon"] == pytest.approx(float(row["lon"]))
        assert got["street"] == (row["addr:street"] or None)
    # Empty town values fall back to addr:place, then addr:locality.
    for k, row in enumerate(rows):
        expected = row["addr:city"] or row["addr:place"] or row["addr:locality"] or None
        assert bundled.at[k, "city"] == expected, k
    # Missing names are None, never "nan" or "".
    for column in ("street", "city", "country"):
        values = bundled[column].dropna()
        assert not values.isin(["", "nan", "None"]).any()


def test_load_places_custom_columns_and_bad_rows(tmp_path) -> None:
    path = tmp_path / "places.csv"
    path.write_text(
        "Latitude,Longitude,Road,Town\n"
        "54.15,-4.48,Victoria Street,Douglas\n"
        "abc,-4.48,Bad Row,Douglas\n"
        "95.0,-4.48,Too North,Douglas\n"
        "54.32,-4.38,,Ramsey\n",
        encoding="utf-8",
    )
    table = load_places(path, street_column="Road", city_column="Town", country="Isle of Man")
    assert table["place_id"].tolist() == [0, 3]
    assert table["street"].tolist() == ["Victoria Street", None]
    assert table["city"].tolist() == ["Douglas", "Ramsey"]
    assert table["country"].tolist() == ["Isle of Man", "Isle of Man"]
    assert [s["row"] for s in table.attrs["skipped_rows"]] == [1, 2]
    with pytest.raises(InputError, match="Street"):
        load_places(path, street_column="Street")
    with pytest.raises(InputError, match="not found"):
        load_places(tmp_path / "missing.csv")


def test_select_places_reproducible_and_respects_filters(bundled: pd.DataFrame) -> None:
    towns = ["Peel", "port erin", "Castletown"]
    a = select_places(bundled, n=120, seed=3, cities=towns, min_per_street=4)
    b = select_places(bundled, n=120, seed=3, cities=towns, min_per_street=4)
    c = select_places(bundled, n=120, seed=4, cities=towns, min_per_street=4)
    pd.testing.assert_frame_equal(a, b)
    assert a["place_id"].tolist() != c["place_id"].tolist()
    assert len(a) == 120 and a["place_id"].is_unique
    assert set(a["city"]) <= {"Peel", "Port Erin", "Castletown"}
    assert a.groupby(["city", "street"]).size().min() >= 4
    assert a.groupby(["city", "street"]).size().max() <= 30
    with pytest.raises(InputError, match="Atlantis"):
        select_places(bundled, n=10, seed=0, cities=["Atlantis"])


def test_demo_places_has_streets_with_neighbours() -> None:
    places = demo_places(n=200, seed=0)
    assert len(places) == 200
    assert (places["country"] == "Isle of Man").all()
    assert places.groupby(["city", "street"]).size().min() >= 3


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("size", [(256, 192), (224, 224), SMALL])
def test_render_scene_is_rgb_of_requested_size(size) -> None:
    image = render_scene(54.1523, -4.4861, "Victoria Street", "Douglas", seed=0, size=size)
    assert image.mode == "RGB" and image.size == size
    pixels = np.asarray(image)
    # A drawn scene, not a flat or saturated frame.
    assert pixels.std() > 20 and 40 < pixels.mean() < 220


def test_render_scene_is_deterministic_per_seed_and_view() -> None:
    args = (54.1523, -4.4861, "Victoria Street", "Douglas")
    first = render_scene(*args, seed=5).tobytes()
    assert render_scene(*args, seed=5).tobytes() == first
    assert render_scene(*args, seed=6).tobytes() != first
    assert render_scene(*args, seed=5, view=1).tobytes() != first


def test_render_scene_marks_image_synthetic() -> None:
    image = render_scene(54.1523, -4.4861, None, None, seed=0)
    exif = Image.Exif()
    exif.load(image.info["exif"])
    assert SYNTHETIC_MARKER in exif[0x010E] and SYNTHETIC_MARKER in exif[0x0131]


def test_render_scene_rejects_invalid_coordinates() -> None:
    with pytest.raises(InputError):
        render_scene(float("nan"), 0.0, None, None, seed=0)


def test_local_field_is_smooth_over_metres() -> None:
    rng = np.random.default_rng(0)
    near, far = [], []
    for lat, lon in zip(rng.uniform(54.05, 54.4, 50), rng.uniform(-4.8, -4.3, 50), strict=True):
        here = local_field(lat, lon, seed=0)
        near.append(np.abs(here - local_field(lat + 0.0009, lon, seed=0)).mean())  # 100 m north
        far.append(np.abs(here - local_field(lat + 0.045, lon, seed=0)).mean())  # 5 km north
    assert np.mean(near) < 0.3 * np.mean(far)


def test_nearby_places_look_more_alike_than_far_ones(rendered) -> None:
    pairs = _pair_stats(*rendered)
    near = pairs.loc[pairs["dist_m"] < 200, "pixel_diff"]
    far = pairs.loc[pairs["dist_m"] > 5000, "pixel_diff"]
    assert len(near) >= 100 and len(far) >= 100
    assert near.mean() < 0.9 * far.mean()


def test_same_street_looks_more_alike_than_other_streets_of_the_town(rendered) -> None:
    pairs = _pair_stats(*rendered)
    town = pairs[pairs["same_city"]]
    same = town.loc[town["same_street"], "pixel_diff"]
    other = town.loc[~town["same_street"], "pixel_diff"]
    assert len(same) >= 50 and len(other) >= 50
    assert same.mean() < 0.93 * other.mean()


# ------------------------------------------------------------------ writing a dataset


def test_generate_scenes_writes_marked_jpegs_and_reuses_them(tmp_path) -> None:
    places = demo_places(n=6, seed=1)
    table = generate_scenes(places, tmp_path / "a", seed=2, size=SMALL, views_per_place=2)
    assert len(table) == 12
    assert table["synthetic"].all()
    assert table["sample_id"].is_unique
    assert list(table.columns[:8]) == [
        "sample_id",
        "image_path",
        "lat",
        "lon",
        "street",
        "city",
        "country",
        "synthetic",
    ]
    for row in table.itertuples():
        with Image.open(row.image_path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == SMALL
            exif = image.getexif()
            assert SYNTHETIC_MARKER in exif[0x010E]
            gps = exif.get_ifd(0x8825)
        lat = sum(float(v) / 60**k for k, v in enumerate(gps[2])) * (1 if gps[1] == "N" else -1)
        lon = sum(float(v) / 60**k for k, v in enumerate(gps[4])) * (1 if gps[3] == "E" else -1)
        assert _haversine_m(lat, lon, row.lat, row.lon) < 1.0
    # Same inputs elsewhere give the same bytes; a re-run rewrites nothing.
    again = generate_scenes(places, tmp_path / "b", seed=2, size=SMALL, views_per_place=2)
    for p, q in zip(table["image_path"], again["image_path"], strict=True):
        assert Path(p).read_bytes() == Path(q).read_bytes()
    stamps = {p: os.stat(p).st_mtime_ns for p in table["image_path"]}
    rerun = generate_scenes(places, tmp_path / "a", seed=2, size=SMALL, views_per_place=2)
    pd.testing.assert_frame_equal(rerun, table)
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamps.items())
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == sorted(
        Path(p).name for p in table["image_path"]
    )  # no temporary files left behind
    other_seed = generate_scenes(places, tmp_path / "a", seed=3, size=SMALL)
    assert not set(other_seed["image_path"]) & set(table["image_path"])


def test_generate_scenes_needs_coordinates(tmp_path) -> None:
    with pytest.raises(InputError, match="lat"):
        generate_scenes(pd.DataFrame({"x": [1.0]}), tmp_path)


def test_saved_jpeg_round_trip_matches_render(tmp_path) -> None:
    places = demo_places(n=1, seed=0)
    row = generate_scenes(places, tmp_path, seed=0, size=SMALL).iloc[0]
    drawn = np.asarray(
        render_scene(row.lat, row.lon, row.street, row.city, seed=0, size=SMALL), dtype=np.float32
    )
    with Image.open(row.image_path) as image:
        saved = np.asarray(image.convert("RGB"), dtype=np.float32)
    # Only JPEG loss separates the file from the drawing.
    assert np.abs(saved - drawn).mean() < 6.0
