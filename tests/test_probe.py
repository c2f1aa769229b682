"""`swclip probe`: kNN and linear-probe geolocation on frozen backbone features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from swclip_core.cli import main
from swclip_core.data import read_samples
from swclip_core.features import extract_image_features
from swclip_core.geo import haversine_m, latlon_to_unit
from swclip_core.models import create_backbone
from swclip_core.probe import knn_loo_predictions, probe_features, ridge_probe_predictions

from .conftest import PHOTOS


@pytest.fixture(scope="module")
def photo_features(feature_cache):
    samples = read_samples(PHOTOS)
    backbone = create_backbone("swclip-lite")
    features = extract_image_features(
        backbone,
        samples["image_path"].tolist(),
        device=backbone.logit_scale.device,
        cache_dir=feature_cache,
    ).numpy()
    return samples, features


def numpy_knn_errors(features, lat, lon):
    """Leave-one-out nearest neighbour, written independently: full matrix, argmax."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    return haversine_m(lat[nearest], lon[nearest], lat, lon)


@pytest.mark.slow
def test_knn_probe_matches_an_independent_numpy_knn(photo_features):
    samples, features = photo_features
    lat, lon = samples["lat"].to_numpy(), samples["lon"].to_numpy()
    rows = probe_features(features, lat, lon, k=1, folds=5, seed=0)
    errors = numpy_knn_errors(features.astype(np.float64), lat, lon)
    assert rows["knn"]["median_error_m"] == pytest.approx(np.median(errors), rel=1e-9)
    assert rows["knn"]["mean_error_m"] == pytest.approx(np.mean(errors), rel=1e-9)
    assert set(rows) == {"knn", "linear", "centroid"}
    assert all(np.isfinite(r["median_error_m"]) for r in rows.values())


@pytest.mark.slow
def test_a_duplicate_photo_has_zero_leave_one_out_error(photo_features):
    samples, features = photo_features
    lat, lon = samples["lat"].to_numpy(), samples["lon"].to_numpy()
    with_copy = np.vstack([features, features[7]])
    plat, plon = knn_loo_predictions(with_copy, np.r_[lat, lat[7]], np.r_[lon, lon[7]])
    assert plat[7] == lat[7] and plon[7] == lon[7]
    assert plat[-1] == lat[7] and plon[-1] == lon[7]


def test_linear_probe_recovers_a_linear_encoding_of_location():
    rng = np.random.default_rng(0)
    lat = rng.uniform(54.0, 54.4, 200)
    lon = rng.uniform(-4.8, -4.3, 200)
    mixing = rng.normal(size=(3, 16))
    # features carry the location linearly (centred so the tiny spread is not swamped)
    unit = latlon_to_unit(lat, lon)
    features = (unit - unit.mean(axis=0)) * 1e3 @ mixing + rng.normal(0, 1e-4, (200, 16))
    plat, plon = ridge_probe_predictions(features, lat, lon, folds=5, seed=1)
    assert np.median(haversine_m(plat, plon, lat, lon)) < 50.0
    # shuffled features carry no location: the probe then does no better than ~the spread
    shuffled = features[rng.permutation(200)]
    slat, slon = ridge_probe_predictions(shuffled, lat, lon, folds=5, seed=1)
    assert np.median(haversine_m(slat, slon, lat, lon)) > 5_000.0


@pytest.mark.slow
def test_cli_probe_prints_a_table_and_writes_json(photo_features, tmp_path, feature_cache, capsys):
    samples, features = photo_features
    out = tmp_path / "probe.json"
    code = main(["probe", str(PHOTOS), "--json", str(out), "--cache-dir", str(feature_cache)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "kNN (leave-one-out, k=1)" in printed and "linear probe (5-fold ridge)" in printed
    result = json.loads(out.read_text())
    assert result["n"] == len(samples) and result["feature_dim"] == features.shape[1]
    errors = numpy_knn_errors(
        features.astype(np.float64), samples["lat"].to_numpy(), samples["lon"].to_numpy()
    )
    assert result["rows"]["knn"]["median_error_m"] == pytest.approx(np.median(errors), rel=1e-9)
