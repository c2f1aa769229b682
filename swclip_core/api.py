"""The toolkit as a library: load a trained model and everything it needs to localize.

The ``swclip`` command, the QGIS worker, the demo and the benchmarks all come through here, so a
model is loaded, fingerprinted and paired with its gallery in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import TrainConfig
from .runs import fingerprint, seed_everything

if TYPE_CHECKING:
    import torch

    from .knn import KnnLocalizer


@dataclass
class Model:
    """A model ready to localize: its network, settings, the fingerprint of its weights (which
    keys its cached gallery embeddings) and, for image-kNN, its gallery of training images."""

    network: Any  # models.Backbone, or models.geoclip.GeoclipModel for a geoclip run
    config: TrainConfig
    device: torch.device
    fingerprint: str = ""
    knn: KnnLocalizer | None = None
    run_dir: Path | None = None


def load_model(run_dir: str | Path, device: str | torch.device = "auto") -> Model:
    """The trained model in a run folder (from ``swclip train``), in eval mode on ``device``."""
    from .device import resolve_device
    from .knn import load_knn
    from .train import load_trained

    device = resolve_device(device) if isinstance(device, str) else device
    network, config = load_trained(run_dir, device)
    knn = None
    if config.objective == "image-knn":
        knn = load_knn(run_dir, device, backbone=network)
    return Model(network, config, device, fingerprint(run_dir), knn, Path(run_dir))


def zero_shot_model(config: TrainConfig, device: str | torch.device = "auto") -> Model:
    """``config``'s backbone untrained: its projection heads are random (seeded by
    ``config.seed``), a chance-level reference for trained models."""
    from .device import resolve_device
    from .models import create_backbone

    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(config.seed)
    return Model(create_backbone(config.backbone, device=device), config, device)
