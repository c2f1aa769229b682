"""Localization as retrieval (docs/method.md, "Predictions"): embed a gallery of location captions,
take the top-K.

Predictions are the best entry's coordinate (``top1``), a softmax-weighted mean of the top-K
entries on the unit sphere (``weighted``), or that mean taken over the heaviest group of
nearby entries only (``mode``). ``weighted`` is the classic rule; when the top-K sit in
far-apart towns its mean falls between them (in the sea, between islands), a place none of the
candidates is. ``mode`` seeks the densest candidate location instead: every entry's mass is the
softmax weight of the entries within ``mode_radius_m`` of it, the heaviest entry wins and the
prediction is the weighted mean of its neighbours. All report an uncertainty radius, the weighted
mean distance of the top-K entries to the prediction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import DEFAULT_METHOD, METHODS, MODE_RADIUS_M
from .device import autocast, gallery_precision, precision_scope, precision_tag
from .errors import InputError
from .geo import haversine_m, latlon_to_unit, unit_to_latlon
from .io import atomic_path, read_cached_npy

if TYPE_CHECKING:
    from .gallery_index import GalleryIndex


@dataclass
class Gallery:
    """Location captions with known coordinates and their L2-normalised embeddings."""

    table: pd.DataFrame  # at least lat, lon, caption
    # (G, D) float32: a CPU tensor, or a read-only memory map of the cached embeddings on disk
    embeddings: torch.Tensor | np.ndarray
    index: GalleryIndex | None = None  # a faiss index (ivf, hnsw); None: exact search

    def __len__(self) -> int:
        return len(self.table)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-K ``(scores, rows)`` of normalised ``queries``, with the index when it has one."""
        if self.index is not None:
            return self.index.search(queries, k)
        return top_k(queries, self.embeddings, k)


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


#: Captions embedded (and written to the cache) at a time: a gallery of 10^7 places is never one
#: tensor in memory.
EMBED_CHUNK = 65_536


def build_gallery(
    backbone,
    table: pd.DataFrame,
    *,
    device: torch.device,
    model_fingerprint: str,
    cache_dir: Path | None = None,
    index: str = "auto",
    embed: Callable[[pd.DataFrame], torch.Tensor] | None = None,
) -> Gallery:
    """Embed ``table``; with ``cache_dir`` the embeddings are kept for the same model.

    ``embed`` turns rows of the table into L2-normalised embeddings: the model's objective's
    :meth:`~swclip_core.objectives.base.Objective.embed_gallery`; without it, a backbone's own
    ``embed_locations`` (GeoCLIP: coordinates, not text) or its captions through the text tower.
    ``model_fingerprint`` names the exact weights (e.g. a checkpoint digest), so that a retrained
    model never reuses another model's gallery. Cached embeddings are written chunk by chunk to a
    ``.npy`` file and memory-mapped, so a gallery larger than memory is searched from disk.
    ``index`` is one of :data:`~swclip_core.gallery_index.INDEX_KINDS`; a faiss index is built
    once and cached beside the embeddings.
    """
    from .gallery_index import index_file, open_index, resolve_kind

    missing = {"lat", "lon", "caption"} - set(table.columns)
    if missing:
        raise InputError(f"a gallery needs columns lat, lon and caption; missing {sorted(missing)}")
    if table.empty:
        raise InputError("the gallery is empty: give it at least one location")
    kind = resolve_kind(index, len(table))
    table = table.reset_index(drop=True)
    chunks = (
        table.iloc[start : start + EMBED_CHUNK] for start in range(0, len(table), EMBED_CHUNK)
    )
    embed = embed or (lambda chunk: _embed_chunk(backbone, chunk, device))
    precision = gallery_precision(device)

    def embedded() -> Iterator[torch.Tensor]:
        for chunk in chunks:
            with precision_scope(precision):
                rows = embed(chunk)
            yield rows

    if cache_dir is None:
        embeddings = torch.cat(list(embedded()))
        gallery_index = None if kind == "exact" else open_index(embeddings.numpy(), kind)
        return Gallery(table, embeddings, gallery_index)
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update((model_fingerprint + precision_tag(precision)).encode())
    for caption in table["caption"].astype(str):
        digest.update(caption.encode() + b"\n")
    cache_file = Path(cache_dir) / f"gallery-{digest.hexdigest()}.npy"
    embeddings = read_cached_npy(cache_file, mmap_mode="r")
    if embeddings is None or embeddings.ndim != 2 or len(embeddings) != len(table):
        embeddings = None  # not embedded yet, or a damaged file: unmap it, then write it again
        _write_chunks(embedded(), len(table), cache_file)
        embeddings = np.load(cache_file, mmap_mode="r")
    if kind == "exact":
        return Gallery(table, embeddings)
    return Gallery(table, embeddings, open_index(embeddings, kind, index_file(cache_file, kind)))


