"""``hybrid``: a location branch reading both the caption and the coordinates
(:mod:`swclip_core.models.hybrid`), trained with the SW-CLIP loss and GeoCLIP's queue
(docs/method.md, "Location encoders")."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..models import create_backbone
from ..models.hybrid import HybridModel
from .swgeo import SwGeo


def build_hybrid_model(
    config: TrainConfig, device: torch.device, *, official_weights: bool = True
) -> HybridModel:
    """A hybrid model on ``config``'s backbone (``config.hybrid_combine`` mixes the branches)."""
    return HybridModel(
        create_backbone(config.backbone, config.pretrained, device=device),
        combine=config.hybrid_combine,
        text_layers=config.text_layers,
        official_weights=official_weights,
    )


class Hybrid(SwGeo):
    name = "hybrid"

    def build_model(self, config, device, *, official_weights=True):
        return build_hybrid_model(config, device, official_weights=official_weights)


OBJECTIVE = Hybrid()
