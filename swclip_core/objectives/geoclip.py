"""The GeoCLIP peer objective (docs/method.md, "Peers"), trained in cached-feature mode.

Each step matches the batch's image embeddings against location embeddings of
``[batch GPS + Gaussian noise; GPS queue]`` with a one-directional InfoNCE (image -> location),
as in GeoCLIP (arXiv 2309.16020): the dynamic queue holds the true coordinates of past batches
and adds ``gps_queue_size`` negatives without more images per step.

Two choices where GeoCLIP's setting (millions of photos worldwide) differs from ours:
- the queue starts empty and only its filled part is used (upstream starts from random vectors,
  which as (lat, lon) are points near 0°N 0°E: meaningless negatives);
- on a small training set the queue soon holds every sample, including the row's own location
  from an earlier epoch; that entry is masked, as a photo's own place is never its negative.

A run folder has the layout of :func:`swclip_core.train.train`; ``metrics.jsonl`` also logs
``negatives``, the mean number of negative locations per image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..device import autocast, resolve_device
from ..errors import InputError
from ..features import extract_image_features
from ..geo import EARTH_RADIUS_M
from ..io import ProgressFn, progress_span
from ..loop import BatchPlan, Objective, TrainResult, finished_run, run_epochs
from ..models import create_backbone
from ..models.geoclip import GeoclipModel
from ..runs import CHECKPOINT, seed_everything, start_run
from ..train import FEATURE_SHARE, MAX_LOGIT_SCALE


class GpsQueue:
    """A ring buffer of past batches' coordinates ``(lat, lon)`` and their sample indices."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.latlon = torch.zeros(size, 2)
        self.index = torch.full((size,), -1, dtype=torch.long)
        self.pointer = 0
        self.filled = 0

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled entries (oldest order does not matter to the loss)."""
        return self.latlon[: self.filled], self.index[: self.filled]

    def push(self, latlon: torch.Tensor, index: torch.Tensor) -> None:
        """Overwrite the oldest entries with a batch (its last ``size`` rows if it is larger)."""
        if self.size == 0:
            return
        latlon, index = latlon[-self.size :].cpu().float(), index[-self.size :].cpu()
        slots = (self.pointer + torch.arange(len(index))) % self.size
        self.latlon[slots] = latlon
        self.index[slots] = index
        self.pointer = int((self.pointer + len(index)) % self.size)
        self.filled = min(self.size, self.filled + len(index))

    def state_dict(self) -> dict[str, object]:
        return {
            "latlon": self.latlon,
            "index": self.index,
            "pointer": self.pointer,
            "filled": self.filled,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if len(state["index"]) != self.size:
            return  # gps_queue_size changed on resume: start the new queue empty
        self.latlon, self.index = state["latlon"], state["index"]
        self.pointer, self.filled = int(state["pointer"]), int(state["filled"])


def add_gps_noise(latlon: torch.Tensor, sigma_m: float, generator: torch.Generator) -> torch.Tensor:
    """(lat, lon) degrees moved by an isotropic Gaussian of ``sigma_m`` metres per axis."""
    if sigma_m <= 0:
        return latlon
    step = torch.randn(latlon.shape, generator=generator, dtype=torch.float64) * sigma_m
    lat = latlon[:, 0].double()
    dlat = torch.rad2deg(step[:, 0] / EARTH_RADIUS_M)
    # East-west metres per degree shrink with cos(lat); floor it so the poles stay finite.
    coslat = torch.cos(torch.deg2rad(lat)).clamp(min=1e-6)
    dlon = torch.rad2deg(step[:, 1] / (EARTH_RADIUS_M * coslat))
    new_lat = (lat + dlat).clamp(-90.0, 90.0)
    new_lon = torch.remainder(latlon[:, 1].double() + dlon + 180.0, 360.0) - 180.0
    return torch.stack((new_lat, new_lon), dim=1).to(latlon.dtype)


def build_geoclip_model(
    config: TrainConfig, device: torch.device, *, official_weights: bool = True
) -> GeoclipModel:
    """A GeoCLIP model on ``config``'s backbone, its location encoder pretrained by default."""
    backbone = create_backbone(config.backbone, config.pretrained, device=device)
    return GeoclipModel(backbone, official_weights=official_weights)


