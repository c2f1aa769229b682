"""Localization as retrieval (SPEC section 6): embed a gallery of location captions, take the top-K.

Predictions are the best entry's coordinate (``top1``), a softmax-weighted mean of the top-K
entries on the unit sphere (``weighted``, SPEC 6), or that mean taken over the heaviest group of
nearby entries only (``mode``). ``weighted`` is what the SPEC defines; when the top-K sit in
far-apart towns its mean falls between them (in the sea, between islands), a place none of the
candidates is. ``mode`` seeks the densest candidate location instead: every entry's mass is the
softmax weight of the entries within ``mode_radius_m`` of it, the heaviest entry wins and the
prediction is the weighted mean of its neighbours. All report an uncertainty radius, the weighted
mean distance of the top-K entries to the prediction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import DEFAULT_METHOD, METHODS, MODE_RADIUS_M
from .device import autocast
from .errors import InputError
from .geo import haversine_m, latlon_to_unit, unit_to_latlon
from .io import save_torch


@dataclass
class Gallery:
    """Location captions with known coordinates and their L2-normalised embeddings."""

    table: pd.DataFrame  # at least lat, lon, caption
    embeddings: torch.Tensor  # (G, D), float32, CPU

    def __len__(self) -> int:
        return len(self.table)


@dataclass
class Predictions:
    """Predicted coordinates with the top-K evidence behind them."""

    lat: np.ndarray
    lon: np.ndarray
    uncertainty_m: np.ndarray
    # softmax weight of the best entry among the top-K (mode: of the chosen group of entries)
    confidence: np.ndarray
    top_index: np.ndarray  # (Q, K) gallery rows, best first
    top_score: np.ndarray  # (Q, K) cosine similarities


@torch.no_grad()
def embed_captions(
    backbone, captions: list[str], *, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` on the CPU."""
    backbone.eval()
    chunks = []
    for start in range(0, len(captions), batch_size):
        tokens = backbone.tokenize(captions[start : start + batch_size]).to(device)
        with autocast(device):
            chunks.append(F.normalize(backbone.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, backbone.embed_dim)


def build_gallery(
    backbone,
    table: pd.DataFrame,
    *,
    device: torch.device,
    model_fingerprint: str,
    cache_dir: Path | None = None,
) -> Gallery:
    """Embed ``table.caption``; with ``cache_dir`` the embeddings are kept for the same model.

    ``model_fingerprint`` names the exact weights (e.g. a checkpoint digest), so that a retrained
    model never reuses another model's gallery.
    """
    missing = {"lat", "lon", "caption"} - set(table.columns)
    if missing:
        raise InputError(f"a gallery needs columns lat, lon and caption; missing {sorted(missing)}")
    if table.empty:
        raise InputError("the gallery is empty: give it at least one location")
    table = table.reset_index(drop=True)
    captions = table["caption"].astype(str).tolist()
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(model_fingerprint.encode())
    for caption in captions:
        digest.update(caption.encode() + b"\n")
    cache_file = Path(cache_dir) / f"gallery-{digest.hexdigest()}.pt" if cache_dir else None
    if cache_file is not None and cache_file.exists():
        return Gallery(table, torch.load(cache_file, map_location="cpu", weights_only=True))
    if hasattr(backbone, "embed_locations"):  # GeoCLIP: a gallery is coordinates, not text
        embeddings = backbone.embed_locations(table, device)
    else:
        embeddings = embed_captions(backbone, captions, device=device)
    if cache_file is not None:
        save_torch(embeddings, cache_file)
    return Gallery(table, embeddings)


#: Largest block of similarity scores held at once: a layer of 10,000 photos against a gallery of
#: a million captions would otherwise need a 40 GB (Q, G) matrix.
MAX_BLOCK_BYTES = 256 * 2**20


def top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, *, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K cosine similarities of normalised ``queries`` (Q, D) against ``gallery`` (G, D).

    Scores ``rows`` queries at a time; by default as many as fit in :data:`MAX_BLOCK_BYTES`, so
    memory stays bounded whatever the gallery size and the whole search is one matmul when it fits.
    """
    k = min(k, gallery.shape[0])
    if rows is None:
        rows = MAX_BLOCK_BYTES // max(1, gallery.shape[0] * gallery.element_size())
    rows = max(1, rows)
    if rows >= queries.shape[0]:
        return (queries @ gallery.T).topk(k, dim=1)
    blocks = [
        (queries[i : i + rows] @ gallery.T).topk(k, dim=1) for i in range(0, len(queries), rows)
    ]
    return torch.cat([s for s, _ in blocks]), torch.cat([i for _, i in blocks])


def predict_locations(
    scores: np.ndarray,
    index: np.ndarray,
    gallery_lat: np.ndarray,
    gallery_lon: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    temperature: float = 0.05,
    mode_radius_m: float = MODE_RADIUS_M,
) -> Predictions:
    """Coordinates from top-K retrieval results (SPEC section 6; ``mode`` in the module doc)."""
    if method not in METHODS:
        raise InputError(f"unknown prediction method {method!r}; choose one of {METHODS}")
    if method == "mode" and not mode_radius_m > 0:  # else no entry is near even itself: NaN
        raise InputError(f"the mode radius must be positive (metres), not {mode_radius_m}")
    scores = np.asarray(scores, dtype=np.float64)
    index = np.asarray(index)
    logits = scores / temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    cand_lat, cand_lon = gallery_lat[index], gallery_lon[index]
    confidence = weights[:, 0]
    if method == "top1":
        lat, lon = cand_lat[:, 0], cand_lon[:, 0]
    else:
        members = weights
        if method == "mode":
            near = (
                haversine_m(
                    cand_lat[:, :, None], cand_lon[:, :, None], cand_lat[:, None], cand_lon[:, None]
                )
                <= mode_radius_m
            )  # (Q, K, K): entry j lies within the radius of entry i
            mass = (near * weights[:, None, :]).sum(axis=2)
            rows, best = np.arange(len(mass)), mass.argmax(axis=1)  # ties: the better-ranked
            members = weights * near[rows, best]
            confidence = mass[rows, best]
        mean_vector = (members[..., None] * latlon_to_unit(cand_lat, cand_lon)).sum(axis=1)
        lat, lon = unit_to_latlon(mean_vector)
    spread = haversine_m(cand_lat, cand_lon, lat[:, None], lon[:, None])
    return Predictions(
        lat=np.asarray(lat, dtype=np.float64),
        lon=np.asarray(lon, dtype=np.float64),
        uncertainty_m=(weights * spread).sum(axis=1),
        confidence=confidence,
        top_index=index,
        top_score=scores,
    )


def localize(
    queries: torch.Tensor,
    embeddings: torch.Tensor,
    table: pd.DataFrame,
    *,
    k: int = 5,
    method: str = DEFAULT_METHOD,
    temperature: float = 0.05,
    mode_radius_m: float = MODE_RADIUS_M,
) -> Predictions:
    """Top-K retrieval of normalised ``queries`` among ``embeddings`` whose rows are located by
    ``table.lat``/``table.lon``, then the predicted coordinates."""
    scores, index = top_k(queries, embeddings, k)
    return predict_locations(
        scores.numpy(),
        index.numpy(),
        table["lat"].to_numpy(dtype=float),
        table["lon"].to_numpy(dtype=float),
        method=method,
        temperature=temperature,
        mode_radius_m=mode_radius_m,
    )
