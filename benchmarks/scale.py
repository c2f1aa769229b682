"""`make bench` "Scale": gallery search with faiss indexes against exact search, at large sizes.

Resumable: every figure is kept in ``<work>/scale.json`` as soon as it is measured, and a rerun
measures only what is missing (``python -m benchmarks.scale --work DIR --sizes ...``).

Galleries are real caption embeddings combined (tests/test_gallery_index.py does the same at
10^5): 200 captions of the bundled real places are embedded by swclip-lite, and every entry is the
normalised mix w·a + (1 - w)·b of two of them; queries are 100 further real captions. Entries are
stored as a float16 memory map on disk (10^7 × 256 float32 would be 10 GB), written in blocks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from swclip_core import gallery_index
from swclip_core.retrieval import streamed_top_k

from .speed import PeakRss

K = 5


def caption_embeddings(work: Path) -> torch.Tensor:
    """300 real place captions embedded by swclip-lite (cached in ``work``)."""
    path = work / "scale-captions.pt"
    if path.exists():
        return torch.load(path)
    from swclip_core.captions import captions_for
    from swclip_core.models import create_backbone
    from swclip_core.retrieval import embed_captions
    from tests.test_gallery_index import real_places

    places = real_places()
    rng = np.random.default_rng(0)
    picked = places.iloc[rng.choice(len(places), 300, replace=False)].reset_index(drop=True)
    cpu = torch.device("cpu")
    backbone = create_backbone("swclip-lite", device=cpu)
    embedded = embed_captions(backbone, captions_for(picked), device=cpu)
    torch.save(embedded, path)
    return embedded


def gallery_file(work: Path, size: int, base: torch.Tensor) -> np.ndarray:
    """A float16 (size, D) memory map of mixed caption embeddings, written block by block."""
    path = work / f"scale-gallery-{size}.npy"
    if not path.exists():
        rng = np.random.default_rng(size)
        tmp = path.with_suffix(".partial.npy")
        store = np.lib.format.open_memmap(tmp, "w+", np.float16, (size, base.shape[1]))
        for start in range(0, size, 1 << 20):
            n = min(1 << 20, size - start)
            pairs = torch.from_numpy(rng.integers(0, len(base), (n, 2)))
            mix = torch.from_numpy(rng.uniform(0, 1, (n, 1))).float()
            block = F.normalize(mix * base[pairs[:, 0]] + (1 - mix) * base[pairs[:, 1]], dim=1)
            store[start : start + n] = block.numpy().astype(np.float16)
        store.flush()
        del store
        tmp.replace(path)
    return np.load(path, mmap_mode="r")


def index_row(gallery: np.ndarray, queries: torch.Tensor, kind: str, exact_rows) -> dict:
    """Build time, extra memory, ms/query and recall@5 against exact search of one index kind."""
    with PeakRss() as memory:
        start = time.perf_counter()
        index = gallery_index.open_index(gallery, kind)
        build_s = time.perf_counter() - start
    start = time.perf_counter()
    _, rows = index.search(queries, K)
    search_s = time.perf_counter() - start
    recall = np.mean(
        [len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(rows, exact_rows, strict=True)]
    )
    return {
        "build_s": build_s,
        "build_extra_rss_mb": memory.extra / 2**20,
        "ms_per_query": 1000 * search_s / len(queries),
        "recall_at_5": float(recall),
    }


def measure(work: Path, sizes: list[int], kinds: list[str]) -> dict:
    results_path = work / "scale.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    embedded = caption_embeddings(work)
    base, queries = embedded[:200], embedded[200:]
    for size in sizes:
        row = results.setdefault(str(size), {"entries": size, "dim": base.shape[1]})
        gallery = gallery_file(work, size, base)
        with PeakRss() as memory:
            start = time.perf_counter()
            _, exact_rows = streamed_top_k(queries, gallery, K)
            exact_s = time.perf_counter() - start
        row["exact"] = {
            "ms_per_query": 1000 * exact_s / len(queries),
            "extra_rss_mb": memory.extra / 2**20,
        }
        for kind in kinds:
            if kind not in row:
                row[kind] = index_row(gallery, queries, kind, exact_rows)
                results_path.write_text(json.dumps(results, indent=1))
                print(size, kind, row[kind], flush=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(size, "exact", row["exact"], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (resumable)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--kinds", nargs="+", default=["ivf", "hnsw"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    measure(args.work, args.sizes, args.kinds)


if __name__ == "__main__":
    main()
