"""What the caption objectives (swclip, clip, semivariogram) share: a photo's embedding is trained
to match its location caption's (docs/method.md, "Training"), on the CPU or a GPU.

Two modes share one loop:
- ``cached``: the image tower is frozen, its features are computed once (and cached on disk); the
  image projection head and the upper text layers train. This is what a CPU can afford.
- ``finetune``: the image trunk trains too; images are decoded every epoch; AMP on CUDA.

Each objective brings only its batch loss (:meth:`CaptionObjective.loss`) and, if it needs them,
per-epoch and end-of-run steps; a run folder is laid out as :mod:`swclip_core.runs` describes.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..data.tensors import ImageDataset
from ..device import autocast
from ..distributed import gather_rows, is_main, local_share
from ..io import progress_span
from ..loop import FEATURE_SHARE, Trainable, TrainResult, run_epochs
from ..losses import MAX_LOGIT_SCALE
from ..models import Backbone, create_backbone
from ..runs import Run, read_checkpoint
from .base import Objective
from .spatial import resolve_kernel


@dataclass
class CaptionTraining:
    """One caption run in progress: the model, its inputs and the objective's own state."""

    run: Run
    backbone: Backbone
    tokens: torch.Tensor  # the captions, tokenized
    lat: torch.Tensor  # float64 degrees, CPU
    lon: torch.Tensor
    features: torch.Tensor | None  # cached mode: the frozen image features; finetune: None
    images: ImageDataset
    state: dict[str, Any] = field(default_factory=dict)  # what an objective keeps between steps

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def config(self) -> TrainConfig:
        return self.run.config


def similarity_logits(backbone: Backbone, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """``logit_scale · normalize(img) @ normalize(txt).T`` (docs/method.md, "Training")."""
    scale = backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    return scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def build_optimizer(backbone: Backbone, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; freshly initialised heads learn faster than the pretrained layers below them."""
    head_ids = {id(p) for p in backbone.head_parameters()}
    heads, body = [], []
    for param in backbone.parameters():
        if param.requires_grad:
            (heads if id(param) in head_ids else body).append(param)
    groups = [{"params": heads, "lr": config.head_lr}]
    if body:
        groups.append({"params": body, "lr": config.lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def trainable_state(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The weights a run changed; the rest comes back from the backbone's pretrained source."""
    names = {name for name, p in backbone.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in backbone.state_dict().items() if k in names}


class CaptionObjective(Objective):
    """Photos against location captions: image tower and text tower of one backbone."""

    # Under torchrun each process embeds its share of a batch and the loss sees the whole batch.
    distributed = True

    def prepare(self, config: TrainConfig, samples: pd.DataFrame) -> TrainConfig:
        return resolve_kernel(config, samples)

    @abstractmethod
    def loss(
        self,
        training: CaptionTraining,
        index: torch.Tensor,
        img: torch.Tensor,
        txt: torch.Tensor,
        logits: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch (rows ``index`` of the samples) and figures to log, from its
        image and text embeddings and their similarity logits (float32, on the device)."""

    def start(self, training: CaptionTraining) -> None:
        """Set up the objective's state before the first epoch."""

    def start_epoch(self, training: CaptionTraining, epoch: int) -> None:
        """Called at every epoch start, before the batches."""

    def finish(self, training: CaptionTraining) -> None:
        """Called once the last epoch is saved."""

    def fit(self, run: Run) -> TrainResult:
        config, device = run.config, run.device
        backbone = create_backbone(config.backbone, config.pretrained, device=device)
        backbone.set_trainable(
            image_trunk=config.mode == "finetune", text_layers=config.text_layers
        )
        tokens = backbone.tokenize(run.captions)
        lat = torch.as_tensor(run.samples["lat"].to_numpy(), dtype=torch.float64)
        lon = torch.as_tensor(run.samples["lon"].to_numpy(), dtype=torch.float64)
        features, progress = None, run.progress
        if config.mode == "cached":
            features = run.image_features(backbone, progress_span(progress, 0.0, FEATURE_SHARE))
            progress = progress_span(progress, FEATURE_SHARE, 1.0)
        images = ImageDataset(run.samples["image_path"].tolist(), backbone.preprocess)
        training = CaptionTraining(run, backbone, tokens, lat, lon, features, images)
        self.start(training)

        def batch_loss(idx: np.ndarray, batch_images: torch.Tensor | None):
            # Under torchrun this process embeds its share of the batch (``batch_images`` are
            # that share's); the loss sees every share's embeddings, so the whole batch's
            # matrix. Alone, the share is the batch and the gathering returns its input.
            index, mine = torch.as_tensor(idx), torch.as_tensor(local_share(idx))
            with autocast(device):
                if features is not None:
                    img = backbone.image_head(features[mine].to(device))
                else:
                    img = backbone.encode_image(batch_images.to(device, non_blocking=True))
                txt = backbone.encode_text(tokens[mine].to(device))
                img, txt = gather_rows(img, len(idx)), gather_rows(txt, len(idx))
                logits = similarity_logits(backbone, img, txt)
            return self.loss(training, index, img.float(), txt.float(), logits.float())

        trainable = Trainable(
            name=self.name,
            model=backbone,
            optimizer=build_optimizer(backbone, config),
            batch_loss=batch_loss,
            trainable_state=lambda: trainable_state(backbone),
            load_trainable_state=lambda state: backbone.load_state_dict(state, strict=False),
            images=images if features is None else None,
            # cached mode: the frozen trunk keeps its normalisation statistics fixed
            train_mode=features is None,
            on_epoch_start=lambda epoch: self.start_epoch(training, epoch),
        )
        result = run_epochs(trainable, run, progress=progress)
        if is_main():  # its files are the run folder's
            self.finish(training)
        return result

    def load(self, run_dir: Path, config: TrainConfig, device: torch.device) -> Backbone:
        state = read_checkpoint(run_dir)
        backbone = create_backbone(config.backbone, config.pretrained, device=device)
        unexpected = sorted(set(state["model"]) - set(backbone.state_dict()))
        if unexpected:
            raise KeyError(f"unexpected weights such as {unexpected[0]!r}")
        backbone.load_state_dict(state["model"], strict=False)
        return backbone.eval()