def _embed_chunk(backbone, chunk: pd.DataFrame, device: torch.device) -> torch.Tensor:
    if hasattr(backbone, "embed_locations"):  # GeoCLIP: a gallery is coordinates, not text
        return backbone.embed_locations(chunk, device)
    return embed_captions(backbone, chunk["caption"].astype(str).tolist(), device=device)


def _write_chunks(chunks: Iterator[torch.Tensor], rows: int, path: Path) -> None:
    """Write embeddings arriving in chunks as one (rows, D) float32 ``.npy`` file, atomically."""
    with atomic_path(path) as tmp:
        store, start = None, 0
        for chunk in chunks:
            if store is None:
                shape = (rows, chunk.shape[1])
                store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            store[start : start + len(chunk)] = chunk.numpy()
            start += len(chunk)
        store.flush()
        del store


#: Largest block of similarity scores held at once: a layer of 10,000 photos against a gallery of
#: a million captions would otherwise need a 40 GB (Q, G) matrix.
MAX_BLOCK_BYTES = 256 * 2**20
#: Queries scored together against a gallery too large for one matmul: each group reads the
#: gallery once, so the larger the group the less reading per query, while its running top-K
#: stays small.
QUERY_GROUP = 4096


def top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor | np.ndarray,
    k: int,
    *,
    rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K cosine similarities of normalised ``queries`` (Q, D) against ``gallery`` (G, D): a
    tensor, or embeddings on disk (a memory map).

    Holds at most :data:`MAX_BLOCK_BYTES` of similarities at a time: one matmul when the whole
    (Q, G) matrix fits; otherwise ``rows`` queries at a time (default :data:`QUERY_GROUP`), each
    group against the gallery in blocks (:func:`streamed_top_k`), so that a group reads the
    gallery once. (Cutting the queries into groups small enough for one matmul each re-read the
    whole gallery per few queries: 1.5x slower than blocking the gallery at 1,024 queries
    against 10^6 entries.)
    """
    k = min(k, gallery.shape[0])
    whole = queries.shape[0] * gallery.shape[0] * 4
    if rows is None and isinstance(gallery, torch.Tensor) and whole <= MAX_BLOCK_BYTES:
        return (queries @ gallery.T).topk(k, dim=1)
    rows = max(1, rows or QUERY_GROUP)
    groups = range(0, len(queries), rows)
    found = [streamed_top_k(queries[i : i + rows], gallery, k) for i in groups]
    return torch.cat([s for s, _ in found]), torch.cat([i for _, i in found])


def streamed_top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor | np.ndarray,
    k: int,
    *,
    gallery_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_k` against the gallery read ``gallery_rows`` entries at a time (default: as
    many as keep the similarities within :data:`MAX_BLOCK_BYTES`), e.g. from a memory map on
    disk: each block is read once, and memory holds one block and the running top-K."""
    size, dim = gallery.shape
    k = min(k, size)
    if gallery_rows is None:
        gallery_rows = MAX_BLOCK_BYTES // (4 * max(dim, len(queries)))
    gallery_rows = max(k, gallery_rows)
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    for start in range(0, size, gallery_rows):
        block = gallery[start : start + gallery_rows]
        if not isinstance(block, torch.Tensor):
            block = torch.from_numpy(np.array(block, np.float32))
        scores, index = (queries @ block.T).topk(min(k, len(block)), dim=1)
        index = index + start
        if best is not None:
            scores = torch.cat([best[0], scores], dim=1)
            index = torch.cat([best[1], index], dim=1)
            scores, order = scores.topk(k, dim=1)
            index = index.gather(1, order)
        best = scores, index
    return best


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
    """Coordinates from top-K retrieval results (docs/method.md, "Predictions")."""
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
            # an entry without probability (a fused prediction's padding, or at a share of 0 or 1
            # the other predictor's candidates) is no centre: its radius could hold the most mass
            mass[weights <= 0] = -np.inf
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
    embeddings: torch.Tensor | np.ndarray,
    table: pd.DataFrame,
    *,
    k: int = 5,
    method: str = DEFAULT_METHOD,
    temperature: float = 0.05,
    mode_radius_m: float = MODE_RADIUS_M,
    gallery_index: GalleryIndex | None = None,
) -> Predictions:
    """Top-K retrieval of normalised ``queries`` among ``embeddings`` whose rows are located by
    ``table.lat``/``table.lon`` (with ``gallery_index`` when given), then the predicted
    coordinates."""
    scores, index = Gallery(table, embeddings, gallery_index).search(queries, k)
    return predict_locations(
        scores.numpy(),
        index.numpy(),
        table["lat"].to_numpy(dtype=float),
        table["lon"].to_numpy(dtype=float),
        method=method,
        temperature=temperature,
        mode_radius_m=mode_radius_m,
    )
