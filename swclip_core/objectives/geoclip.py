"""The GeoCLIP peer objective (SPEC section 5), trained in cached-feature mode.

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

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..batches import nearest_neighbours, neighbourhood_batches, random_batches
from ..captions import captions_for
from ..config import TrainConfig
from ..device import autocast, resolve_device
from ..errors import CancelledError, InputError, ModelError
from ..features import ProgressFn, extract_image_features, progress_span
from ..geo import EARTH_RADIUS_M
from ..models import create_backbone
from ..models.geoclip import GeoclipModel
from ..train import (
    CHECKPOINT,
    CONFIG,
    FEATURE_SHARE,
    MAX_LOGIT_SCALE,
    METRICS,
    TRAIN_SAMPLES,
    TrainResult,
    atomic_torch_save,
    caption_template,
    cosine_schedule,
    seed_everything,
    write_table,
)


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
    config.validate()
    if config.mode != "cached":
        raise InputError(
            "objective geoclip trains on cached image features only; use --mode cached"
        )
    if len(samples) < 2:
        raise InputError(f"training needs at least 2 usable samples, got {len(samples)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise InputError(
            f"{run_dir} already holds a trained model; pass --resume to continue it "
            "or choose another output folder"
        )
    seed_everything(config.seed)
    device = resolve_device(config.device)
    config.save(run_dir / CONFIG)

    samples = samples.reset_index(drop=True)
    # Captions are kept so that the run's training table is also a caption gallery for others.
    captions = captions_for(samples, caption_template(config))
    table = pd.DataFrame(samples.drop(columns="geometry", errors="ignore")).assign(caption=captions)
    write_table(table, run_dir / TRAIN_SAMPLES)

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
    progress = progress_span(progress, FEATURE_SHARE, 1.0)
    latlon = torch.as_tensor(samples[["lat", "lon"]].to_numpy(dtype=float), dtype=torch.float32)

    lat, lon = samples["lat"].to_numpy(float), samples["lon"].to_numpy(float)
    neighbours = nearest_neighbours(lat, lon, config.neighbours_per_anchor)
    rng = np.random.default_rng(config.seed)

    def epoch_batches() -> list[np.ndarray]:
        # The same batch composition as the caption objectives, so that runs differ by loss only.
        if config.neighbours_per_anchor > 0:
            batches = neighbourhood_batches(neighbours, config.batch_size, rng)
        else:
            batches = random_batches(len(samples), config.batch_size, rng)
        return [b for b in batches if len(b) >= 2]

    steps_per_epoch = len(epoch_batches())
    rng = np.random.default_rng(config.seed)  # the probe above must not shift the real epochs
    total_steps = steps_per_epoch * config.epochs
    optimizer = geoclip_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(total_steps, max(1, int(config.warmup_fraction * total_steps)))
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    queue = GpsQueue(config.gps_queue_size)
    noise = torch.Generator().manual_seed(config.seed)

    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if "geoclip" not in state:
            raise ModelError(
                f"{checkpoint_path} is not a geoclip run; resume it with its own objective"
            )
        model.load_trainable_state(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        queue.load_state_dict(state["geoclip"]["queue"])
        noise.set_state(state["geoclip"]["noise"])
        start_epoch = state["epoch"]

    loss_value = float("nan")
    samples_per_s = 0.0
    with open(run_dir / METRICS, "a") as log:
        bar = tqdm(range(start_epoch, config.epochs), desc="train geoclip", unit="epoch")
        for epoch in bar:
            model.train()  # the backbone keeps its frozen trunk in eval mode
            batches = epoch_batches()
            started = time.perf_counter()
            totals = {"loss": 0.0, "negatives": 0.0}
            for step, idx in enumerate(batches):
                if cancel is not None and cancel():
                    raise CancelledError("training cancelled; the last finished epoch is kept")
                index = torch.as_tensor(idx)
                positives = add_gps_noise(latlon[index], config.gps_noise_m, noise)
                with autocast(device):
                    logits = queue_logits(
                        model, features[index].to(device), positives, index, queue
                    )
                loss = F.cross_entropy(logits.float(), torch.arange(len(idx), device=device))
                queue.push(latlon[index], index)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                totals["loss"] += float(loss.detach())
                totals["negatives"] += float(torch.isfinite(logits).sum(dim=1).float().mean()) - 1
                if progress is not None:
                    done = (epoch - start_epoch) * len(batches) + step + 1
                    total = (config.epochs - start_epoch) * len(batches)
                    progress(done / total, f"epoch {epoch + 1}/{config.epochs}")
            seconds = time.perf_counter() - started
            samples_per_s = sum(len(b) for b in batches) / seconds
            loss_value = totals["loss"] / len(batches)
            if not math.isfinite(loss_value):
                raise ModelError(
                    f"training diverged at epoch {epoch + 1} (loss {loss_value}); "
                    "lower --lr / --head-lr"
                )
            record = {k: v / len(batches) for k, v in totals.items()}
            record.update(
                infonce=record["loss"],
                epoch=epoch + 1,
                seconds=seconds,
                samples_per_s=samples_per_s,
                lr=scheduler.get_last_lr()[0],
                queue_filled=queue.filled,
            )
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{loss_value:.3f}")
            atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "backbone": {"name": config.backbone, "pretrained": config.pretrained},
                    "model": model.trainable_state(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng.bit_generator.state,
                    "geoclip": {"queue": queue.state_dict(), "noise": noise.get_state()},
                },
                checkpoint_path,
            )
    return TrainResult(run_dir, config.epochs, loss_value, samples_per_s)
