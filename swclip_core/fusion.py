"""Fusion of caption retrieval with image-kNN (a linear opinion pool; docs/method.md, "Fusion").

A caption-retrieval model and an image-kNN gallery each give a distribution over their top-K
candidates, ``p_cap = softmax(cos/T_cap)`` and ``p_knn = softmax(cos/T_knn)``. Both are mapped onto
one candidate set, the union of their locations (coordinates rounded to 1e-6°, so a training
location reached both ways is one candidate), and mixed: ``p = (1 − w)·p_cap + w·p_knn``. ``top1``
is the candidate with the most mass, ``weighted`` the p-weighted mean of the candidates' unit
vectors.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .config import DEFAULT_METHOD, MODE_RADIUS_M
from .errors import InputError
from .retrieval import Predictions, predict_locations

KNN_WEIGHT = 0.5  # share of image-kNN in a fused prediction
CANDIDATE_COLUMNS = ("lat", "lon", "caption")


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
