"""Speed, each figure beside its limit or its peer, measured side by side in one run."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from swclip_core.api import train
from swclip_core.config import TrainConfig
from swclip_core.device import resolve_device
from swclip_core.features import decode_workers, extract_image_features
from swclip_core.models import create_backbone
from swclip_core.retrieval import top_k

PAGE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.extra = self.peak - self.base


def median_times(*fns, repeats: int = 5) -> list[float]:
    """Median seconds per call of each function, called in turns (the order rotating every
    round) so that every one of them sees the same machine state rather than the first one paying
    for what ran before it."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats):
        for i in range(len(fns)):
            turn = (round_ + i) % len(fns)
            start = time.perf_counter()
            fns[turn]()
            times[turn].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def median_time(fn, repeats: int = 5) -> float:
    return median_times(fn, repeats=repeats)[0]


def feature_extraction(paths: list[str], batch_size: int = 32) -> dict:
    """Pipeline rate (decode + trunk, default workers) against the trunk's bare forward rate."""
    device = resolve_device("auto")
    backbone = create_backbone("swclip-lite", device=device)
    backbone.eval()
    extract_image_features(
        backbone, paths[:batch_size], device=device, use_cache=False, batch_size=batch_size
    )
    start = time.perf_counter()
    extract_image_features(backbone, paths, device=device, use_cache=False, batch_size=batch_size)
    pipeline = len(paths) / (time.perf_counter() - start)
    batch = torch.randn(batch_size, 3, 224, 224, device=device)
    with torch.no_grad():
        bare = batch_size / median_time(lambda: backbone.image_features(batch))
    return {
        "images": len(paths),
        "pipeline_images_per_s": pipeline,
        "bare_forward_images_per_s": bare,
        "ratio": pipeline / bare,
        "decode_workers": decode_workers(device),
    }


def training_throughput(samples, work: Path, objectives: tuple[str, ...], epochs: int = 3) -> dict:
    """Samples/s of the real training loop per objective (median of epochs after the first)."""
    rates = {}
    for objective in objectives:
        run = work / f"speed-{objective}"
        config = TrainConfig(objective=objective, epochs=epochs)
        if not (run / "metrics.jsonl").exists():
            train(samples, config, run, cache_dir=work / "cache")
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rates[objective] = statistics.median(x["samples_per_s"] for x in lines[1:] or lines)
    return rates


def retrieval_row(q: torch.Tensor, gallery: torch.Tensor, k: int, faiss, repeats: int = 7) -> dict:
    """One gallery size: our search, the bare one-shot search, faiss; time and memory."""
    queries, dim = q.shape

    def ours():
        return top_k(q, gallery, k)

    def bare():
        return torch.topk(q @ gallery.T, k, dim=1)

    ours_s, matmul_s = median_times(ours, bare, repeats=repeats)
    seconds = {"ours": ours_s, "matmul": matmul_s}
    if faiss is not None:
        # Timed on its own: after a search faiss's OpenMP threads keep spinning for a while and,
        # on 2 cores, slowed whichever search ran next by 20-40 %.
        index = faiss.IndexFlatIP(dim)
        index.add(gallery.numpy())
        qn = q.numpy()
        seconds["faiss"] = median_time(lambda: index.search(qn, k), repeats)
    with PeakRss() as ours_mem:
        ours()
    with PeakRss() as bare_mem:
        bare()
    row = {
        "gallery": len(gallery),
        "queries": queries,
        "dim": dim,
        **{f"{name}_ms_per_query": 1000 * s / queries for name, s in seconds.items()},
        "ours_extra_rss_mb": ours_mem.extra / 2**20,
        "matmul_extra_rss_mb": bare_mem.extra / 2**20,
        "gallery_mb": gallery.numel() * 4 / 2**20,
    }
    row["ours_vs_best_bare"] = row["ours_ms_per_query"] / min(
        row["matmul_ms_per_query"], row.get("faiss_ms_per_query", float("inf"))
    )
    return row


def retrieval(
    sizes=(10**3, 10**4, 10**5, 10**6),
    dim: int = 256,
    queries: int = 64,
    k: int = 5,
    batch: int | None = 1024,
) -> list[dict]:
    """swclip's blocked top-K against a bare one-shot matmul + topk and faiss IndexFlatIP, then
    (``batch``) a whole layer's worth of queries against the largest gallery, where the memory
    bound shows: time and peak memory of ours and the bare matmul, faiss left out for its time."""
    try:
        import faiss
    except ImportError:  # faiss is a dev requirement; the table shows NaN when it is absent
        faiss = None
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(queries, dim, generator=gen), dim=1)
    rows = []
    for size in sizes:
        gallery = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
        rows.append(retrieval_row(q, gallery, k, faiss))
    if batch and sizes:
        many = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
        rows.append(retrieval_row(many, gallery, k, None, repeats=2))
    return rows


