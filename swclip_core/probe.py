"""``swclip probe``: how much location a frozen backbone's image features carry.

Two classic probes, in the spirit of "Textual supervision enhances geospatial representations in
vision-language models" (2026), so vision-only and vision-language backbones can be compared on
the same photos:

- kNN geolocation, leave-one-out: each photo's k nearest other photos by cosine similarity of the
  L2-normalised frozen features (ties: lower index first); prediction = their coordinate for k = 1,
  else the normalised mean of their unit vectors.
- Linear probe, k-fold cross-validation: ridge regression (features standardised, ridge strength
  chosen by efficient leave-one-out CV inside each training fold) from features to the 3-D unit
  vector of the location; the predicted vector is normalised back to lat/lon.

A location-blind reference (the training folds' mean location, same folds) says what "no
information" scores on this data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .device import current_precision, resolve_device
from .errors import InputError
from .features import extract_image_features
from .geo import haversine_m, latlon_to_unit, unit_to_latlon
from .io import ProgressFn
from .metrics import error_summary

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
_ROW_CHUNK = 1024


@dataclass
class ProbeResult:
    """Error figures (``metrics.error_summary``) per probe for one backbone."""

    backbone: str
    pretrained: str | None
    n: int
    feature_dim: int
    k: int
    folds: int
    seed: int
    precision: str  # of the forward passes (device.current_precision)
    rows: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return asdict(self)


def knn_loo_predictions(
    features: np.ndarray | torch.Tensor, lat: np.ndarray, lon: np.ndarray, *, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out kNN coordinates for every sample (definition in the module docstring)."""
    emb = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=-1)
    n = emb.shape[0]
    if not 1 <= k < n:
        raise InputError(f"the kNN probe needs 1 <= k < number of photos ({n}), got k={k}")
    neighbours = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _ROW_CHUNK):
        sim = (emb[start : start + _ROW_CHUNK] @ emb.T).numpy().astype(np.float64)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # a photo is not its own neighbour
        neighbours[start : start + len(rows)] = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if k == 1:
        return lat[neighbours[:, 0]], lon[neighbours[:, 0]]
    return unit_to_latlon(latlon_to_unit(lat[neighbours], lon[neighbours]).mean(axis=1))


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold number of each sample: a seeded permutation dealt round-robin into ``folds`` folds."""
    if not 2 <= folds <= n:
        raise InputError(
            f"cross-validation needs 2 <= folds <= number of photos ({n}), got {folds}"
        )
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return ids


def ridge_probe_predictions(
    features: np.ndarray | torch.Tensor,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated linear-probe coordinates (definition in the module docstring)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    target = latlon_to_unit(lat, lon)
    predicted = np.empty_like(target)
    fold = fold_ids(len(x), folds, seed)
    for f in range(folds):
        test = fold == f
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        model.fit(x[~test], target[~test])
        predicted[test] = model.predict(x[test])
    return unit_to_latlon(predicted)


def centroid_predictions(
    lat: np.ndarray, lon: np.ndarray, *, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The location-blind reference: each fold gets its training folds' mean location."""
    unit = latlon_to_unit(lat, lon)
    predicted = np.empty_like(unit)
    fold = fold_ids(len(unit), folds, seed)
    for f in range(folds):
        predicted[fold == f] = unit[fold != f].mean(axis=0)
    return unit_to_latlon(predicted)


def probe_features(
    features: np.ndarray | torch.Tensor,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    k: int = 1,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Error summaries of the three probes on given features: ``knn``, ``linear``, ``centroid``."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    rows = {}
    for name, (plat, plon) in (
        ("knn", knn_loo_predictions(features, lat, lon, k=k)),
        ("linear", ridge_probe_predictions(features, lat, lon, folds=folds, seed=seed)),
        ("centroid", centroid_predictions(lat, lon, folds=folds, seed=seed)),
    ):
        rows[name] = error_summary(haversine_m(plat, plon, lat, lon))
    return rows


def probe_backbone(
    samples: pd.DataFrame,
    *,
    backbone: str = "swclip-lite",
    pretrained: str | None = None,
    k: int = 1,
    folds: int = 5,
    seed: int = 0,
    device: str = "auto",
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ProbeResult:
    """Probe a frozen backbone on ``samples`` (the table :func:`read_samples` returns)."""
    from .models import create_backbone

    if len(samples) < 3:
        raise InputError(f"the probe needs at least 3 usable photos, got {len(samples)}")
    torch_device = resolve_device(device)
    model = create_backbone(backbone, pretrained, device=torch_device)
    features = extract_image_features(
        model,
        samples["image_path"].tolist(),
        device=torch_device,
        cache_dir=cache_dir,
        progress=progress,
        cancel=cancel,
    )
    rows = probe_features(
        features.numpy(),
        samples["lat"].to_numpy(),
        samples["lon"].to_numpy(),
        k=k,
        folds=folds,
        seed=seed,
    )
    n, dim, precision = len(samples), int(features.shape[1]), current_precision(torch_device)
    return ProbeResult(backbone, pretrained, n, dim, k, folds, seed, precision, rows)
