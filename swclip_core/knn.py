"""The ``image-knn`` peer (docs/method.md, "Peers") and its fusion with caption retrieval
(docs/method.md, "Fusion").

image-kNN is the classic visual-place-recognition baseline: no training; the gallery is the
training images' frozen backbone features (L2-normalised, cosine similarity), and a query takes the
coordinate of its best training image (``top1``) or the softmax-weighted mean of its top-K on the
unit sphere (``weighted``), exactly as caption retrieval does (:func:`retrieval.predict_locations`).

An image-kNN run folder holds ``config.json``, ``train_samples.csv`` (the training locations and
their captions) and ``knn_features.pt`` (the features, stamped with the backbone's ``cache_key``
so that they are never used with another backbone). It has no checkpoint.

Fusion (a linear opinion pool): a caption-retrieval model and an image-kNN gallery each give a
distribution over their top-K candidates, ``p_cap = softmax(cos/T_cap)`` and
``p_knn = softmax(cos/T_knn)``. Both are mapped onto one candidate set, the union of their
locations (coordinates rounded to 1e-6°, so a training location reached both ways is one
candidate), and mixed: ``p = (1 − w)·p_cap + w·p_knn``. ``top1`` is the candidate with the most
mass, ``weighted`` the p-weighted mean of the candidates' unit vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import DEFAULT_METHOD, MODE_RADIUS_M, TrainConfig
from .device import resolve_device
from .errors import InputError, ModelError
from .features import extract_image_features
from .io import ProgressFn, save_torch
from .retrieval import Predictions, localize, predict_locations
from .runs import CONFIG, load_checkpoint, start_run

KNN_FEATURES = "knn_features.pt"
KNN_TEMPERATURE = 0.05  # softmax temperature over cosine similarities of frozen image features
KNN_WEIGHT = 0.5  # share of image-kNN in a fused prediction
CANDIDATE_COLUMNS = ("lat", "lon", "caption")


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
        """Predictions for normalised query features: top-K training images, then the rules of
        docs/method.md, "Predictions"."""
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


def index_training_images(
    samples: pd.DataFrame,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
):
    """``swclip train --objective image-knn``: store the training images' frozen features.

    Returns a :class:`train.TrainResult` with 0 epochs, a NaN loss and the indexing rate.
    """
    from .loop import TrainResult
    from .models import create_backbone

    complete = resume and (Path(run_dir) / KNN_FEATURES).is_file()
    run_dir, samples, _, config = start_run(
        samples, config, run_dir, marker=KNN_FEATURES, resume=resume
    )
    if complete:  # same input and settings (start_run checked): nothing left to do
        return TrainResult(run_dir, 0, float("nan"), 0.0, already_complete=True)
    device = resolve_device(config.device)
    backbone = create_backbone(config.backbone, config.pretrained, device=device)
    started = time.perf_counter()
    features = extract_image_features(
        backbone,
        samples["image_path"].tolist(),
        device=device,
        cache_dir=cache_dir,
        num_workers=config.num_workers,
        progress=progress,
        cancel=cancel,
    )
    seconds = time.perf_counter() - started
    save_torch(
        {
            "cache_key": backbone.cache_key,
            "backbone": {"name": config.backbone, "pretrained": config.pretrained},
            "features": F.normalize(features, dim=-1),
        },
        run_dir / KNN_FEATURES,
    )
    return TrainResult(run_dir, 0, float("nan"), len(samples) / max(seconds, 1e-9))


def load_knn(
    run_dir: str | Path, device: str | torch.device = "auto", *, backbone=None
) -> KnnLocalizer:
    """The image-kNN gallery of a run folder; ``backbone`` avoids rebuilding a loaded one."""
    from .galleries import training_gallery
    from .models import create_backbone

    run_dir = Path(run_dir)
    path = run_dir / KNN_FEATURES
    if not path.exists() or not (run_dir / CONFIG).exists():
        raise ModelError(
            f"{run_dir} is not an image-kNN run (needs {CONFIG} and {KNN_FEATURES}); "
            "make one with `swclip train --objective image-knn`"
        )
    config = TrainConfig.load(run_dir / CONFIG)
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


def fuse_predictions(
    caption: Predictions,
    caption_table: pd.DataFrame,
    caption_temperature: float,
    knn: Predictions,
    knn_table: pd.DataFrame,
    knn_temperature: float,
    *,
    knn_weight: float = KNN_WEIGHT,
    method: str = DEFAULT_METHOD,
    mode_radius_m: float = MODE_RADIUS_M,
) -> tuple[Predictions, pd.DataFrame]:
    """Mix caption retrieval and image-kNN (formula in the module docstring).

    Returns the fused predictions and the shared candidate table (lat, lon, caption) that their
    ``top_index`` refers to; ``top_score`` holds the fused probabilities (best first, 0-padded).
    """
    if not 0.0 <= knn_weight <= 1.0:
        raise InputError(f"the image-kNN weight must be within 0..1, got {knn_weight}")
    columns = list(CANDIDATE_COLUMNS)
    both = pd.concat([caption_table[columns], knn_table[columns]], ignore_index=True)
    keys = np.round(both[["lat", "lon"]].to_numpy(dtype=float), 6)
    _, first, location_of = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    location_of = location_of.reshape(-1)
    candidates = both.iloc[first].reset_index(drop=True)
    n_caption = len(caption_table)
    ids = np.hstack(
        [location_of[caption.top_index], location_of[n_caption + np.asarray(knn.top_index)]]
    )
    mass = np.hstack(
        [
            (1.0 - knn_weight) * _softmax(caption.top_score, caption_temperature),
            knn_weight * _softmax(knn.top_score, knn_temperature),
        ]
    )
    index = np.zeros_like(ids)
    prob = np.zeros_like(mass)
    for row in range(ids.shape[0]):
        unique, inverse = np.unique(ids[row], return_inverse=True)
        merged = np.bincount(inverse, weights=mass[row])
        order = np.argsort(-merged, kind="stable")  # ties: the lower candidate id first
        index[row, : len(order)] = unique[order]
        prob[row, : len(order)] = merged[order]
    with np.errstate(divide="ignore"):
        log_prob = np.log(prob)  # softmax(log p) at temperature 1 is p itself; padding gets 0
    fused = predict_locations(
        log_prob,
        index,
        candidates["lat"].to_numpy(dtype=float),
        candidates["lon"].to_numpy(dtype=float),
        method=method,
        temperature=1.0,
        mode_radius_m=mode_radius_m,
    )
    return replace(fused, top_score=prob), candidates


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.asarray(scores, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)