def load_geoclip(
    config: TrainConfig, state: dict[str, torch.Tensor], device: torch.device
) -> GeoclipModel:
    """The trained model of a geoclip run from its checkpoint's ``model`` state, in eval mode."""
    model = build_geoclip_model(config, device, official_weights=False)
    model.load_trainable_state(state)
    return model.eval()


def geoclip_optimizer(model: GeoclipModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: the new image head at ``head_lr``, the pretrained location encoder at ``lr``."""
    return torch.optim.AdamW(
        [
            {"params": list(model.image_head.parameters()), "lr": config.head_lr},
            {"params": list(model.location_encoder.parameters()), "lr": config.lr},
            # A temperature is no weight to shrink towards zero.
            {"params": [model.logit_scale], "lr": config.head_lr, "weight_decay": 0.0},
        ],
        weight_decay=config.weight_decay,
    )


def queue_logits(
    model: GeoclipModel,
    features: torch.Tensor,
    positives: torch.Tensor,
    sample_index: torch.Tensor,
    queue: GpsQueue,
) -> torch.Tensor:
    """``(B, B + Q)`` logits of images against [positives; queue], own queue entries at −inf."""
    queued, queued_index = queue.contents()
    device = features.device
    locations = torch.cat((positives, queued)).to(device)
    img = F.normalize(model.image_head(features).float(), dim=-1)
    loc = F.normalize(model.encode_locations(locations).float(), dim=-1)
    scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * img @ loc.T
    own = sample_index[:, None].to(device) == queued_index[None, :].to(device)
    own = torch.cat(
        (torch.zeros(len(positives), len(positives), dtype=torch.bool, device=device), own), dim=1
    )
    return logits.masked_fill(own, float("-inf"))


def train_geoclip(
    samples: pd.DataFrame,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train the GeoCLIP peer on ``samples`` (the table :func:`read_samples` returns).

    Same contract and run-folder layout as :func:`swclip_core.train.train`; only
    ``mode="cached"`` is supported (the backbone stays frozen, as GeoCLIP freezes CLIP).
    """
    if config.mode != "cached":
        raise InputError(
            "objective geoclip trains on cached image features only; use --mode cached"
        )
    # Captions are kept so that the run's training table is also a caption gallery for others.
    run_dir, samples, _, config = start_run(
        samples, config, run_dir, marker=CHECKPOINT, resume=resume
    )
    if resume and (done := finished_run(run_dir, config.epochs)):
        return done
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = build_geoclip_model(config, device)
    features = extract_image_features(
        model,
        samples["image_path"].tolist(),
        device=device,
        cache_dir=cache_dir,
        num_workers=config.num_workers,
        progress=progress_span(progress, 0.0, FEATURE_SHARE),
        cancel=cancel,
    )
    latlon = torch.as_tensor(samples[["lat", "lon"]].to_numpy(dtype=float), dtype=torch.float32)
    # A queue longer than the training set only repeats its locations as negatives: same
    # softmax support, more compute.
    queue = GpsQueue(min(config.gps_queue_size, len(samples)))
    noise = torch.Generator().manual_seed(config.seed)

    def batch_loss(idx: np.ndarray, _images: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        index = torch.as_tensor(idx)
        positives = add_gps_noise(latlon[index], config.gps_noise_m, noise)
        with autocast(device):
            logits = queue_logits(model, features[index].to(device), positives, index, queue)
        loss = F.cross_entropy(logits.float(), torch.arange(len(idx), device=device))
        queue.push(latlon[index], index)
        negatives = float(torch.isfinite(logits).sum(dim=1).float().mean()) - 1
        return loss, {"infonce": float(loss.detach()), "negatives": negatives}

    def load_extra_state(extra: dict) -> None:
        queue.load_state_dict(extra["queue"])
        noise.set_state(extra["noise"])

    objective = Objective(
        name="geoclip",
        model=model,  # train() keeps the backbone's frozen trunk in eval mode
        optimizer=geoclip_optimizer(model, config),
        batch_loss=batch_loss,
        trainable_state=model.trainable_state,
        load_trainable_state=model.load_trainable_state,
        extra_state=lambda: {"queue": queue.state_dict(), "noise": noise.get_state()},
        load_extra_state=load_extra_state,
        epoch_figures=lambda: {"queue_filled": queue.filled},
    )
    return run_epochs(
        objective,
        config,
        run_dir,
        BatchPlan(samples, config),
        device,
        resume=resume,
        progress=progress_span(progress, FEATURE_SHARE, 1.0),
        cancel=cancel,
    )
