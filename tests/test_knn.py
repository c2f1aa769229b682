"""image-kNN (no training, the training photos are the gallery) and its fusion with captions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyogrio
import pytest

from swclip_core.cli import main
from swclip_core.data import read_samples
from swclip_core.data.splits import random_split
from swclip_core.features import extract_image_features
from swclip_core.fusion import fuse_predictions
from swclip_core.geo import latlon_to_unit, unit_to_latlon
from swclip_core.objectives.image_knn import load_knn
from swclip_core.retrieval import Predictions, predict_locations

from .conftest import PHOTOS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The bundled photos as train/test CSVs (coordinates from EXIF)."""
    folder = tmp_path_factory.mktemp("knn-split")
    samples = read_samples(PHOTOS)
    table = pd.DataFrame(samples[["sample_id", "image_path", "lat", "lon"]])
    train_idx, test_idx = random_split(len(table), test_fraction=0.25, seed=0)
    table.iloc[train_idx].to_csv(folder / "train.csv", index=False)
    table.iloc[test_idx].to_csv(folder / "test.csv", index=False)
    return folder, table.iloc[train_idx].reset_index(drop=True), table.iloc[test_idx]


@pytest.fixture(scope="module")
def knn_run(split, feature_cache):
    folder, _, _ = split
    run = folder / "knn-run"
    code = main(
        [
            "train",
            str(folder / "train.csv"),
            "--objective",
            "image-knn",
            "--out",
            str(run),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    return run


def test_run_folder_has_features_and_no_checkpoint(knn_run, split):
    _, train, _ = split
    assert (knn_run / "knn_features.pt").exists() and not (knn_run / "checkpoint.pt").exists()
    assert json.loads((knn_run / "config.json").read_text())["objective"] == "image-knn"
    assert len(pd.read_csv(knn_run / "train_samples.csv")) == len(train)


def test_predict_top1_is_the_nearest_training_photo(knn_run, split, feature_cache, tmp_path):
    folder, train, test = split
    out = tmp_path / "pred.gpkg"
    code = main(
        [
            "predict",
            str(folder / "test.csv"),
            "--model",
            str(knn_run),
            "--out",
            str(out),
            "--method",
            "top1",
            "--top-k",
            "1",
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    points = pyogrio.read_dataframe(out, layer="predicted_points")
    # independent nearest neighbour: cosine of L2-normalised frozen features, with numpy
    knn = load_knn(knn_run, "cpu")
    feats = extract_image_features(
        knn.backbone,
        train["image_path"].tolist() + test["image_path"].tolist(),
        device=knn.device,
        cache_dir=feature_cache,
    ).numpy()
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    nearest = np.argmax(feats[len(train) :] @ feats[: len(train)].T, axis=1)
    # exact up to the last bit lost in CSV round trips (1e-12 degrees is 0.1 micrometre)
    assert np.allclose(points["pred_lat"], train["lat"].to_numpy()[nearest], rtol=0, atol=1e-12)
    assert np.allclose(points["pred_lon"], train["lon"].to_numpy()[nearest], rtol=0, atol=1e-12)


def test_a_duplicate_of_a_training_photo_is_found_exactly(knn_run, split, feature_cache, tmp_path):
    _, train, _ = split
    row = train.iloc[3]
    copy = tmp_path / "copy_of_a_training_photo.jpg"
    shutil.copyfile(row["image_path"], copy)
    pd.DataFrame({"image_path": [str(copy)], "lat": [row["lat"]], "lon": [row["lon"]]}).to_csv(
        tmp_path / "dup.csv", index=False
    )
    report = tmp_path / "dup.json"
    code = main(
        [
            "evaluate",
            str(tmp_path / "dup.csv"),
            "--model",
            str(knn_run),
            "--method",
            "top1",
            "--json",
            str(report),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["median_error_m"] < 1e-6  # metres: 0 up to CSV round-off


def test_evaluate_reports_null_for_caption_only_metrics(knn_run, split, feature_cache, tmp_path):
    folder, _, _ = split
    report = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            str(folder / "test.csv"),
            "--model",
            str(knn_run),
            "--json",
            str(report),
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    figures = json.loads(report.read_text())
    # undefined for an image-kNN model: null in (strict) JSON
    assert figures["summary"]["r_at_1"] is None and figures["summary"]["geo_align"] is None
    assert 0.0 <= figures["summary"]["ssi"] <= 1.0
    assert figures["context"]["gallery"] == "training images"


def predictions(index, score, lat, lon):
    """Predictions with only the fields fusion reads."""
    q = len(index)
    return Predictions(
        np.zeros(q), np.zeros(q), np.zeros(q), np.zeros(q), np.asarray(index), np.asarray(score)
    )


def test_fusion_is_the_mixture_on_shared_locations():
    places = pd.DataFrame(
        {"lat": [54.10, 54.20, 54.30], "lon": [-4.60, -4.50, -4.40], "caption": ["a", "b", "c"]}
    )
    photos = places.iloc[[2, 1]].reset_index(drop=True)  # the kNN gallery: photos at c and b
    caption = predictions([[0, 1]], [[0.30, 0.20]], places.lat, places.lon)
    knn = predictions([[0, 1]], [[0.90, 0.88]], photos.lat, photos.lon)
    fused, table = fuse_predictions(
        caption, places, 0.1, knn, photos, 0.05, knn_weight=0.4, method="weighted"
    )
    p_cap = np.exp(np.array([0.30, 0.20]) / 0.1)
    p_cap /= p_cap.sum()
    p_knn = np.exp(np.array([0.90, 0.88]) / 0.05)
    p_knn /= p_knn.sum()
    mass = {"a": 0.6 * p_cap[0], "b": 0.6 * p_cap[1] + 0.4 * p_knn[1], "c": 0.4 * p_knn[0]}
    got = {
        table.caption[j]: p
        for j, p in zip(fused.top_index[0], fused.top_score[0], strict=True)
        if p > 0
    }
    assert got == pytest.approx(mass)
    assert len(table) == 3  # b reached both ways is one candidate
    vector = sum(
        m * latlon_to_unit(*places.loc[places.caption == c, ["lat", "lon"]].iloc[0])
        for c, m in mass.items()
    )
    lat, lon = unit_to_latlon(vector)
    assert fused.lat[0] == pytest.approx(lat) and fused.lon[0] == pytest.approx(lon)
    top, _ = fuse_predictions(
        caption, places, 0.1, knn, photos, 0.05, knn_weight=0.4, method="top1"
    )
    best = max(mass, key=mass.get)
    assert top.lat[0] == places.lat[places.caption == best].iloc[0]


def test_a_share_of_zero_predicts_what_the_captions_alone_predict():
    """With the image-kNN share 0 (or 1), the other predictor's candidates and the padding of
    the fused list carry no probability and are never the centre of `mode`'s group, though here
    a kNN candidate's 5 km radius would hold every caption candidate."""
    places = pd.DataFrame(
        {"lat": [0.0, 0.0, 0.0], "lon": [0.0, 0.01, 0.08], "caption": ["a1", "a2", "b"]}
    )
    photos = pd.DataFrame({"lat": [0.0], "lon": [0.04], "caption": ["between"]})
    caption = predictions([[2, 0, 1]], [[0.40, 0.39, 0.38]], places.lat, places.lon)
    knn = predictions([[0]], [[0.9]], photos.lat, photos.lon)
    alone = predict_locations(
        caption.top_score,
        caption.top_index,
        places.lat.to_numpy(),
        places.lon.to_numpy(),
        temperature=0.1,
    )
    assert alone.lon[0] == pytest.approx(0.005, abs=1e-3)  # the a1/a2 group, not b
    fused, _ = fuse_predictions(caption, places, 0.1, knn, photos, 0.05, knn_weight=0.0)
    assert (fused.lat[0], fused.lon[0]) == pytest.approx((alone.lat[0], alone.lon[0]))
    fused, _ = fuse_predictions(caption, places, 0.1, knn, photos, 0.05, knn_weight=1.0)
    assert (fused.lat[0], fused.lon[0]) == pytest.approx((0.0, 0.04))


def test_cli_fuses_a_caption_model_with_image_knn(knn_run, split, feature_cache, tmp_path):
    folder, _, _ = split
    caption_run = tmp_path / "clip-run"
    assert (
        main(
            [
                "train",
                str(folder / "train.csv"),
                "--objective",
                "clip",
                "--out",
                str(caption_run),
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--cache-dir",
                str(feature_cache),
            ]
        )
        == 0
    )
    reports = {}
    for weight in ("1", "0.5"):
        reports[weight] = tmp_path / f"fused-{weight}.json"
        assert (
            main(
                [
                    "evaluate",
                    str(folder / "test.csv"),
                    "--model",
                    str(caption_run),
                    "--protocol",
                    "open",
                    "--fuse",
                    str(knn_run),
                    "--knn-weight",
                    weight,
                    "--method",
                    "top1",
                    "--json",
                    str(reports[weight]),
                    "--cache-dir",
                    str(feature_cache),
                ]
            )
            == 0
        )
    only_knn = tmp_path / "knn.json"
    assert (
        main(
            [
                "evaluate",
                str(folder / "test.csv"),
                "--model",
                str(knn_run),
                "--method",
                "top1",
                "--json",
                str(only_knn),
                "--cache-dir",
                str(feature_cache),
            ]
        )
        == 0
    )
    fused = json.loads(reports["1"].read_text())
    assert fused["context"]["objective"] == "clip+image-knn"
    # with all the weight on image-kNN the fused prediction is image-kNN's
    expected = json.loads(only_knn.read_text())["summary"]
    assert fused["summary"]["mean_error_m"] == pytest.approx(expected["mean_error_m"])
    assert np.isfinite(json.loads(reports["0.5"].read_text())["summary"]["median_error_m"])
    # fusion is refused under the closed protocol, whose gallery is the test photos' captions
    assert (
        main(
            [
                "evaluate",
                str(folder / "test.csv"),
                "--model",
                str(caption_run),
                "--fuse",
                str(knn_run),
                "--cache-dir",
                str(feature_cache),
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("n", "folds", "held_out"), [(33, 5, 33), (300, 2, 120), (480, 2, 192), (1000, 1, 200)]
)
def test_validation_folds_hold_out_parts_until_enough_photos(n, folds, held_out):
    """Fifths of a seeded permutation are held out in turn until MIN_HELD_OUT photos have been:
    each pair splits all n samples, and no photo is held out twice."""
    from swclip_core.knn_weight import MIN_HELD_OUT, validation_folds

    pairs = validation_folds(n, seed=3)
    assert len(pairs) == folds
    everyone = np.arange(n)
    for fit, valid in pairs:
        assert (
            np.array_equal(np.union1d(fit, valid), everyone) and not np.intersect1d(fit, valid).size
        )
        assert abs(len(valid) - n / 5) < 1
    held = np.concatenate([valid for _, valid in pairs])
    assert len(held) == len(np.unique(held)) == held_out
    assert held_out >= MIN_HELD_OUT or held_out == n
    assert [v.tolist() for _, v in validation_folds(n, seed=3)] == [v.tolist() for _, v in pairs]


def test_the_user_is_told_how_the_share_was_chosen(tmp_path):
    from swclip_core.knn_weight import how_chosen

    too_few = {"knn_weight": 0.5, "reason": "only 3 training photos to validate on"}
    assert "the default, not cross-validated (only 3 training photos" in how_chosen(
        too_few, tmp_path
    )
    chosen = {"knn_weight": 0.2, "validation_median_error_m": [9.0, 8.0, 7.0, np.nan]}
    told = how_chosen({**chosen, "standard_error_m": 1.4}, tmp_path)
    assert "one standard error (1 m) of the lowest validation median error (7 m)" in told


def test_the_share_is_the_smallest_within_one_standard_error_of_the_lowest():
    """Flat validation errors (shares that differ by noise) keep the model alone; a share that
    clearly helps is taken, at the smallest share as good as the best within the noise; the
    standard error is that of the lowest median, seeded."""
    from swclip_core.knn_weight import one_standard_error

    rng = np.random.default_rng(0)
    photos = rng.lognormal(7, 1, size=300)
    flat = photos * rng.normal(1, 0.02, size=(11, 300))
    chosen, standard_error = one_standard_error(flat, seed=1)
    medians = np.median(flat, axis=1)
    assert chosen == 0 and int(np.argmin(medians)) != 0  # the lowest by chance is not taken
    assert 0 < standard_error < 0.2 * medians.min()
    assert one_standard_error(flat, seed=1) == (chosen, standard_error)

    # image-kNN halves every error from a share of 0.4 on, a little more at 0.8
    helped = np.vstack([photos] * 4 + [photos * 0.5] * 4 + [photos * 0.49] + [photos * 0.5] * 2)
    chosen, standard_error = one_standard_error(helped, seed=1)
    assert chosen == 4
    assert np.median(helped[4]) <= np.median(helped[8]) + standard_error


def test_without_a_weight_fusion_chooses_it_on_a_validation_split(
    knn_run, split, feature_cache, tmp_path, monkeypatch, capsys
):
    """The choice trains the objective on 80 % of the model's training data, localizes the
    other 20 % with every weight of the grid, in turn for each fifth of a small training set,
    and keeps the best; it is cached, never written into the model folders, and reproduced by an
    explicit --knn-weight."""
    from swclip_core import api
    from swclip_core.knn_weight import FOLDS, WEIGHT_GRID, choose_knn_weight, knn_weight_for
    from swclip_core.runs import training_gallery

    folder, _, _ = split
    caption_run = tmp_path / "clip-run"
    args = ["--epochs", "2", "--batch-size", "16", "--cache-dir", str(feature_cache)]
    assert (
        main(
            [
                "train",
                str(folder / "train.csv"),
                "--objective",
                "clip",
                "--out",
                str(caption_run),
                *args,
            ]
        )
        == 0
    )
    before = {p.name for p in caption_run.iterdir()} | {p.name for p in knn_run.iterdir()}
    model, knn = api.load_model(caption_run, "cpu"), api.load_model(knn_run, "cpu")
    cache = tmp_path / "cache"
    shutil.copytree(feature_cache, cache)

    choice = choose_knn_weight(model, knn, cache_dir=cache)
    assert choice["knn_weight"] in WEIGHT_GRID
    errors = choice["validation_median_error_m"]
    assert len(errors) == len(WEIGHT_GRID) and all(np.isfinite(errors))
    # the smallest share within one standard error of the lowest median error
    chosen = WEIGHT_GRID.index(choice["knn_weight"])
    within = min(errors) + choice["standard_error_m"]
    assert errors[chosen] <= within and all(e > within for e in errors[:chosen])
    # image-kNN alone and captions alone differ on these photos, so the grid is a real choice
    assert errors[0] != errors[-1]
    # fewer training photos than MIN_HELD_OUT: every one of them is held out once
    assert choice["validation_photos"] == len(training_gallery(caption_run))
    assert choice["folds"] == FOLDS

    weight = knn_weight_for(model, knn, cache_dir=cache)
    assert weight in WEIGHT_GRID
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("the choice was not cached"))
    assert knn_weight_for(model, knn, cache_dir=cache) == weight
    told = capsys.readouterr().out
    assert f"image-kNN weight {weight:g}: chosen by cross-validation" in told
    assert f"within one standard error ({choice['standard_error_m']:,.0f} m)" in told
    after = {p.name for p in caption_run.iterdir()} | {p.name for p in knn_run.iterdir()}
    assert after == before  # nothing written into the model folders

    reports = {}
    for extra in ([], ["--knn-weight", f"{weight:g}"]):
        reports[len(extra)] = tmp_path / f"fused-{len(extra)}.json"
        assert (
            main(
                [
                    "evaluate",
                    str(folder / "test.csv"),
                    "--model",
                    str(caption_run),
                    "--protocol",
                    "open",
                    "--fuse",
                    str(knn_run),
                    "--json",
                    str(reports[len(extra)]),
                    "--cache-dir",
                    str(cache),
                    *extra,
                ]
            )
            == 0
        )
    chosen, given = (json.loads(reports[n].read_text())["summary"] for n in (0, 2))
    assert chosen["median_error_m"] == given["median_error_m"]
