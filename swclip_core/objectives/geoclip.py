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

A run folder has the layout :mod:`swclip_core.runs` describes; ``metrics.jsonl`` also logs
``negatives``, the mean number of negative locations per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..device import autocast
from ..distributed import gather_rows, local_share
from ..errors import InputError
from ..geo import EARTH_RADIUS_M
from ..io import progress_span
from ..loop import FEATURE_SHARE, Trainable, TrainResult, run_epochs
from ..losses import MAX_LOGIT_SCALE
from ..models import create_backbone
from ..models.geoclip import GeoclipModel
from ..runs import Run, read_checkpoint
from .base import Objective


class GpsQueue:
    """A ring buffer of past batches' coordinates ``(lat, lon)`` and their sample indices, and
    for a location branch that reads captions, their text embeddings as they were computed then
    (kept detached, as MoCo keeps its queued keys: re-encoding the queue every step would cost
    Q/B times the batch's text forward)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.latlon = torch.zeros(size, 2)
        self.index = torch.full((size,), -1, dtype=torch.long)
        self.text: torch.Tensor | None = None
        self.pointer = 0
        self.filled = 0

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled entries (oldest order does not matter to the loss)."""
        return self.latlon[: self.filled], self.index[: self.filled]

    def texts(self) -> torch.Tensor | None:
        """The filled entries' text embeddings, in :meth:`contents` order (None: none kept)."""
        return None if self.text is None else self.text[: self.filled]

    def push(
        self, latlon: torch.Tensor, index: torch.Tensor, text: torch.Tensor | None = None
    ) -> None:
        """Overwrite the oldest entries with a batch (its last ``size`` rows if it is larger)."""
        if self.size == 0:
            return
        latlon, index = latlon[-self.size :].cpu().float(), index[-self.size :].cpu()
        slots = (self.pointer + torch.arange(len(index))) % self.size
        self.latlon[slots] = latlon
        self.index[slots] = index
        if text is not None:
            if self.text is None:
                self.text = torch.zeros(self.size, text.shape[1])
            self.text[slots] = text[-self.size :].detach().cpu().float()
        self.pointer = int((self.pointer + len(index)) % self.size)
        self.filled = min(self.size, self.filled + len(index))

    def state_dict(self) -> dict[str, object]:
        state = {
            "latlon": self.latlon,
            "index": self.index,
            "pointer": self.pointer,
            "filled": self.filled,
        }
        if self.text is not None:
            state["text"] = self.text
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        if len(state["index"]) != self.size:
            return  # gps_queue_size changed on resume: start the new queue empty
        self.latlon, self.index = state["latlon"], state["index"]
        self.text = state.get("text")
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


