"""The ``image-knn`` peer (docs/method.md, "Peers"): no training; the gallery is the training
images' frozen backbone features (L2-normalised, cosine similarity), and a query takes the
coordinate of its best training image (``top1``) or the softmax-weighted mean of its top-K on the
unit sphere (``weighted``), exactly as caption retrieval does (:func:`retrieval.predict_locations`).

An image-kNN run folder holds ``config.json``, ``train_samples.csv`` (the training locations and
their captions) and ``knn_features.pt`` (the features, stamped with the backbone's ``cache_key``
so that they are never used with another backbone). It has no checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..config import DEFAULT_METHOD, KNN_TEMPERATURE, MODE_RADIUS_M, TrainConfig
from ..device import resolve_device
from ..distributed import is_main
from ..errors import InputError, ModelError
from ..features import extract_image_features
from ..io import ProgressFn, save_torch
from ..loop import TrainResult
from ..models import create_backbone
from ..retrieval import Predictions, localize
from ..runs import CONFIG, Run, load_checkpoint, read_config, training_gallery
from .base import Objective

KNN_FEATURES = "knn_features.pt"


@dataclass
class KnnLocalizer:
    """Nearest training images by frozen-feature cosine similarity."""

    backbone: object  # models.Backbone; its image_features are the gallery's feature space
    table: pd.DataFrame  # the training samples: lat, lon, caption (train_samples.csv)
    features: torch.Tensor  # (N, feature_dim), L2-normalised, CPU
    device: torch.device

    def embed(
        self,
        image_paths: Sequence[str],
        *,
        cache_dir: Path | None = None,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> torch.Tensor:
        """L2-normalised frozen features of the query images (cached on disk like training's)."""
        features = extract_image_features(
            self.backbone,
            list(image_paths),
            device=self.device,
            cache_dir=cache_dir,
            progress=progress,
            cancel=cancel,
        )
        return F.normalize(features, dim=-1)

    def predict(
        self,
        queries: torch.Tensor,
        *,
        k: int = 5,
        method: str = DEFAULT_METHOD,
        temperature: float = KNN_TEMPERATURE,
        mode_radius_m: float = MODE_RADIUS_M,
    ) -> Predictions:
        """Predictions for normalised query features: top-K training images, then the prediction
        rule (docs/method.md, "Predictions")."""
        return localize(
            queries,
            self.features,
            self.table,
            k=k,
            method=method,
            temperature=temperature,
            mode_radius_m=mode_radius_m,
        )

    def localize(
        self,
        image_paths: Sequence[str],
        *,
        k: int = 5,
        method: str = DEFAULT_METHOD,
        temperature: float = KNN_TEMPERATURE,
        mode_radius_m: float = MODE_RADIUS_M,
        cache_dir: Path | None = None,
        progress: ProgressFn | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Predictions:
        """Locate image files: :meth:`embed` then :meth:`predict`."""
        queries = self.embed(image_paths, cache_dir=cache_dir, progress=progress, cancel=cancel)
        return self.predict(
            queries, k=k, method=method, temperature=temperature, mode_radius_m=mode_radius_m
        )


class ImageKnn(Objective):
    name = "image-knn"
    marker = KNN_FEATURES
    caption_gallery = False
    distributed = True  # its features are extracted in shares, rank 0 saves them

    def finished(self, run_dir: Path, config: TrainConfig) -> TrainResult | None:
        # Nothing is trained: a folder holding the features (same input and settings, which
        # start_run checked) is complete.
        if (run_dir / KNN_FEATURES).is_file():
            return TrainResult(run_dir, 0, float("nan"), 0.0, already_complete=True)
        return None

    def fit(self, run: Run) -> TrainResult:
        """Store the training images' frozen features; a result with 0 epochs, a NaN loss and
        the indexing rate."""
        config = run.config
        backbone = create_backbone(config.backbone, config.pretrained, device=run.device)
        started = time.perf_counter()
        features = run.image_features(backbone, run.progress)
        seconds = time.perf_counter() - started
        if not is_main():
            return TrainResult(run.dir, 0, float("nan"), len(run.samples) / max(seconds, 1e-9))
        save_torch(
            {
                "cache_key": backbone.cache_key,
                "backbone": {"name": config.backbone, "pretrained": config.pretrained},
                "features": F.normalize(features, dim=-1),
            },
            run.dir / KNN_FEATURES,
        )
        return TrainResult(run.dir, 0, float("nan"), len(run.samples) / max(seconds, 1e-9))

    def load(self, run_dir: Path, config: TrainConfig, device: torch.device):
        """The frozen backbone (nothing trained); its gallery is :meth:`image_gallery`."""
        return create_backbone(config.backbone, config.pretrained, device=device).eval()

    def embed_gallery(self, network, table: pd.DataFrame, device: torch.device) -> torch.Tensor:
        raise InputError(
            "an image-kNN model localizes against its training images; it embeds no gallery "
            "of locations (leave out --model, or give a trained caption model)"
        )

    def image_gallery(self, run_dir: Path, network, device: torch.device) -> KnnLocalizer:
        return load_knn(run_dir, device, backbone=network)


def load_knn(
    run_dir: str | Path, device: str | torch.device = "auto", *, backbone=None
) -> KnnLocalizer:
    """The image-kNN gallery of a run folder; ``backbone`` avoids rebuilding a loaded one."""
    run_dir = Path(run_dir)
    path = run_dir / KNN_FEATURES
    if not path.exists() or not (run_dir / CONFIG).exists():
        raise ModelError(
            f"{run_dir} is not an image-kNN run (needs {CONFIG} and {KNN_FEATURES}); "
            "make one with `swclip train --objective image-knn`"
        )
    config = read_config(run_dir)
    if isinstance(device, str):
        device = resolve_device(device)
    if backbone is None:
        backbone = create_backbone(config.backbone, config.pretrained, device=device)
    state = load_checkpoint(path, needs=("cache_key", "features"))
    if state["cache_key"] != backbone.cache_key:
        raise ModelError(
            f"the image features in {path} were made with other weights than backbone "
            f"{config.backbone!r} now has; rebuild them with `swclip train --objective image-knn`"
        )
    table = training_gallery(run_dir)
    if len(table) != state["features"].shape[0]:
        raise ModelError(f"{path} and {run_dir / 'train_samples.csv'} disagree; rebuild the run")
    return KnnLocalizer(backbone.eval(), table, state["features"].float(), device)


OBJECTIVE = ImageKnn()