def geoclip_localization(image_path: str, repeats: int = 3) -> dict:
    """Per-image localization on GeoCLIP's own 100K gallery: the official predict (which encodes
    the whole gallery on every call) against the same encoders with the gallery encoded once.

    GeoCLIP's CLIP ViT-L/14 weights come from a model hub, which this machine cannot reach; the
    official class is therefore built with its exact architecture and random CLIP weights
    (``clip_pretrained=False``), which costs the same time. Its location encoder, image MLP and
    gallery are the official ones shipped in the geoclip package.
    """
    from geoclip import GeoCLIP

    torch.manual_seed(0)
    official = GeoCLIP(from_pretrained=True, clip_pretrained=False).eval()
    with torch.no_grad():
        official_s = median_time(lambda: official.predict(image_path, top_k=5), repeats)
        start = time.perf_counter()
        gallery = F.normalize(official.location_encoder(official.gps_gallery), dim=1)
        encode_once_s = time.perf_counter() - start

        def cached_predict():
            from PIL import Image

            with Image.open(image_path) as image:
                pixels = official.image_encoder.preprocess_image(image.convert("RGB"))
            query = F.normalize(official.image_encoder(pixels), dim=1)
            return top_k(query, gallery, 5)

        cached_s = median_time(cached_predict, repeats)
        lite = create_backbone("swclip-lite")
        from swclip_core.data import load_image

        lite_gallery = F.normalize(torch.randn(len(gallery), lite.embed_dim), dim=1)

        def lite_predict():
            pixels = lite.preprocess(load_image(image_path)).unsqueeze(0)
            return top_k(F.normalize(lite.encode_image(pixels), dim=1), lite_gallery, 5)

        lite_s = median_time(lite_predict, repeats)
    return {
        "gallery": len(gallery),
        "official_predict_s": official_s,
        "gallery_encoding_once_s": encode_once_s,
        "same_encoders_cached_gallery_s": cached_s,
        "speedup_same_encoders": official_s / cached_s,
        "swclip_lite_cached_gallery_s": lite_s,
        "speedup_swclip_lite": official_s / lite_s,
    }


def summarise_speed(result: dict) -> list[str]:
    """Markdown lines for results.md."""
    fe = result["feature_extraction"]
    lines = [
        "### Feature extraction (swclip-lite image trunk, batch 32)",
        "",
        f"Images decoded in {next(iter(fe.values()))['decode_workers']} worker processes (0: in "
        "the main process, the default on a CPU, where the forward pass already uses every core; "
        "see swclip_core.features.decode_workers), uint8 pixels normalised per batch.",
        "",
        "| data | images | pipeline images/s | bare forward images/s | ratio (target >= 0.90) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in fe.items():
        lines.append(
            f"| {name} | {row['images']} | {row['pipeline_images_per_s']:.1f} | "
            f"{row['bare_forward_images_per_s']:.1f} | {row['ratio']:.2f} |"
        )
    lines += [
        "",
        "### Training throughput (cached features, samples/s)",
        "",
        "| objective | samples/s |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["training"].items()]
    lines += [
        "",
        "### Gallery retrieval (dim 256, top-5; target <= 1.2x best bare)",
        "",
        "Ours and the bare matmul are timed in turns (median of 7 rounds, 2 for the last row), "
        "faiss after them (its idle OpenMP threads slowed whatever ran next). Ours scores at "
        "most `MAX_BLOCK_BYTES` (256 MiB) of similarities at a time; the bare matmul holds the "
        "whole (queries, gallery) matrix.",
        "",
        "| gallery | queries | ours ms/query | matmul ms/query | faiss ms/query | ours/best | "
        "ours extra RSS MB | matmul extra RSS MB | gallery MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["retrieval"]:
        lines.append(
            f"| {r['gallery']:,} | {r['queries']:,} | {r['ours_ms_per_query']:.3f}"
            f" | {r['matmul_ms_per_query']:.3f}"
            f" | {r.get('faiss_ms_per_query', float('nan')):.3f} | {r['ours_vs_best_bare']:.2f} |"
            f" {r['ours_extra_rss_mb']:.0f} | {r['matmul_extra_rss_mb']:.0f} |"
            f" {r['gallery_mb']:.0f} |"
        )
    g = result.get("geoclip")
    if g:
        lines += [
            "",
            f"### Per-image localization on GeoCLIP's {g['gallery']:,}-location gallery",
            "",
            "| pipeline | seconds per image | speed-up vs official (target >= 100x) |",
            "| --- | ---: | ---: |",
            f"| official geoclip `predict` (re-encodes the gallery each call) | "
            f"{g['official_predict_s']:.2f} | 1.0x |",
            f"| same encoders, gallery encoded once ({g['gallery_encoding_once_s']:.1f} s, "
            f"cached) | {g['same_encoders_cached_gallery_s']:.3f} | "
            f"{g['speedup_same_encoders']:.1f}x |",
            f"| swclip-lite image encoder, cached gallery | {g['swclip_lite_cached_gallery_s']:.3f}"
            f" | {g['speedup_swclip_lite']:.0f}x |",
            "",
            "GeoCLIP's CLIP ViT-L/14 weights live on a model hub that this machine cannot reach: "
            "the official class ran with its exact architecture and random CLIP weights "
            "(identical cost); its location encoder, image MLP and gallery are the official "
            "ones from the geoclip package.",
        ]
    return lines
