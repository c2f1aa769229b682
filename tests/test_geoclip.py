"""The GeoCLIP peer: equivalence with the official package, its parts, training and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from swclip_core.api import load_trained
from swclip_core.api import train as train_geoclip
from swclip_core.cli import main
from swclip_core.config import TrainConfig
from swclip_core.data import read_samples
from swclip_core.device import resolve_device
from swclip_core.errors import ModelError
from swclip_core.evaluation import evaluate
from swclip_core.geo import haversine_m
from swclip_core.models.geoclip import (
    GeoclipModel,
    GeoLocationEncoder,
    equal_earth,
    official_weights_path,
)
from swclip_core.objectives.geoclip import GpsQueue, add_gps_noise
from swclip_core.runs import CHECKPOINT, CONFIG, METRICS, TRAIN_SAMPLES, training_gallery

from .conftest import PHOTOS

# Published Equal Earth constants (Šavrič, Patterson & Jenny 2018), typed in again on purpose.
EE = (1.340264, -0.081106, 0.000893, 0.003796)


def random_latlon(n: int, seed: int = 0) -> torch.Tensor:
    """Uniform points plus the poles, the antimeridian from both sides and the equator."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-90, 90, n)
    lon = rng.uniform(-180, 180, n)
    edges = [
        (90, 0),
        (-90, 0),
        (90, 180),
        (-90, -180),
        (0, 180),
        (0, -180),
        (0, 0),
        (54.1, 179.99999),
        (54.1, -179.99999),
        (89.99999, -179.5),
        (-89.99999, 179.5),
    ]
    lat[: len(edges)], lon[: len(edges)] = zip(*edges, strict=True)
    return torch.tensor(np.stack([lat, lon], axis=1), dtype=torch.float32)


@pytest.fixture(scope="module")
def encoder() -> GeoLocationEncoder:
    return GeoLocationEncoder().load_official_weights().eval()


def test_location_encoder_matches_the_official_package(encoder):
    from geoclip import LocationEncoder  # the package's own class with its shipped weights

    official = LocationEncoder().eval()
    points = random_latlon(1000)
    with torch.no_grad():
        expected, ours = official(points), encoder(points)
    assert ours.shape == (1000, 512)
    assert expected.abs().max() > 1e-2  # a real output, not zeros on both sides
    assert (ours - expected).abs().max().item() <= 1e-5