def geoclip_optimizer(model: GeoclipModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: the new image head at ``head_lr``, the pretrained location encoder at ``lr``; a
    hybrid branch's new layers (its fusion and the text projection) at ``head_lr``, its
    pretrained text layers at ``lr``."""
    groups = [
        {"params": list(model.image_head.parameters()), "lr": config.head_lr},
        {"params": list(model.location_encoder.parameters()), "lr": config.lr},
        # A temperature is no weight to shrink towards zero.
        {"params": [model.logit_scale], "lr": config.head_lr, "weight_decay": 0.0},
    ]
    if model.reads_captions:
        new, pretrained = model.caption_parameters()
        groups += [
            {"params": new, "lr": config.head_lr},
            {"params": pretrained, "lr": config.lr},
        ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)


def queue_logits(
    model: GeoclipModel,
    img: torch.Tensor,
    loc: torch.Tensor,
    sample_index: torch.Tensor,
    queued_index: torch.Tensor,
) -> torch.Tensor:
    """``(B, B + Q)`` logits of the batch's image embeddings against its location embeddings
    followed by the queue's (``loc``, B + Q rows), a photo's own queue entries at −inf."""
    device = img.device
    img = F.normalize(img.float(), dim=-1)
    loc = F.normalize(loc.float(), dim=-1)
    scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * img @ loc.T
    size = len(img)
    own = sample_index[:, None].to(device) == queued_index[None, :].to(device)
    own = torch.cat((torch.zeros(size, size, dtype=torch.bool, device=device), own), dim=1)
    return logits.masked_fill(own, float("-inf"))


class Geoclip(Objective):
    """GeoCLIP: the GPS location encoder and one-hot InfoNCE, image -> location, with a queue.

    The base of every objective whose location branch is GeoCLIP's encoder (alone or with the
    captions, :mod:`~swclip_core.objectives.hybrid`): subclasses change the model
    (:meth:`build_model`) and the loss (:meth:`loss`).
    """

    name = "geoclip"
    distributed = True

    def prepare(self, config: TrainConfig, samples: pd.DataFrame) -> TrainConfig:
        # The backbone's image trunk stays frozen, as GeoCLIP freezes CLIP.
        if config.mode != "cached":
            raise InputError(
                f"objective {self.name} trains on cached image features only; use --mode cached"
            )
        return config

    def build_model(
        self, config: TrainConfig, device: torch.device, *, official_weights: bool = True
    ) -> GeoclipModel:
        """The network this objective trains (GPS encoder from the official weights)."""
        return build_geoclip_model(config, device, official_weights=official_weights)

    def start(self, run: Run) -> None:
        """Set up what the loss needs before the first batch."""

    def loss(
        self,
        index: torch.Tensor,
        img: torch.Tensor,
        loc: torch.Tensor,
        logits: torch.Tensor,
        queued_index: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch's loss from its image and location embeddings (B rows each) and the logits
        (B, B + Q) against its locations and the queue's: GeoCLIP's one-hot cross-entropy."""
        loss = F.cross_entropy(logits, torch.arange(len(index), device=logits.device))
        return loss, {"infonce": float(loss.detach())}

    def fit(self, run: Run) -> TrainResult:
        """Train the image head and the location encoder; ``metrics.jsonl`` also logs
        ``negatives`` and ``queue_filled``. The run's caption table stays a caption gallery for
        the other objectives."""
        config, device, samples = run.config, run.device, run.samples
        model = self.build_model(config, device)
        features = run.image_features(model, progress_span(run.progress, 0.0, FEATURE_SHARE))
        latlon = torch.as_tensor(samples[["lat", "lon"]].to_numpy(dtype=float), dtype=torch.float32)
        tokens = model.backbone.tokenize(run.captions) if model.reads_captions else None
        # A queue longer than the training set only repeats its locations as negatives: same
        # softmax support, more compute.
        queue = GpsQueue(min(config.gps_queue_size, len(samples)))
        noise = torch.Generator().manual_seed(config.seed)
        self.start(run)

        def batch_loss(idx: np.ndarray, _images: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
            # Under torchrun this process embeds its share of the batch's images (and captions)
            # and gathers the others'; the GPS noise, the queue and the location encoder's pass
            # over them are the same on every process (same seed, same pushes), so the loss is
            # the whole batch's, as in one process. Alone, the share is the batch.
            index, mine = torch.as_tensor(idx), torch.as_tensor(local_share(idx))
            positives = add_gps_noise(latlon[index], config.gps_noise_m, noise)
            queued, queued_index = queue.contents()
            with autocast(device):
                img = gather_rows(model.image_head(features[mine].to(device)), len(idx))
                text = fresh = None
                if tokens is not None:
                    fresh = gather_rows(model.encode_text(tokens[mine].to(device)), len(idx))
                    text = fresh
                    if queue.texts() is not None:
                        text = torch.cat((fresh, queue.texts().to(device, fresh.dtype)))
                locations = torch.cat((positives, queued)).to(device)
                loc = model.encode_locations(locations, text)
                logits = queue_logits(model, img, loc, index, queued_index)
            loss, figures = self.loss(
                index, img.float(), loc[: len(idx)].float(), logits.float(), queued_index
            )
            queue.push(latlon[index], index, None if fresh is None else fresh.detach())
            negatives = float(torch.isfinite(logits).sum(dim=1).float().mean()) - 1
            return loss, {**figures, "negatives": negatives}

        def load_extra_state(extra: dict) -> None:
            queue.load_state_dict(extra["queue"])
            noise.set_state(extra["noise"])

        trainable = Trainable(
            name=self.name,
            model=model,  # train() keeps the backbone's frozen trunk in eval mode
            optimizer=geoclip_optimizer(model, config),
            batch_loss=batch_loss,
            trainable_state=model.trainable_state,
            load_trainable_state=model.load_trainable_state,
            extra_state=lambda: {"queue": queue.state_dict(), "noise": noise.get_state()},
            load_extra_state=load_extra_state,
            epoch_figures=lambda: {"queue_filled": queue.filled},
        )
        return run_epochs(trainable, run, progress=progress_span(run.progress, FEATURE_SHARE, 1.0))

    def load(self, run_dir: Path, config: TrainConfig, device: torch.device) -> GeoclipModel:
        """The trained model of a run folder from its checkpoint, in eval mode."""
        model = self.build_model(config, device, official_weights=False)
        model.load_trainable_state(read_checkpoint(run_dir)["model"])
        return model.eval()

    def embed_gallery(self, network, table: pd.DataFrame, device: torch.device) -> torch.Tensor:
        """A gallery is coordinates (and, for a hybrid branch, captions): the location branch's
        embeddings."""
        return network.embed_locations(table, device)


OBJECTIVE = Geoclip()
