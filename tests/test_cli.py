"""The `swclip` command end to end on the bundled real photos, and its handling of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyogrio
import pytest

from swclip_core.cli import EXIT_PARTIAL, main
from swclip_core.data import read_exif_gps

from .conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, feature_cache):
    """`swclip train` on the 41 bundled photos (coordinates from their EXIF), a few epochs."""
    run = tmp_path_factory.mktemp("runs") / "photos"
    code = main(
        [
            "train",
            str(PHOTOS),
            "--out",
            str(run),
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    return run


def test_help_explains_commands_and_exit_codes():
    result = subprocess.run(
        [sys.executable, "-m", "swclip_core.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for word in ("train", "predict", "evaluate", "demo", "exit codes", "skipped"):
        assert word in result.stdout


def test_train_writes_a_reproducible_run_folder(photo_run):
    config = json.loads((photo_run / "config.json").read_text())
    assert config["objective"] == "swclip" and config["epochs"] == 3
    epochs = [json.loads(line) for line in (photo_run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(np.isfinite(e["loss"]) for e in epochs)
    gallery = pd.read_csv(photo_run / "train_samples.csv")
    assert len(gallery) == 41 and gallery["caption"].str.contains("Lat: ").all()


def test_predict_writes_points_with_errors_in_metres(photo_run, tmp_path, feature_cache):
    out = tmp_path / "pred.gpkg"
    code = main(
        [
            "predict",
            str(PHOTOS),
            "--model",
            str(photo_run),
            "--out",
            str(out),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    points = pyogrio.read_dataframe(out, layer="predicted_points")
    assert len(points) == 41 and points.crs.to_epsg() == 4326
    # the truth columns are the EXIF coordinates, and error_m is their distance to the prediction
    for row in points.itertuples():
        lat, lon = read_exif_gps(row.image_path)
        assert row.true_lat == pytest.approx(lat, abs=1e-9)
        assert row.true_lon == pytest.approx(lon, abs=1e-9)
    from swclip_core.geo import haversine_m

    expected = haversine_m(points.true_lat, points.true_lon, points.geometry.y, points.geometry.x)
    assert np.allclose(points["error_m"], expected, rtol=1e-6, atol=1e-3)
    lines = pyogrio.read_dataframe(out, layer="error_lines")
    assert len(lines) == 41


def test_evaluate_prints_table1_and_writes_json(photo_run, tmp_path, capsys, feature_cache):
    out = tmp_path / "figures.json"
    code = main(
        [
            "evaluate",
            str(PHOTOS),
            "--model",
            str(photo_run),
            "--json",
            str(out),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    for column in ("median_error_m", "r_at_1", "geo_align", "ssi", "city_align"):
        assert column in printed.out
    figures = json.loads(out.read_text(), parse_constant=strict_json_refuses)
    summary = figures["summary"]
    assert 0.0 <= summary["r_at_1"] <= 1.0 and summary["n"] == 41
    assert summary["city_align"] is None  # no photo has a city: undefined, null in JSON
    # the very photos it was trained on: said, and kept with the figures
    assert figures["context"]["photos_seen_in_training"] == 41
    assert f"swclip: warning: 41 of these 41 photos trained the model {photo_run}" in printed.err


def test_predict_counts_the_photos_the_model_was_trained_on(
    photo_run, tmp_path, capsys, feature_cache
) -> None:
    # Two training photos (one path spelled another way), a copy of a third under another name
    # in another folder, as a train/test split made by copying leaves it, and another image (a
    # training photo re-encoded): the copy is the same image, so three count.
    from PIL import Image

    folder = tmp_path / "test_split"
    folder.mkdir()
    copy = folder / "IMG_0003.jpg"
    shutil.copyfile(PHOTOS / "lund_03.jpg", copy)
    other = folder / "lund_07.jpg"
    Image.open(PHOTOS / "lund_07.jpg").save(other, quality=70)
    sources = {  # each photo scored, and the bundled photo whose coordinates it has
        PHOTOS / "lund_01.jpg": "lund_01.jpg",
        PHOTOS / ".." / PHOTOS.name / "lund_02.jpg": "lund_02.jpg",
        copy: "lund_03.jpg",
        other: "lund_07.jpg",
    }
    rows = []
    for path, source in sources.items():
        lat, lon = read_exif_gps(PHOTOS / source)
        rows.append({"image_path": str(path), "lat": lat, "lon": lon})
    table = tmp_path / "photos.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    out = tmp_path / "pred.gpkg"
    args = ["--model", str(photo_run), "--out", str(out), "--cache-dir", str(feature_cache)]
    assert main(["predict", str(table), *args]) == 0
    err = capsys.readouterr().err
    assert "swclip: warning: 3 of these 4 photos trained the model" in err
    assert "(the same images, by content)" in err
    # which ones: a field of the points and of the error lines, to filter them out on the map
    for layer in ("predicted_points", "error_lines"):
        marked = pyogrio.read_dataframe(out, layer=layer)["in_training"]
        assert marked.tolist() == [True, True, True, False], layer
    other.unlink()
    assert main(["predict", str(folder), *args]) == 0  # the copy alone, read from its folder
    assert "swclip: warning: 1 of these 1 photos trained the model" in capsys.readouterr().err


def test_the_library_counts_the_photos_a_model_was_trained_on(photo_run, feature_cache) -> None:
    import swclip_core

    model = swclip_core.load_model(photo_run, "cpu")
    samples = swclip_core.read_samples(PHOTOS).iloc[:5]
    evaluation = swclip_core.localize(samples, model, cache_dir=feature_cache)
    assert evaluation.context["photos_seen_in_training"] == 5
    assert evaluation.predictions["in_training"].tolist() == [True] * 5


def strict_json_refuses(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_an_existing_run_is_not_overwritten_without_resume(photo_run, capsys):
    code = main(["train", str(PHOTOS), "--out", str(photo_run), "--epochs", "1"])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_continues_from_the_last_epoch(tmp_path, feature_cache):
    run = tmp_path / "run"
    common = [
        str(PHOTOS),
        "--out",
        str(run),
        "--batch-size",
        "16",
        "--cache-dir",
        str(feature_cache),
    ]
    assert main(["train", *common, "--epochs", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    config["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", *common, "--epochs", "2", "--resume"]) == 0
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_resume_without_epochs_keeps_the_runs_own(photo_run, tmp_path, capsys, feature_cache):
    """Continuing a 3-epoch run without --epochs finishes those 3, not the default 30."""
    run = tmp_path / "run"
    shutil.copytree(photo_run, run)
    common = ["--batch-size", "16", "--cache-dir", str(feature_cache)]
    assert main(["train", str(PHOTOS), "--out", str(run), "--resume", *common]) == 0
    assert "already complete (3 epochs" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


def test_evaluate_with_a_gallery_scores_the_open_protocol(
    photo_run, tmp_path, capsys, feature_cache
):
    """A --gallery is the open protocol's: given alone it selects it; with --protocol closed,
    which would ignore it, the command refuses."""
    gallery = tmp_path / "gallery.csv"
    pd.read_csv(photo_run / "train_samples.csv")[["lat", "lon"]].head(10).to_csv(
        gallery, index=False
    )
    out = tmp_path / "figures.json"
    common = ["--model", str(photo_run), "--cache-dir", str(feature_cache)]
    assert (
        main(["evaluate", str(PHOTOS), *common, "--gallery", str(gallery), "--json", str(out)]) == 0
    )
    assert "open protocol: 10 candidates" in capsys.readouterr().out
    assert json.loads(out.read_text())["context"]["protocol"] == "open"
    args = ["evaluate", str(PHOTOS), *common, "--gallery", str(gallery), "--protocol", "closed"]
    assert main(args) == 2
    assert "--protocol open" in capsys.readouterr().err


def test_too_few_usable_photos_to_train_say_why_the_others_were_skipped(tmp_path, capsys):
    shutil.copy(PHOTOS / "lund_01.jpg", tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    code = main(["train", str(tmp_path), "--out", str(tmp_path.parent / "run"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "at least 2 usable samples, got 1" in err and "broken.jpg: unreadable image" in err


def bad_input_csv(tmp_path):
    """Good photos plus one record of each kind of problem."""
    names = ["lund_01.jpg", "lund_05.jpg", "lund_10.jpg", "lund_20.jpg", "panoramax_e1.jpg"]
    rows = []
    for name in names:
        shutil.copy(PHOTOS / name, tmp_path / name)
        lat, lon = read_exif_gps(PHOTOS / name)
        rows.append({"id": name, "image": name, "lat": lat, "lon": lon})
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    rows += [
        {"id": "missing", "image": "nowhere.jpg", "lat": 55.7, "lon": 13.2},
        {"id": "unreadable", "image": "broken.jpg", "lat": 55.7, "lon": 13.2},
        {"id": "polar", "image": names[0], "lat": 95.0, "lon": 13.2},
        {"id": "nocoord", "image": names[1], "lat": None, "lon": 13.2},
    ]
    path = tmp_path / "points.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_bad_records_are_skipped_and_reported(tmp_path, capsys, feature_cache):
    csv = bad_input_csv(tmp_path)
    before = csv.read_bytes()
    run = tmp_path / "run"
    code = main(
        ["train", str(csv), "--out", str(run), "--epochs", "1", "--cache-dir", str(feature_cache)]
    )
    assert code == EXIT_PARTIAL
    err = capsys.readouterr().err
    for record in ("missing", "unreadable", "polar", "nocoord"):
        assert record in err
    skipped = pd.read_csv(run / "skipped.csv")
    assert sorted(skipped["record"]) == ["missing", "nocoord", "polar", "unreadable"]
    assert len(pd.read_csv(run / "train_samples.csv")) == 5  # the good records went through
    assert csv.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,latitude_x,longitude_y\na.jpg,1,2\n", "column"),
        ("image,lat,lon\n", "no"),
    ],
)
def test_unusable_input_exits_2_with_a_message(tmp_path, capsys, content, message):
    csv = tmp_path / "in.csv"
    csv.write_text(content)
    code = main(["train", str(csv), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("swclip: error:") and message in err.lower()
    assert "Traceback" not in err


def test_missing_input_and_explicit_missing_column(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "nope.csv" in capsys.readouterr().err
    csv = tmp_path / "in.csv"
    csv.write_text("image,lat,lon\na.jpg,1,2\n")
    code = main(["train", str(csv), "--out", str(tmp_path / "r"), "--lat-column", "Y"])
    assert code == 2
    assert "Y" in capsys.readouterr().err


def test_predict_refuses_a_non_geopackage_output(photo_run, tmp_path, capsys):
    code = main(
        ["predict", str(PHOTOS), "--model", str(photo_run), "--out", str(tmp_path / "x.shp")]
    )
    assert code == 2 and ".gpkg" in capsys.readouterr().err


def test_predict_with_a_folder_that_is_not_a_model(tmp_path, capsys):
    code = main(
        ["predict", str(PHOTOS), "--model", str(tmp_path), "--out", str(tmp_path / "x.gpkg")]
    )
    assert code == 3 and "swclip train" in capsys.readouterr().err


def test_train_then_predict_on_the_shared_photos(shared_data, tmp_path, feature_cache):
    """The photos of the data folder beside a development checkout (skipped in a user's clone,
    which has the bundled copy)."""
    photos = shared_data / "photos"
    run, out = tmp_path / "run", tmp_path / "pred.gpkg"
    common = ["--cache-dir", str(feature_cache)]
    assert main(["train", str(photos), "--out", str(run), "--epochs", "2", *common]) == 0
    assert main(["predict", str(photos), "--model", str(run), "--out", str(out), *common]) == 0
    points = pyogrio.read_dataframe(out, layer="predicted_points")
    manifest = pd.read_csv(photos / "manifest.csv").set_index("path")
    assert len(points) == len(manifest) == 41
    for row in points.itertuples():
        truth = manifest.loc[row.sample_id + ".jpg"]
        assert abs(row.true_lat - truth.lat) < 1e-6 and abs(row.true_lon - truth.lon) < 1e-6
    assert np.isfinite(points["error_m"]).all() and (points["error_m"] >= 0).all()


def test_predict_with_regions_writes_a_fairness_choropleth(photo_run, tmp_path, feature_cache):
    import geopandas as gpd
    from shapely.geometry import box

    regions = gpd.GeoDataFrame(
        {"name": ["Lund", "Bretagne and Ile-de-France"]},
        geometry=[box(13.1, 55.6, 13.3, 55.8), box(-2.5, 47.5, 2.5, 49.5)],
        crs="EPSG:4326",
    )
    regions.to_file(tmp_path / "regions.geojson")
    out = tmp_path / "pred.gpkg"
    code = main(
        [
            "predict",
            str(PHOTOS),
            "--model",
            str(photo_run),
            "--out",
            str(out),
            "--regions",
            str(tmp_path / "regions.geojson"),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    choropleth = pyogrio.read_dataframe(out, layer="region_choropleth").set_index("region")
    assert choropleth.loc["Lund", "n"] == 29
    assert choropleth.loc["Bretagne and Ile-de-France", "n"] == 12
    points = pyogrio.read_dataframe(out, layer="predicted_points")
    lund = points[points["region"] == "Lund"]["error_m"]
    assert choropleth.loc["Lund", "median_error_m"] == pytest.approx(lund.median())


def test_predict_localizes_photos_whose_position_is_unknown(
    photo_run, tmp_path, feature_cache, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    from PIL import Image

    folder = tmp_path / "to_localize"
    folder.mkdir()
    shutil.copy(PHOTOS / "lund_03.jpg", folder / "known.jpg")
    shutil.copy(PHOTOS / "panoramax_e1.jpg", folder / "known2.jpg")
    Image.open(PHOTOS / "lund_07.jpg").save(folder / "unknown.jpg")  # saved without EXIF GPS
    out = tmp_path / "pred.gpkg"
    code = main(
        [
            "predict",
            str(folder),
            "--model",
            str(photo_run),
            "--out",
            str(out),
            "--map",
            str(tmp_path / "map.png"),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    points = pyogrio.read_dataframe(out, layer="predicted_points").set_index("sample_id")
    assert np.isnan(points.loc["unknown", "error_m"]) and np.isnan(
        points.loc["unknown", "true_lat"]
    )
    assert np.isfinite(points.loc["known", "error_m"])
    assert points.geometry.notna().all()  # every photo gets a predicted position
    lines = pyogrio.read_dataframe(out, layer="error_lines")
    assert sorted(lines["sample_id"]) == ["known", "known2"]
    # training and evaluation still need the truth: the same folder loses the unknown photo there
    assert (
        main(
            ["evaluate", str(folder), "--model", str(photo_run), "--cache-dir", str(feature_cache)]
        )
        == EXIT_PARTIAL
    )
    assert not (tmp_path / "skipped.csv").exists()  # evaluate has no output folder: printed only


@pytest.mark.parametrize("suffix", [".gpkg", ".csv"])
def test_predict_reads_a_layer_in_chunks_and_writes_the_same_geopackage(
    photo_run, tmp_path, feature_cache, monkeypatch, suffix
):
    import geopandas as gpd

    manifest = pd.read_csv(PHOTOS / "manifest.csv")
    table = pd.DataFrame(
        {
            "image": [str(PHOTOS / p) for p in manifest["path"]] + ["missing.jpg"],
            "lat": [*manifest["lat"], 55.7],
            "lon": [*manifest["lon"], 13.2],
            "region": [*manifest["city"], "Lund"],
        }
    )
    table.loc[5, "image"] = str(tmp_path / "gone.jpg")  # skipped in the first chunk
    layer = tmp_path / f"photos{suffix}"
    if suffix == ".csv":
        table.to_csv(layer, index=False)
    else:
        points = gpd.points_from_xy(table["lon"], table["lat"], crs="EPSG:4326")
        gpd.GeoDataFrame(table, geometry=points).to_crs("EPSG:3006").to_file(layer)
    localized = []
    from swclip_core import evaluation as evaluate

    real_evaluate = evaluate.evaluate

    def recording_evaluate(*args, **kwargs):
        localized.append(len(kwargs["samples"]))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate", recording_evaluate)
    outputs = {}
    for rows in (9, 1000):
        out = tmp_path / f"pred{rows}.gpkg"
        command = ["predict", str(layer), "--model", str(photo_run), "--out", str(out)]
        code = main([*command, "--chunk-rows", str(rows), "--cache-dir", str(feature_cache)])
        assert code == EXIT_PARTIAL  # the two missing images
        outputs[rows] = {
            name: pyogrio.read_dataframe(out, layer=name)
            for name in ("predicted_points", "error_lines", "skipped_records")
        }
    assert localized == [8, 9, 9, 9, 5, 40]  # chunks of 9 of the 42 rows, less the skipped
    # the same file up to the last bits of the float arithmetic (a matrix product of 9 rows does
    # not sum in the order of one of 40): coordinates agree to a millimetre
    for name, frame in outputs[9].items():
        whole = outputs[1000][name]
        if "geometry" in frame:
            assert frame.geometry.geom_equals_exact(whole.geometry, tolerance=1e-3).all()
            frame, whole = frame.drop(columns="geometry"), whole.drop(columns="geometry")
        pd.testing.assert_frame_equal(frame, whole, check_exact=False, rtol=1e-6)
    assert len(outputs[9]["predicted_points"]) == 40
    assert outputs[9]["predicted_points"].crs == ("EPSG:4326" if suffix == ".csv" else "EPSG:3006")
    assert sorted(outputs[9]["skipped_records"]["record"]) == ["row 42", "row 6"]
    assert outputs[9]["predicted_points"]["sample_id"].tolist()[:6] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "7",
    ]


def test_split_holds_out_photos_at_random_or_by_blocks(tmp_path):
    from swclip_core.data import read_samples
    from swclip_core.data.splits import block_ids

    def split(name, *options):
        out = tmp_path / name
        assert main(["split", str(PHOTOS), "--out", str(out), *options]) == 0
        return [read_samples(out / f"{part}.csv") for part in ("train", "test")]

    train, test = split("random")
    assert (len(train), len(test)) == (33, 8)  # a fifth held out
    assert not set(train["image_path"]) & set(test["image_path"])
    assert list(split("again")[1]["sample_id"]) == list(test["sample_id"])  # same seed, same split
    train, test = split("blocks", "--by", "spatial", "--block-m", "100", "--seed", "1")
    assert len(train) + len(test) == 41 and len(test) > 0
    # whole blocks held out: no 100 m cell has photos on both sides
    everything = pd.concat([train, test])
    cells = block_ids(
        everything["lat"].to_numpy(), everything["lon"].to_numpy(), block_m=100, seed=1
    )
    assert not set(cells[: len(train)]) & set(cells[len(train) :])
    with pytest.raises(SystemExit):
        main(["split", str(PHOTOS), "--out", str(tmp_path / "x"), "--test-share", "1.5"])
    again = tmp_path / "random" / "train.csv"
    before = again.read_bytes()
    assert main(["split", str(again), "--out", str(again.parent)]) == 2  # it would replace it
    assert again.read_bytes() == before