def equal_earth_reference(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """The published forward formulas in float64, polynomials in Horner form."""
    a1, a2, a3, a4 = EE
    theta = np.arcsin(np.sqrt(3.0) / 2.0 * np.sin(np.radians(lat_deg)))
    t2 = theta * theta
    y = theta * (a1 + t2 * (a2 + t2 * t2 * (a3 + a4 * t2)))
    dy = a1 + t2 * (3 * a2 + t2 * t2 * (7 * a3 + 9 * a4 * t2))
    x = 2.0 * np.sqrt(3.0) * np.radians(lon_deg) * np.cos(theta) / (3.0 * dy)
    return np.stack([x, y], axis=1) * 66.50336 / 180.0


def test_equal_earth_follows_the_published_formula():
    points = random_latlon(1000, seed=1).double()
    expected = equal_earth_reference(points[:, 0].numpy(), points[:, 1].numpy())
    np.testing.assert_allclose(equal_earth(points).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(equal_earth(points.float()).numpy(), expected, atol=1e-6)
    # Known extent of the unit Equal Earth map: x = ±2.7066 at (0°, ±180°), y = ±1.3173 at the
    # poles (Šavrič et al. 2018), times GeoCLIP's scale.
    corners = equal_earth(torch.tensor([[0.0, 180.0], [90.0, 0.0]], dtype=torch.float64))
    scale = 66.50336 / 180.0
    assert corners[0, 0].item() / scale == pytest.approx(2.7066, abs=1e-4)
    assert corners[1, 1].item() / scale == pytest.approx(1.3173, abs=1e-4)


def test_fourier_features_are_cos_and_sin_of_2pi_bv(encoder):
    projected = equal_earth(random_latlon(50, seed=2))
    for branch in encoder.branches:
        b = branch.b.double().numpy()
        phase = 2 * np.pi * projected.double().numpy() @ b.T
        expected = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)
        got = branch.fourier_features(projected).double().numpy()
        # float32 phases reach ~10³ rad for σ = 2⁸: compare with that rounding in mind
        np.testing.assert_allclose(got, expected, atol=2e-3 * branch.sigma / 256 + 1e-5)


@pytest.mark.parametrize(
    "content", [b"", b"\x80\x02" + bytes(range(256)), "pickle"], ids=["empty", "bytes", "pickle"]
)
def test_unreadable_geoclip_weights_give_a_model_error_naming_the_file(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "pickle":  # an object, not weights: the safe loader refuses it
        torch.save({"weights": pd.Timestamp("2026-01-01")}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=r"weights\.pth"):
        GeoLocationEncoder().load_official_weights(path)


def test_fourier_matrices_are_frozen_and_deterministic(encoder):
    official = torch.load(official_weights_path(), map_location="cpu", weights_only=True)
    again = GeoLocationEncoder().load_official_weights()
    assert encoder.sigmas == (1.0, 16.0, 256.0)
    parameter_ids = {id(p) for p in encoder.parameters()}
    for i, branch in enumerate(encoder.branches):
        assert not branch.b.requires_grad and id(branch.b) not in parameter_ids
        assert branch.b.shape == (256, 2)
        assert torch.equal(branch.b, again.branches[i].b)
        assert torch.equal(branch.b, official[f"LocEnc{i}.capsule.0.b"])
        # each matrix is N(0, σ²): its spread identifies the branch's σ
        assert branch.b.std().item() / branch.sigma == pytest.approx(1.0, abs=0.15)
    fresh_a, fresh_b = GeoLocationEncoder(), GeoLocationEncoder()
    for a, b in zip(fresh_a.branches, fresh_b.branches, strict=True):
        assert torch.equal(a.b, b.b)
    assert not torch.equal(fresh_a.branches[2].b, encoder.branches[2].b)


def test_gps_noise_has_the_requested_spread_in_metres():
    latlon = torch.tensor([[54.2, -4.5]] * 4000 + [[-60.0, 179.9999]] * 4000)
    moved = add_gps_noise(latlon, 150.0, torch.Generator().manual_seed(0))
    assert moved[:, 1].abs().max() <= 180.0  # wrapped across the antimeridian
    d = haversine_m(
        latlon[:, 0].double(), latlon[:, 1].double(), moved[:, 0].double(), moved[:, 1].double()
    ).numpy()
    # two independent N(0, σ²) axes: the distance is Rayleigh, mean σ·√(π/2)
    for part in (d[:4000], d[4000:]):
        assert part.mean() == pytest.approx(150.0 * np.sqrt(np.pi / 2), rel=0.05)
    assert torch.equal(add_gps_noise(latlon, 0.0, torch.Generator()), latlon)


def test_gps_queue_is_a_ring_of_past_batches():
    queue = GpsQueue(5)
    queue.push(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), torch.tensor([1, 2, 3]))
    assert queue.contents()[1].tolist() == [1, 2, 3]
    queue.push(torch.tensor([[4.0, 4.0], [5.0, 5.0], [6.0, 6.0]]), torch.tensor([4, 5, 6]))
    latlon, index = queue.contents()
    assert sorted(index.tolist()) == [2, 3, 4, 5, 6]  # the oldest entry was overwritten
    assert torch.equal(latlon[:, 0], index.float())


@pytest.fixture(scope="module")
def photos():
    return read_samples(PHOTOS)


@pytest.fixture(scope="module")
def geoclip_run(photos, tmp_path_factory, feature_cache):
    run = tmp_path_factory.mktemp("geoclip") / "run"
    config = TrainConfig(
        objective="geoclip", epochs=2, batch_size=16, gps_queue_size=48, device="cpu", num_workers=0
    )
    result = train_geoclip(photos, config, run, cache_dir=feature_cache)
    return run, result


@pytest.mark.slow
def test_training_writes_the_run_folder_and_uses_the_queue(geoclip_run, photos):
    run, result = geoclip_run
    for name in (CONFIG, CHECKPOINT, METRICS, TRAIN_SAMPLES):
        assert (run / name).is_file()
    assert TrainConfig.load(run / CONFIG).objective == "geoclip"
    assert len(pd.read_csv(run / TRAIN_SAMPLES)) == len(photos)
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and np.isfinite(result.final_loss)
    # in-batch negatives alone are at most batch - 1 = 15; the queue adds past batches' GPS
    # the queue (asked: 48) holds at most one entry per training photo (41)
    assert records[-1]["negatives"] > 16 and records[-1]["queue_filled"] == len(photos) == 41
    state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert not any(key.startswith("backbone.") for key in state["model"])
    # the location encoder trained, its Fourier matrices did not
    official = torch.load(official_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(
        state["model"]["location_encoder.branches.1.b"], official["LocEnc1.capsule.0.b"]
    )
    assert not torch.equal(
        state["model"]["location_encoder.branches.1.mlp.0.weight"],
        official["LocEnc1.capsule.1.weight"],
    )


@pytest.mark.slow
def test_trained_model_evaluates_with_both_protocols(geoclip_run, photos, feature_cache):
    run, _ = geoclip_run
    device = resolve_device("cpu")
    model, config = load_trained(run, "cpu")
    assert isinstance(model, GeoclipModel) and not model.training
    closed = evaluate(model, config, photos, device=device, cache_dir=feature_cache)
    gallery = training_gallery(run)
    opened = evaluate(
        model,
        config,
        photos,
        device=device,
        protocol="open",
        gallery_table=gallery,
        cache_dir=feature_cache,
    )
    for evaluation in (closed, opened):
        assert np.isfinite(evaluation.summary["median_error_m"])
        assert np.isfinite(evaluation.summary["mean_error_m"])
    assert np.isfinite(closed.summary["r_at_1"])
    # the gallery is the location encoder's view of the coordinates, not caption text
    expected = torch.nn.functional.normalize(
        model.location_encoder(
            torch.tensor(gallery[["lat", "lon"]].to_numpy(), dtype=torch.float32)
        ),
        dim=-1,
    )
    assert torch.allclose(model.embed_locations(gallery, device), expected.detach(), atol=1e-6)


@pytest.mark.slow
def test_cli_trains_geoclip(tmp_path, feature_cache):
    run = tmp_path / "cli-run"
    code = main(
        [
            "train",
            str(PHOTOS),
            "--out",
            str(run),
            "--objective",
            "geoclip",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--cache-dir",
            str(feature_cache),
        ]
    )
    assert code == 0
    assert json.loads((run / CONFIG).read_text())["objective"] == "geoclip"
    assert (run / CHECKPOINT).is_file()


def test_a_photo_own_place_in_the_queue_is_not_its_negative():
    from types import SimpleNamespace

    from swclip_core.objectives.geoclip import queue_logits

    stand_in = SimpleNamespace(
        image_head=torch.nn.Identity(),
        encode_locations=lambda latlon: latlon,
        logit_scale=torch.tensor(0.0),
    )
    queue = GpsQueue(4)
    queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([7, 1, 3]))
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queued, queued_index = queue.contents()
    locations = torch.cat((features, queued))
    logits = queue_logits(stand_in, features, locations, torch.tensor([3, 7]), queued_index)
    assert logits.shape == (2, 5)
    masked = ~torch.isfinite(logits)
    assert masked.nonzero().tolist() == [[0, 4], [1, 2]]  # sample 3 at queue slot 2, 7 at slot 0
