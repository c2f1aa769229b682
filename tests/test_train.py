"""The trainer's contract with callers: progress, cancel, learning, device handling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from swclip_core.api import load_trained, train
from swclip_core.batches import neighbour_spacing_m
from swclip_core.config import MIN_SCALE_M, SCALE_PER_SPACING, SpatialKernel, TrainConfig
from swclip_core.data import read_samples
from swclip_core.device import resolve_device
from swclip_core.errors import CancelledError, InputError
from swclip_core.evaluation import evaluate
from swclip_core.loop import cosine_schedule
from swclip_core.models import create_backbone
from swclip_core.objectives.contrastive import resolve_kernel
from swclip_core.runs import CHECKPOINT

from .conftest import PHOTOS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos():
    return read_samples(PHOTOS)


def test_progress_is_reported_and_cancel_stops_cleanly(photos, tmp_path, feature_cache):
    seen: list[float] = []
    metrics = tmp_path / "run" / "metrics.jsonl"

    def cancel() -> bool:  # stop as soon as the first epoch has been logged
        return metrics.exists() and bool(metrics.read_text())

    config = TrainConfig(epochs=5, batch_size=16)
    with pytest.raises(CancelledError):
        train(
            photos,
            config,
            tmp_path / "run",
            cache_dir=feature_cache,
            progress=lambda f, _msg: seen.append(f),
            cancel=cancel,
        )
    assert seen == sorted(seen) and 0 < seen[-1] < 1
    # the last finished epoch is a valid resume point; nothing half-written is left
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "run").glob("*.partial"))


def test_training_improves_retrieval_over_the_untrained_model(photos, tmp_path, feature_cache):
    """On its own training photos, a trained model must rank the true caption far better."""
    config = TrainConfig(epochs=15, batch_size=16)
    device = resolve_device("cpu")
    untrained = evaluate(
        create_backbone(config.backbone, device=device),
        config,
        photos,
        device=device,
        cache_dir=feature_cache,
    )
    train(photos, config, tmp_path / "run", cache_dir=feature_cache)
    backbone, loaded = load_trained(tmp_path / "run", "cpu")
    trained = evaluate(backbone, loaded, photos, device=device, cache_dir=feature_cache)
    assert trained.summary["median_error_m"] < untrained.summary["median_error_m"]
    assert trained.summary["geo_align"] > untrained.summary["geo_align"]
    # The automatic kernel scale was set from the photos' spacing and recorded for a rerun.
    spacing = neighbour_spacing_m(photos["lat"].to_numpy(), photos["lon"].to_numpy(), k=3)
    assert loaded.kernel.scale_m == pytest.approx(
        max(SCALE_PER_SPACING * spacing, MIN_SCALE_M), abs=0.05
    )


def test_automatic_kernel_scale_follows_the_spacing_and_a_given_one_is_kept():
    lat = 54.15 + np.arange(20) * 0.001  # 111 m apart along a meridian: 3rd neighbour at 222 m
    samples = pd.DataFrame({"lat": lat, "lon": np.full(20, -4.48)})
    resolved = resolve_kernel(TrainConfig(), samples)
    assert resolved.kernel.scale_m == pytest.approx(SCALE_PER_SPACING * 2 * 111.2, rel=1e-2)
    assert resolve_kernel(TrainConfig(), samples.iloc[:1]).kernel.scale_m == MIN_SCALE_M
    given = TrainConfig(kernel=SpatialKernel(scale_m=75.0))
    assert resolve_kernel(given, samples) is given


def test_cosine_schedule_warms_up_then_decays():
    factor = cosine_schedule(100, 10)
    values = np.array([factor(s) for s in range(100)])
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert np.all(np.diff(values[10:]) <= 1e-12) and values[-1] < 0.01


def test_unknown_device_and_settings_are_refused():
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="GPU"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="objective"):
        TrainConfig(objective="magic").validate()
