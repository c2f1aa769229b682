"""Approximate gallery search with faiss, for galleries too large to score exactly.

``exact`` scores every gallery entry (:func:`swclip_core.retrieval.top_k`, or
:func:`~swclip_core.retrieval.streamed_top_k` over embeddings stored on disk). ``ivf`` is faiss's
inverted-file index (k-means cells, only the ``nprobe`` cells nearest a query are scanned),
``hnsw`` its hierarchical navigable small-world graph (Malkov & Yashunin 2018). Both keep the
vectors as float16 codes (:data:`CODES`), so a 10^7-entry gallery of dimension 256 needs 5.1 GB
of codes, not 10 GB. Each finds ``CANDIDATES_PER_RESULT`` × K candidates, which are then
re-scored exactly from the stored embeddings: the scores a prediction is weighted by are the true
cosine similarities, and quantization only decides which entries are looked at.

``auto`` is exact up to :data:`EXACT_MAX_ENTRIES` entries and ivf above (see its comment).
An index is built once per (model, gallery) and saved next to that gallery's cached embeddings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .config import EXACT_MAX_ENTRIES, INDEX_KINDS
from .errors import InputError
from .io import atomic_path

CANDIDATES_PER_RESULT = 4
#: Vectors handed to faiss (and read from disk) at once while an index is built.
ADD_BLOCK = 65_536
# hnsw: efConstruction 80 left the graph of near-duplicate captions (points every few metres of
# one street) poorly connected: 0.89-0.92 top-5 overlap with exact on the 10^5 test gallery even
# at efSearch 512; 200 gave 0.96-0.97. At 10^6 entries (benchmarks/scale.py's gallery) float16
# codes reached 0.94 at efSearch 512 and 0.96 at 1024, but at 10^7 only 0.72: there every pair
# of captions is mixed about 500 times, and so it was in a 10^6 gallery mixed from 64 captions
# instead of 200, where efConstruction 200 found 0.89 at efSearch 1024, 350 0.97 and 500 0.99
# (the build took 1, 2 and 2.8 times as long). In that gallery, float32 codes found what float16
# found, M = 64 0.92 and faiss's keep_max_size_level0 0.59: the search beam while building, not
# the codes or the number of links, is what these galleries need. With 500, benchmarks/scale.md
# measured 1.000 at 10^6 and 0.86 at 10^7 with efSearch 1024: the search beam, too, must widen
# with the gallery (hnsw_ef_search).
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 500
# efSearch up to a million entries; above, times the square root of the size in millions,
# rounded up. On that 10^7 graph efSearch 2048 found 0.948 of the exact top-5, 4096 0.998 (8.4 ms
# a query on 2 threads, benchmarks/scale.md) and 8192 no more (12 ms): the rule gives 4096 there.
HNSW_EF_SEARCH = 1024
#: How each index kind stores the vectors (a faiss scalar quantizer); part of the cached file's
#: name, so an index stored another way is rebuilt rather than read. Not 8-bit codes: they blur
#: places metres apart, whose similarities differ in the fourth decimal. On benchmarks/scale.py's
#: 10^6-entry gallery 8-bit codes kept 0.968 (ivf) and 0.87-0.90 (hnsw) of the exact top-5 with
#: 4 candidates per result re-scored (ivf needed 64 for 1.0), float16 codes 1.0 and 0.96.
CODES = {"ivf": "SQfp16", "hnsw": "SQfp16"}
# Cells of an ivf index: 4·√G, the usual rule (faiss wiki, "Guidelines to choose an index"),
# and at least 39 training vectors per cell; a query scans 1/16 of them.
IVF_CELLS_PER_SQRT = 4
IVF_TRAIN_PER_CELL = 39
IVF_PROBE_SHARE = 1 / 16


def resolve_kind(kind: str, size: int) -> str:
    """``kind`` itself, or for ``auto`` the kind a gallery of ``size`` entries is searched with."""
    if kind not in INDEX_KINDS:
        raise InputError(f"unknown gallery index {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "exact" if size <= EXACT_MAX_ENTRIES else "ivf"
    return kind


def index_file(embeddings_file: Path, kind: str) -> Path:
    """Where the ``kind`` index of the gallery whose embeddings are ``embeddings_file`` is kept:
    beside them, under their name (which already names the model and the captions) and the
    settings the index was built with, so that one built otherwise is rebuilt, not read."""
    built = f"{kind}-{CODES[kind].lower()}"
    if kind == "hnsw":
        built += f"-m{HNSW_NEIGHBOURS}-efc{HNSW_EF_CONSTRUCTION}"
    return embeddings_file.with_name(f"{embeddings_file.stem}.{built}.faiss")


class GalleryIndex:
    """A faiss index over a gallery's embeddings, searched with exact re-scoring."""

    def __init__(self, index, embeddings: np.ndarray, kind: str) -> None:
        self.index = index
        self.embeddings = embeddings
        self.kind = kind

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-K ``(scores, rows)`` of normalised ``queries`` (Q, D), best first."""
        k = min(k, len(self.embeddings))
        wanted = min(len(self.embeddings), CANDIDATES_PER_RESULT * k)
        queries = queries.float().contiguous()
        _, found = self.index.search(queries.numpy(), wanted)
        # Cells scanned may hold fewer than `wanted` entries: faiss pads with -1. Such a slot
        # repeats the query's best candidate, which the top-K below sees only once per score.
        found = np.where(found < 0, np.maximum(found[:, :1], 0), found)
        scores, rows = [], []
        for start in range(0, len(found), 1024):  # bounded gather: 1024 × 4K vectors at a time
            block = found[start : start + 1024]
            flat = np.unique(block)
            vectors = torch.from_numpy(np.asarray(self.embeddings[flat], dtype=np.float32))
            position = torch.from_numpy(np.searchsorted(flat, block))
            exact = torch.einsum("qd,qcd->qc", queries[start : start + 1024], vectors[position])
            # a padded slot is a duplicate: never let it take a second place in the top-K
            exact[:, 1:][torch.from_numpy(block[:, 1:] == block[:, :1])] = -math.inf
            best_scores, best = exact.topk(k, dim=1)
            scores.append(best_scores)
            rows.append(torch.from_numpy(block).gather(1, best))
        return torch.cat(scores), torch.cat(rows)


def build_index(embeddings: np.ndarray, kind: str, *, seed: int = 0):
    """A faiss ``kind`` index (ivf or hnsw) of normalised ``embeddings`` (G, D), read in blocks."""
    import faiss

    size, dim = embeddings.shape
    if kind == "ivf":
        cells = max(1, min(round(IVF_CELLS_PER_SQRT * math.sqrt(size)), size // 39))
        index = faiss.index_factory(dim, f"IVF{cells},{CODES[kind]}", faiss.METRIC_INNER_PRODUCT)
        train_size = min(size, IVF_TRAIN_PER_CELL * cells)
    elif kind == "hnsw":
        factory = f"HNSW{HNSW_NEIGHBOURS},{CODES[kind]}"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        train_size = min(size, 65_536)  # the quantizer learns each dimension's range only
    else:
        raise ValueError(f"no faiss index for kind {kind!r}")
    sample = np.sort(np.random.default_rng(seed).choice(size, train_size, replace=False))
    index.train(np.asarray(embeddings[sample], dtype=np.float32))
    for start in range(0, size, ADD_BLOCK):
        index.add(np.asarray(embeddings[start : start + ADD_BLOCK], dtype=np.float32))
    return index


def hnsw_ef_search(size: int) -> int:
    """The hnsw search beam (efSearch) for a gallery of ``size`` entries: :data:`HNSW_EF_SEARCH`
    times ⌈√(size / 10^6)⌉, so 1024 up to a million entries and 4096 at ten million."""
    return HNSW_EF_SEARCH * max(1, math.ceil(math.sqrt(size / 1_000_000)))


def configure(index, kind: str) -> None:
    """Search-time settings: how many ivf cells to scan, how wide the hnsw search beam is."""
    if kind == "ivf":
        index.nprobe = max(1, math.ceil(index.nlist * IVF_PROBE_SHARE))
    else:
        index.hnsw.efSearch = hnsw_ef_search(index.ntotal)


def open_index(embeddings: np.ndarray, kind: str, cache_file: Path | None = None) -> GalleryIndex:
    """The ``kind`` index of ``embeddings``: read from ``cache_file`` when it exists, else built
    (and, with ``cache_file``, saved there atomically for the next run; a damaged one is
    replaced)."""
    import faiss

    index = _read_index(cache_file, len(embeddings)) if cache_file is not None else None
    if index is None:
        index = build_index(embeddings, kind)
        if cache_file is not None:
            with atomic_path(cache_file) as tmp:
                faiss.write_index(index, str(tmp))
    configure(index, kind)
    return GalleryIndex(index, embeddings, kind)


def _read_index(path: Path, rows: int):
    """The faiss index saved in ``path``; None when there is none, or when it is cut short,
    foreign or indexes another number of rows."""
    import faiss

    if not path.exists():
        return None
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:  # how faiss reports a file it cannot read
        return None
    return index if index.ntotal == rows else None
